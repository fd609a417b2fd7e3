"""Whole-model parity through the engine (logits, block outputs, loss, all gradients, k AdamW
steps with dropout on and shared masks), the optimizer pieces, and invariants on both
implementations — with negative controls."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import npgpt  # noqa: E402
from npgpt.config import GPTConfig  # noqa: E402
from npgpt.optim import AdamW, clip_grad_norm  # noqa: E402
from npgpt.schedule import lr_at  # noqa: E402
from parity import to_torch  # noqa: E402
from parity.adapters import NumpyImpl, TorchImpl  # noqa: E402
from parity.engine import random_params, run_check  # noqa: E402
from parity.strategies import Case, cases  # noqa: E402
from parity.tolerances import compare, tolerance  # noqa: E402
from torchgpt import generate as t_generate  # noqa: E402


def model_report(case: Case, dtype: str, steps: int = 2):
    params = random_params(case.cfg, case.seed)
    return run_check(
        case.cfg, params, case.ids(1), case.ids(2), dtype, steps, case.seed, impl=NumpyImpl(), reference=TorchImpl()
    )


@given(case=cases(max_layers=2, dropout=True))
def test_whole_model_and_training_with_dropout_float64(case):
    report = model_report(case, "float64")
    assert report.ok, report.first_failure.row()
    n_grads = sum(r.name.startswith("grad ") for r in report.rows)
    assert n_grads == len(npgpt.param_shapes(case.cfg))  # every gradient compared


@given(case=cases(max_layers=2, dropout=True, min_emb_dim=4))
def test_whole_model_and_training_with_dropout_float32(case):
    report = model_report(case, "float32")
    assert report.ok, report.first_failure.row()
    n_grads = sum(r.name.startswith("grad ") for r in report.rows)
    assert n_grads == len(npgpt.param_shapes(case.cfg))  # every gradient compared


NEG = Case(GPTConfig(vocab_size=11, context_length=8, emb_dim=8, n_heads=2, n_layers=2, drop_rate=0.2), 2, 6, 3)


def test_negative_control_model_with_missing_sqrt_d(missing_sqrt_d):
    report = model_report(NEG, "float64")
    assert not report.ok
    assert report.first_failure.name == "trf_blocks.0.att output"  # the first diverging sub-module is named


def test_negative_control_unshared_dropout_masks(monkeypatch):
    """If torch drew its own masks, the training steps must disagree."""
    real = TorchImpl.loss_and_grads

    def own_masks(self, ids, targets, masks):
        flipped = None if masks is None else {k: ~v for k, v in masks.items()}
        return real(self, ids, targets, flipped)

    monkeypatch.setattr(TorchImpl, "loss_and_grads", own_masks)
    report = model_report(NEG, "float64")
    assert any(not r.ok and r.name.startswith("step") for r in report.rows)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 5), wd=st.sampled_from([0.0, 0.1]))
def test_adamw_steps_match_torch(dtype, seed, steps, wd):
    rng = np.random.default_rng(seed)
    shapes = {"a": (3, 4), "b": (5,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    t_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    opt = AdamW(params, lr=1e-3, weight_decay=wd)
    t_opt = torch.optim.AdamW(t_params.values(), lr=1e-3, weight_decay=wd, foreach=False)
    for _ in range(steps):
        grads = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
        for k, g in grads.items():
            t_params[k].grad = torch.tensor(g)
        opt.step(grads)
        t_opt.step()
    tol = tolerance(dtype, "state")
    for k, p in t_params.items():
        assert compare(k, params[k], p.detach().numpy(), tol).ok
        assert compare(k, opt.m[k], t_opt.state[p]["exp_avg"].numpy(), tol).ok
        assert compare(k, opt.v[k], t_opt.state[p]["exp_avg_sq"].numpy(), tol).ok


@given(seed=st.integers(0, 2**31 - 1), max_norm=st.floats(0.01, 10.0))
def test_clip_grad_norm_matches_torch(seed, max_norm):
    rng = np.random.default_rng(seed)
    grads = {k: rng.standard_normal(s) for k, s in {"a": (4, 3), "b": (7,)}.items()}
    t_params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads.values()]
    for p, g in zip(t_params, grads.values(), strict=True):
        p.grad = torch.tensor(g)
    norm = clip_grad_norm(grads, max_norm)
    t_norm = torch.nn.utils.clip_grad_norm_(t_params, max_norm)
    assert compare("norm", np.float64(norm), t_norm.numpy(), tolerance("float64", "fwd")).ok
    for g, p in zip(grads.values(), t_params, strict=True):
        assert compare("grad", g, p.grad.numpy(), tolerance("float64", "fwd")).ok


@given(warmup=st.integers(1, 20), extra=st.integers(1, 200), peak=st.floats(1e-4, 1e-2), ratio=st.floats(0.0, 0.9))
def test_lr_schedule_matches_torch_schedulers(warmup, extra, peak, ratio):
    """Appendix D's schedule equals torch's LinearLR then CosineAnnealingLR (an independent
    implementation of the same closed forms)."""
    initial, min_lr, total = peak * 0.01, peak * ratio, warmup + extra
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=initial / peak, end_factor=1.0, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr),
        ],
        milestones=[warmup],
    )
    ours = []
    theirs = []
    for step in range(total):
        ours.append(
            lr_at(step, peak_lr=peak, total_steps=total, warmup_steps=warmup, initial_lr=initial, min_lr=min_lr)
        )
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


# --- invariants, on both implementations -----------------------------------------------------


def both(case: Case, dtype=np.float64):
    params = random_params(case.cfg, case.seed, np.dtype(dtype))
    return npgpt.GPTModel(case.cfg, params=params).eval(), to_torch(case.cfg, params).eval()


def forward_both(np_model, t_model, ids):
    with torch.no_grad():
        return np_model(ids), t_model(torch.from_numpy(ids)).numpy()


@given(case=cases(max_layers=2))
def test_causality_on_both(case):
    np_model, t_model = both(case)
    ids = case.ids(1)
    base = forward_both(np_model, t_model, ids)
    t = case.T - 1
    changed = ids.copy()
    changed[:, t] = (changed[:, t] + 1) % case.cfg.vocab_size
    for before, after in zip(base, forward_both(np_model, t_model, changed), strict=True):
        np.testing.assert_array_equal(after[:, :t], before[:, :t])  # the past does not see the change ...
        if case.cfg.emb_dim > 1:  # (LayerNorm over one feature is 0: such a model's output is its shift)
            assert not np.array_equal(after[:, t], before[:, t])  # ... position t does (a constant model fails)


@given(case=cases(max_layers=2))
def test_batch_independence_on_both(case):
    np_model, t_model = both(case)
    ids = case.ids(1)
    full = forward_both(np_model, t_model, ids)
    for b in range(case.B):
        one = forward_both(np_model, t_model, ids[b : b + 1])
        for f, o in zip(full, one, strict=True):
            np.testing.assert_allclose(o[0], f[b], rtol=1e-12, atol=1e-12)


@given(case=cases(max_layers=2), n_new=st.integers(1, 12))
def test_kv_cache_and_greedy_generation_agree_on_both(case, n_new):
    np_model, t_model = both(case)
    idx = case.ids(5)[:1]
    ctx = case.cfg.context_length
    np_cached = npgpt.generate(np_model, idx, n_new, ctx, use_cache=True)
    np_plain = npgpt.generate(np_model, idx, n_new, ctx, use_cache=False)
    t_cached = t_generate(t_model, torch.from_numpy(idx), n_new, ctx, use_cache=True).numpy()
    t_plain = t_generate(t_model, torch.from_numpy(idx), n_new, ctx, use_cache=False).numpy()
    np.testing.assert_array_equal(np_cached, np_plain)
    np.testing.assert_array_equal(t_cached, t_plain)
    np.testing.assert_array_equal(np_plain, t_plain)  # same weights, same greedy tokens
