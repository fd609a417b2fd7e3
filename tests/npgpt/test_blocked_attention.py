"""The block-skipping attention against the plain layer: the same outputs and gradients in float64
and float32 (the tolerance table's component tiers), on Hypothesis shapes that include T = 1, T
not a multiple of the block and dropout with shared masks; a negative control; the model option."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npgpt import GPTModel
from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from npgpt.layers import blocked_attention, dropout, multi_head_attention
from npgpt.layers.dropout import draw_mask
from parity.tolerances import compare, tolerance


@st.composite
def shapes(draw):
    H, D = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    return {
        "B": draw(st.integers(1, 3)), "T": draw(st.integers(1, 20)), "H": H, "D": D,
        "block": draw(st.integers(1, 8)), "drop": draw(st.sampled_from([0.0, 0.1, 0.5])),
        "bias": draw(st.booleans()), "seed": draw(st.integers(0, 2**31 - 1)),
    }  # fmt: skip


def both(s: dict, dtype) -> tuple[tuple, tuple]:
    rng = np.random.default_rng(s["seed"])
    B, T, H, C = s["B"], s["T"], s["H"], s["H"] * s["D"]
    params = {}
    for name in ("W_query", "W_key", "W_value", "out_proj"):
        params[f"{name}.weight"] = (rng.standard_normal((C, C)) / np.sqrt(C)).astype(dtype)
        if s["bias"] or name == "out_proj":
            params[f"{name}.bias"] = (0.1 * rng.standard_normal(C)).astype(dtype)
    x, dout = (rng.standard_normal((B, T, C)).astype(dtype) for _ in range(2))
    mask = draw_mask(rng, (B, H, T, T), s["drop"]) if s["drop"] else None
    train = {"train": mask is not None, "mask": mask}
    out = []
    for layer, extra in ((multi_head_attention, {}), (blocked_attention, {"block": s["block"]})):
        y, cache = layer.forward(x, params, "", H, s["drop"], **train, **extra)
        dx, grads = layer.backward(dout, cache)
        out.append((y, dx, grads))
    return out[0], out[1]


def disagreements(s: dict, dtype) -> list[str]:
    """The tensors (output, dx, each gradient) where blocked differs from plain beyond the
    component tiers, as compare rows: a failure names them and their errors."""
    (y1, dx1, g1), (y2, dx2, g2) = both(s, dtype)
    fwd, bwd = tolerance(dtype, "fwd"), tolerance(dtype, "bwd")
    if g1.keys() != g2.keys():
        return [f"gradient keys {sorted(g2)} != {sorted(g1)}"]
    rows = [compare("out", y2, y1, fwd), compare("dx", dx2, dx1, bwd)]
    rows += [compare(f"d{k}", g2[k], g1[k], bwd) for k in g1]
    return [r.row() for r in rows if not r.ok]


@settings(max_examples=60, deadline=None)
@given(shapes(), st.sampled_from([np.float64, np.float32]))
def test_blocked_attention_equals_the_plain_layer(s, dtype):
    assert not disagreements(s, dtype)


def test_a_diagonal_block_left_unmasked_fails(monkeypatch):
    real = blocked_attention._scores

    def unmasked(q_i, k_j, i0, j0, scale, bias):  # the bug: the diagonal block sees its future
        return real(q_i, k_j, i0, j0, scale, np.zeros_like(bias))

    s = {"B": 2, "T": 9, "H": 2, "D": 3, "block": 4, "drop": 0.0, "bias": True, "seed": 0}
    assert not disagreements(s, np.float64)
    monkeypatch.setattr(blocked_attention, "_scores", unmasked)
    assert disagreements(s, np.float64)


def test_the_model_option_matches_the_plain_model_and_generates(monkeypatch):
    monkeypatch.setattr(blocked_attention, "BLOCK", 8)  # several blocks at this small T
    cfg = GPTConfig(vocab_size=50, context_length=40, emb_dim=12, n_heads=3, n_layers=2, drop_rate=0.1)
    plain = GPTModel(cfg, seed=1, dtype=np.float64)
    blocked = GPTModel(cfg, seed=1, dtype=np.float64, attention="blocked")
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 37))
    loss_a, grads_a = plain.loss_and_grads(ids, ids)
    loss_b, grads_b = blocked.loss_and_grads(ids, ids, masks=plain.last_masks)  # the same dropout masks
    assert abs(loss_a - loss_b) < 1e-12
    assert max(float(np.abs(grads_a[k] - grads_b[k]).max()) for k in grads_a) < 1e-12
    from npgpt import generate

    prompt = ids[:, :5]
    assert np.array_equal(generate(plain.eval(), prompt, 6, 40), generate(blocked.eval(), prompt, 6, 40))
    with pytest.raises(NpgptError, match="attention='flash'"):
        GPTModel(cfg, attention="flash")


def test_its_cache_holds_no_square_of_weights():
    s = {"B": 1, "T": 64, "H": 2, "D": 4, "block": 16, "drop": 0.0, "bias": False, "seed": 0}
    rng = np.random.default_rng(0)
    C = 8
    params = {f"{n}.weight": rng.standard_normal((C, C)) for n in ("W_query", "W_key", "W_value", "out_proj")}
    x = rng.standard_normal((s["B"], s["T"], C))
    _, plain = multi_head_attention.forward(x, params, "", s["H"])
    _, blocked = blocked_attention.forward(x, params, "", s["H"], block=s["block"])
    squares = [f for f in blocked if isinstance(f, np.ndarray) and f.shape[-2:] == (s["T"], s["T"])]
    assert not squares and any(isinstance(f, np.ndarray) and f.shape[-2:] == (64, 64) for f in plain)


@pytest.mark.parametrize("layer", [multi_head_attention, blocked_attention])
def test_a_wrong_shaped_dropout_mask_is_refused_not_broadcast(layer):
    rng = np.random.default_rng(0)
    C, H, T = 4, 2, 6
    params = {f"{n}.weight": rng.standard_normal((C, C)) for n in ("W_query", "W_key", "W_value", "out_proj")}
    x = rng.standard_normal((2, T, C))
    one_row = draw_mask(rng, (2, H, 1, T), 0.5)  # would broadcast over the query rows
    with pytest.raises(NpgptError, match=r"dropout mask has shape \(2, 2, 1, 6\), expected \(2, 2, 6, 6\)"):
        layer.forward(x, params, "", H, 0.5, train=True, mask=one_row)


def test_a_drawn_mask_is_kept_as_bits_and_replays_in_both_layers(monkeypatch):
    """The blocked layer holds the (B, H, T, T) mask it draws as bits until backward; its model's
    last_masks replay in the plain model and in itself, the same loss and gradients."""
    monkeypatch.setattr(blocked_attention, "BLOCK", 8)
    cfg = GPTConfig(vocab_size=50, context_length=40, emb_dim=12, n_heads=3, n_layers=2, drop_rate=0.3)
    blocked = GPTModel(cfg, seed=1, dtype=np.float64, attention="blocked")
    plain = GPTModel(cfg, seed=1, dtype=np.float64)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 37))  # 37: rows not a multiple of 8 bits
    loss_b, grads_b = blocked.loss_and_grads(ids, ids)
    packed = blocked.last_masks["trf_blocks.1.att.dropout"]
    assert isinstance(packed, dropout.PackedMask) and packed.bits.nbytes * 7 < np.asarray(packed).nbytes
    booleans = {k: np.asarray(m) for k, m in blocked.last_masks.items()}
    assert booleans["trf_blocks.1.att.dropout"].dtype == bool and 0 < booleans["trf_blocks.1.att.dropout"].mean() < 1
    for model, masks in ((plain, blocked.last_masks), (plain, booleans), (blocked, blocked.last_masks)):
        loss, grads = model.loss_and_grads(ids, ids, masks=dict(masks))
        assert abs(loss - loss_b) < 1e-12
        assert max(float(np.abs(grads[k] - grads_b[k]).max()) for k in grads) < 1e-12
    flipped = dict(booleans)
    flipped["trf_blocks.1.att.dropout"] = ~booleans["trf_blocks.1.att.dropout"]  # the negative control
    assert abs(plain.loss_and_grads(ids, ids, masks=flipped)[0] - loss_b) > 1e-6


def test_packed_rows_are_the_boolean_rows():
    mask = np.random.default_rng(2).random((2, 3, 13, 13)) < 0.6
    packed = dropout.PackedMask.of(mask)
    for i0, i1, cols in ((0, 13, 13), (4, 9, 9), (8, 13, 11), (12, 13, 1)):
        np.testing.assert_array_equal(dropout.rows(packed, i0, i1, cols), mask[..., i0:i1, :cols])
        np.testing.assert_array_equal(dropout.rows(mask, i0, i1, cols), mask[..., i0:i1, :cols])
