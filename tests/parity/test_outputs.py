"""A check declares the rows it must report (parity/outputs.py); a report lacking any of them fails."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from npgpt import GPTConfig
from parity import engine
from parity.adapters import NumpyImpl, TorchImpl
from parity.engine import random_params, run_check
from parity.outputs import SUBMODULES, declared

CFG = GPTConfig.preset("tiny", vocab_size=97, qkv_bias=True, drop_rate=0.1, context_length=32, n_layers=2)
STEPS = 2


def _run(impl=None, ref=None, dtype="float64"):
    rng = np.random.default_rng(0)
    ids, targets = rng.integers(0, CFG.vocab_size, (2, 16)), rng.integers(0, CFG.vocab_size, (2, 16))
    params = random_params(CFG, 0)
    report = run_check(CFG, params, ids, targets, dtype, STEPS, impl=impl or TorchImpl(), reference=ref or NumpyImpl())
    return params, report


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_declared_rows_are_exactly_what_a_run_compares_besides_the_optional_sub_layer_outputs(dtype):
    params, report = _run(dtype=dtype)
    assert report.ok, report.first_failure
    taps = {f"trf_blocks.{i}.{s} output" for i in range(CFG.n_layers) for s in SUBMODULES}
    compared = [r.name for r in report.rows if r.name not in taps]
    skipped = [k for k in params if k.endswith("att.W_key.bias")] if dtype == "float32" else []
    names = list(declared(CFG, params, STEPS, skipped_state=skipped))
    assert len(names) == len(set(names)) and sorted(compared) == sorted(names)


def test_an_engine_that_drops_adamw_v_fails_instead_of_passing_with_fewer_rows(monkeypatch):
    monkeypatch.setattr(engine, "STATE", ("param", "adam m"))  # neither recorded nor compared
    params, report = _run()
    assert not report.ok
    assert report.first_failure.name.startswith(f"{len(params)} declared outputs not compared (first: adam v ")


def test_a_reference_that_drops_one_gradient_fails(monkeypatch):
    class Forgetful(NumpyImpl):
        def loss_and_grads(self, ids, targets, masks):
            loss, grads = super().loss_and_grads(ids, targets, masks)
            return loss, {k: v for k, v in grads.items() if k != "final_norm.scale"}

    _, report = _run(ref=Forgetful())
    assert (
        not report.ok and report.first_failure.name == "1 declared outputs not compared (first: grad final_norm.scale)"
    )


def test_the_generation_rows_slide_the_window_so_a_cache_that_never_resets_fails(monkeypatch):
    from npgpt import generation
    from parity.engine import GENERATED, prompt_of, sliding_window

    prompt = prompt_of(np.zeros((2, 16), dtype=np.int64))
    assert sliding_window(NumpyImpl(), prompt) == sliding_window(TorchImpl(), prompt) == prompt.shape[1] + 1
    assert prompt.shape[1] + GENERATED > prompt.shape[1] + 1  # the window is left behind twice

    def never_reset(model, idx, context_size, kv):  # appends past the window instead of refilling
        if kv is None or kv.length == 0:
            return model(idx[:, -context_size:], kv_cache=kv)[:, -1, :]
        return model(idx[:, -1:], kv_cache=kv)[:, -1, :]

    monkeypatch.setattr(generation, "_next_token_logits", never_reset)
    _, report = _run(impl=TorchImpl(), ref=NumpyImpl())
    assert not report.ok and report.first_failure.name == "generate step 3 logits (KV cache)"


def test_an_adapter_whose_generate_takes_no_context_size_is_checked_unslid_and_said_so():
    class OldAdapter(NumpyImpl):
        name = "an adapter written before context_size"

        def generate_greedy(self, prompt, n, use_cache=True):
            return super().generate_greedy(prompt, n, use_cache)

    _, report = _run(impl=OldAdapter())
    assert report.ok, report.first_failure
    assert any("window did not slide" in note for note in report.notes)


def test_each_row_is_held_to_the_tolerance_of_its_kind():
    from parity.outputs import kind_of
    from parity.tolerances import TABLE, tolerance

    examples = {
        "data T=4 stride 1 batch 8: inputs": "exact", "generate tokens (KV cache)": "exact",
        "filter temperature 1.0, top-k None, top-p 0.9: kept tokens": "exact", "step 3 lr": "step_loss",
        "step 1 grad norm": "step_loss", "adam v trf_blocks.0.att.W_key.weight @ step 2": "state", "loss": "loss",
        "grad tok_emb.weight": "model", "trf_blocks.1.att output": "model", "layer_norm dx": "bwd",
    }  # fmt: skip
    assert {name: kind_of(name) for name in examples} == examples
    params, report = _run(dtype="float32")
    for name in declared(CFG, params, STEPS):
        assert ("float32", kind_of(name)) in TABLE and ("float64", kind_of(name)) in TABLE
    assert all(row.tol == tolerance("float32", kind_of(row.name)) for row in report.rows)


def test_the_walk_yields_typed_outputs_whose_kind_and_component_come_from_the_name():
    from parity.engine import Progress, Run, outputs_of
    from parity.outputs import Output

    rng = np.random.default_rng(0)
    ids, targets = rng.integers(0, CFG.vocab_size, (2, 8)), rng.integers(0, CFG.vocab_size, (2, 8))
    run = Run(CFG, random_params(CFG, 0), ids, targets, np.dtype(np.float64), 1, 0, 4e-4, 0.1, None, None)
    walk = list(outputs_of(NumpyImpl(), run, Progress(lambda msg: None)))
    assert all(isinstance(out, Output) for out in walk)
    by_name = {out.name: out for out in walk}
    assert by_name["generate tokens (KV cache)"].kind == "exact"
    assert by_name["generate tokens (KV cache)"].tensor.dtype == np.int64  # integers stay integers
    assert by_name["grad trf_blocks.0.att.W_query.weight"].component == "attention"
    assert by_name["adam v final_norm.scale @ step 1"].kind == "state"
