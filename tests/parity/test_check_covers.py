"""What `npgpt check` must catch beyond the layers (issue: the check never ran the code these live
in): appendix D's schedule and clipping in its steps, and the embedding's scatter-add on batches
that always repeat an id. Each case injects the bug into the NumPy side and the check must fail
at the right row."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from npgpt import generation
from npgpt.config import GPTConfig
from npgpt.layers import embedding
from parity import adapters
from parity.adapters import NumpyImpl, TorchImpl
from parity.engine import draw_ids, random_params, run_check

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=8, n_heads=2, n_layers=2, drop_rate=0.1, qkv_bias=True)


def report(steps: int = 5):
    rng = np.random.default_rng(0)
    ids, targets = draw_ids(rng, CFG.vocab_size, (2, 8)), draw_ids(rng, CFG.vocab_size, (2, 8))
    return run_check(
        CFG, random_params(CFG, 0), ids, targets, "float64", steps, impl=TorchImpl(), reference=NumpyImpl()
    )


def test_the_steps_run_appendix_d_and_report_lr_and_grad_norm_per_step():
    r = report()
    assert r.ok, r.first_failure
    names = [row.name for row in r.rows]
    assert {f"step {s} {what}" for s in range(1, 6) for what in ("lr", "grad norm")} <= set(names)
    assert any("the clip acted at 5 of 5 steps" in note for note in r.notes), r.notes


def test_clipping_that_never_clips_fails(monkeypatch):
    monkeypatch.setattr(adapters, "clip_coef", lambda norm, max_norm: 1.0)  # the norm measured, never applied
    r = report()
    # AdamW's first step does not depend on the gradient's scale, so the first sign is a later loss
    failed = r.first_failure
    assert not r.ok and failed.name.startswith("step ") and failed.name.endswith(" loss"), failed


def test_a_cosine_with_the_wrong_period_fails_at_the_first_decayed_lr(monkeypatch):
    real = adapters.lr_at
    monkeypatch.setattr(adapters, "lr_at", lambda step, **k: real(step, **{**k, "total_steps": 2 * k["total_steps"]}))
    r = report()
    # steps 1-2 warm up, step 3 starts the cosine at its peak whatever the period: step 4 differs
    assert not r.ok and r.first_failure.name == "step 4 lr", r.first_failure


def test_a_scatter_add_that_keeps_one_of_the_repeated_rows_fails(monkeypatch):
    real = embedding.backward

    def overwrite(dout, cache):
        dtok, dpos = real(dout, cache)
        dtok[...] = 0.0
        dtok[cache.ids] = dout  # the bug: fancy-index assignment keeps one row per repeated id
        return dtok, dpos

    monkeypatch.setattr(embedding, "backward", overwrite)
    r = report(steps=0)
    assert not r.ok and r.first_failure.name == "grad tok_emb.weight", r.first_failure


def first_failure_with(monkeypatch, target, name, replacement):
    monkeypatch.setattr(target, name, replacement)
    r = report(steps=0)
    assert not r.ok
    return r.first_failure.name


def test_a_kv_cache_that_feeds_position_0_to_every_new_token_fails(monkeypatch):
    real = embedding.forward
    name = first_failure_with(
        monkeypatch, embedding, "forward", lambda ids, tok, pos, pos_offset=0: real(ids, tok, pos, 0)
    )
    assert name == "generate step 2 logits (KV cache)"  # step 1 fills the cache from position 0


def test_top_p_that_drops_the_token_crossing_p_fails(monkeypatch):
    from npgpt.layers.softmax import softmax

    real = adapters.generation.filter_logits

    def drops_crossing(logits, temperature, top_k, top_p):
        out = real(logits, temperature, top_k, None)
        if top_p is None:
            return out
        probs = softmax(out)
        order = np.argsort(-probs, axis=-1, kind="stable")
        through = np.cumsum(np.take_along_axis(probs, order, axis=-1), axis=-1)  # mass including each token
        drop = np.empty_like(through, dtype=bool)
        np.put_along_axis(drop, order, through >= top_p, axis=-1)  # the bug: the crossing token goes too
        return np.where(drop, -np.inf, out)

    assert first_failure_with(monkeypatch, generation, "filter_logits", drops_crossing).endswith(
        "top-p 0.9: kept tokens"
    )


def test_the_data_rows_compare_torchgpts_own_loader_with_the_reference_windows():
    r = report(steps=0)
    data = [row for row in r.rows if row.name.startswith("data ")]
    assert len(data) == 6 and all(row.ok for row in data)
    assert data[0].shape == (351, 4)  # every window of the embedded text, max_length 4, stride 1


def test_targets_not_shifted_by_one_fail_at_the_targets_row(monkeypatch):
    import torchgpt.data

    class Unshifted(torchgpt.data.GPTDatasetV1):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.target_ids = self.input_ids.clone()  # the bug

    assert first_failure_with(monkeypatch, torchgpt.data, "GPTDatasetV1", Unshifted) == (
        "data T=4 stride 1 batch 8: targets"
    )


def test_a_loader_that_ignores_drop_last_fails(monkeypatch):
    import torchgpt.data

    real = torchgpt.data.create_dataloader_v1
    ignores = lambda *a, drop_last=True, **k: real(*a, drop_last=False, **k)  # noqa: E731
    assert first_failure_with(monkeypatch, torchgpt.data, "create_dataloader_v1", ignores) == (
        "data T=16 stride 16 batch 4 drop_last: inputs"
    )


def test_a_generated_token_one_off_fails_in_float32(monkeypatch):
    # token ids are compared exactly: the float32 model tolerance (1e-4 of max|ref|) would let
    # an id of 96 pass as 95
    real = TorchImpl.generate_greedy

    def off_by_one(self, prompt, n, use_cache=True):
        ids, seen = real(self, prompt, n, use_cache)
        ids[0, -1] = (ids[0, -1] + 1) % CFG.vocab_size
        return ids, seen

    monkeypatch.setattr(TorchImpl, "generate_greedy", off_by_one)
    rng = np.random.default_rng(0)
    ids, targets = draw_ids(rng, CFG.vocab_size, (2, 8)), draw_ids(rng, CFG.vocab_size, (2, 8))
    r = run_check(CFG, random_params(CFG, 0), ids, targets, "float32", 0, impl=TorchImpl(), reference=NumpyImpl())
    assert [row.name for row in r.rows if not row.ok] == ["generate tokens (KV cache)"]
