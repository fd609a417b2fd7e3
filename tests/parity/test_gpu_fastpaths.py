"""GPU (marker ``gpu``): each torch fast path is at most MULTIPLE times further from the float64
NumPy reference than the book's eager path at the same precision (parity/precision.py), and a
planted attention bug fails that criterion. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npgpt import GPTConfig  # noqa: E402
from parity.engine import random_params  # noqa: E402
from parity.precision import JUDGED, MULTIPLE, VARIANTS, Variant, measure  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CFG = GPTConfig(vocab_size=1000, context_length=128, emb_dim=256, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)
FAST = [v for v in VARIANTS if v != v.baseline]


def _inputs(seed: int):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CFG.vocab_size, (4, 128))
    ids[:, 1::7] = ids[:, :1]  # repeated token ids
    return random_params(CFG, seed), ids, rng.integers(0, CFG.vocab_size, (4, 128))


@pytest.fixture(scope="module")
def rows():
    return {r["variant"]: r for r in measure(CFG, *_inputs(0), "cuda", FAST)}


@pytest.mark.parametrize("variant", FAST, ids=lambda v: v.name)
def test_fast_path_is_as_accurate_as_the_book_path_at_its_precision(rows, variant):
    row = rows[variant.name]
    worse = {
        m: f"{row['errors'][m]:.2e} > {row['allowed'][m]:.2e}"
        for m in JUDGED
        if not row["errors"][m] <= row["allowed"][m]
    }
    assert row["ok"] and not worse, f"{variant.name}: more than {MULTIPLE}x the book path's error: {worse}"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_planted_attention_bug_fails_the_criterion(monkeypatch, precision):
    """Negative control: SDPA with its scale 3% too large (fp32) or with the causal mask off (bf16,
    whose own error would hide a small one) must not pass."""
    real = torch.nn.functional.scaled_dot_product_attention

    def buggy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        if precision == "fp32":
            return real(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=1.03 / q.shape[-1] ** 0.5
            )
        return real(q, k, v, dropout_p=dropout_p)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", buggy)
    (row,) = measure(CFG, *_inputs(1), "cuda", [Variant(precision, "sdpa")])
    assert not row["ok"], f"a planted bug passed: {row['errors']} within {row['allowed']}"
