"""AdamW, gradient clipping and appendix D's schedule, against independent references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from npgpt import AdamW, NpgptError, clip_grad_norm, lr_at


def reference_adamw(p, grads_per_step, lr, betas, eps, wd):
    """torch.optim.AdamW's documented algorithm, written out element by element in float64."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads_per_step, start=1):
        p = p - lr * wd * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat = m / (1 - betas[0] ** t)
        v_hat = v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_matches_the_documented_algorithm(dtype):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((5, 3))
    grads = [rng.standard_normal((5, 3)) for _ in range(6)]
    params = {"w": p0.astype(dtype)}
    opt = AdamW(params, lr=4e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for g in grads:
        opt.step({"w": g.astype(dtype)})
    ref_p, ref_m, ref_v = reference_adamw(p0, grads, 4e-4, (0.9, 0.95), 1e-8, 0.1)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert params["w"].dtype == dtype
    np.testing.assert_allclose(params["w"], ref_p, rtol=tol, atol=tol)
    np.testing.assert_allclose(opt.m["w"], ref_m, rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(opt.v["w"], ref_v, rtol=tol * 10, atol=tol)
    assert opt.t == 6


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((4, 6))
    grads = [rng.standard_normal((4, 6)) for _ in range(5)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.AdamW([tp], lr=1e-3, weight_decay=0.1)
    params = {"w": p0.copy()}
    opt = AdamW(params, lr=1e-3, weight_decay=0.1)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
        opt.step({"w": g})
    np.testing.assert_allclose(params["w"], tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adamw_rejects_bad_hyperparameters():
    with pytest.raises(NpgptError, match="invalid AdamW"):
        AdamW({"w": np.zeros(2)}, lr=-1.0)


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    assert total == pytest.approx(5.0 / (5.0 + 1e-6))  # torch's max_norm / (norm + 1e-6)
    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])  # under the limit: untouched


def test_schedule_appendix_d():
    kw = {"peak_lr": 5e-4, "total_steps": 135, "warmup_steps": 10, "initial_lr": 1e-5, "min_lr": 1e-5}
    assert lr_at(0, **kw) == pytest.approx(1e-5)
    assert lr_at(5, **kw) == pytest.approx(1e-5 + 5 * (5e-4 - 1e-5) / 10)
    assert lr_at(10, **kw) == pytest.approx(5e-4)  # warmup ends at the peak
    assert lr_at(135, **kw) == pytest.approx(1e-5)  # cosine reaches min_lr at the last step
    mid = lr_at(10 + 125 // 2, **kw)
    assert 1e-5 < mid < 5e-4
    lrs = [lr_at(s, **kw) for s in range(135)]
    assert all(a <= b for a, b in itertools.pairwise(lrs[:11]))  # warmup rises
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # cosine falls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", ["1", "2"])
def test_folded_clipping_is_clip_then_step(dtype, n_threads, monkeypatch):
    """``step(grads, grad_scale=clip_coef(norm, max_norm))`` against ``clip_grad_norm`` then ``step``,
    across chunk and thread boundaries (small chunks, a threaded range split): equal to rounding
    (the scalars multiply first), bit for bit where nothing is clipped, and the gradients handed
    in are left unscaled."""
    from npgpt import clip_coef, grad_norm, optim, threads

    monkeypatch.setenv("NPGPT_THREADS", n_threads)
    monkeypatch.setattr(threads, "MIN_SIZE", 1)
    monkeypatch.setattr(optim, "CHUNK_BYTES", 16 * np.dtype(dtype).itemsize)  # a (7, 11) weight spans several chunks
    rng = np.random.default_rng(3)
    start = {"w": rng.standard_normal((7, 11)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}
    clipped, folded = {k: v.copy() for k, v in start.items()}, {k: v.copy() for k, v in start.items()}
    a, b = AdamW(clipped, lr=1e-2, weight_decay=0.1), AdamW(folded, lr=1e-2, weight_decay=0.1)
    ulps = 8 * np.finfo(dtype).eps
    for step, max_norm in enumerate([0.5, 0.1, 100.0]):  # clips, clips, does not
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in start.items()}
        kept = {k: g.copy() for k, g in grads.items()}
        norm = clip_grad_norm(grads, max_norm)
        a.step(grads)
        assert grad_norm(kept) == norm
        b.step(kept, grad_scale=clip_coef(norm, max_norm))
        if max_norm < norm:
            assert not np.array_equal(kept["w"], grads["w"])  # clip_grad_norm scaled its copy; step left ours
        for k in start:
            for ours, theirs in ((folded[k], clipped[k]), (b.m[k], a.m[k]), (b.v[k], a.v[k])):
                atol = ulps * np.abs(theirs).max()  # a parameter near 0 after a step: rounding of the larger terms
                np.testing.assert_allclose(ours, theirs, rtol=ulps, atol=atol, err_msg=f"{k} after step {step}")
    plain, scaled_by_one = {"w": start["w"].copy()}, {"w": start["w"].copy()}
    AdamW(plain, lr=1e-2).step({"w": start["b"][:1] * start["w"]})
    AdamW(scaled_by_one, lr=1e-2).step({"w": start["b"][:1] * start["w"]}, grad_scale=1.0)
    np.testing.assert_array_equal(scaled_by_one["w"], plain["w"])


def test_folded_clipping_scale_is_used():
    """The negative control: a grad_scale that were ignored would leave the moments unclipped (the
    first step's parameter update, m_hat / sqrt(v_hat), cannot show it: it is scale-free)."""
    from npgpt import clip_coef

    assert clip_coef(100.0, 1.0) == pytest.approx(0.01)
    assert clip_coef(0.5, 1.0) == 1.0 and clip_coef(math.inf, 1.0) == 0.0
    g = {"w": np.array([3.0, -4.0, 0.5, 1.0])}
    opt = AdamW({"w": np.ones(4)}, lr=0.1, weight_decay=0.0)
    opt.step(g, grad_scale=0.01)
    np.testing.assert_allclose(opt.m["w"], 0.1 * 0.01 * g["w"])  # (1 - beta1) * the scaled gradient
    np.testing.assert_allclose(opt.v["w"], 0.001 * (0.01 * g["w"]) ** 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_update_is_the_same_bits_whatever_the_chunk_and_the_chunk_is_by_bytes(dtype, monkeypatch):
    """AdamW works in CHUNK_BYTES of each array a call (2^16 float64 or 2^17 float32 elements):
    elementwise, so any chunk and any split over threads gives the bits of one pass."""
    from npgpt import optim, threads

    monkeypatch.setattr(threads, "MIN_SIZE", 1)
    monkeypatch.setenv("NPGPT_THREADS", "2")
    seen = []
    real = threads._in_chunks
    monkeypatch.setattr(threads, "_in_chunks", lambda *a, **k: seen.append(k["chunk"]) or real(*a, **k))
    rng = np.random.default_rng(5)
    start = {"w": rng.standard_normal((9, 13)).astype(dtype)}
    grads = {"w": rng.standard_normal((9, 13)).astype(dtype)}
    results, default = [], optim.CHUNK_BYTES
    for chunk_bytes in (default, 8 * np.dtype(dtype).itemsize):
        monkeypatch.setattr(optim, "CHUNK_BYTES", chunk_bytes)
        params = {k: v.copy() for k, v in start.items()}
        opt = AdamW(params, lr=1e-2, weight_decay=0.1)
        for _ in range(3):
            opt.step(grads)
        results.append(params["w"])
    np.testing.assert_array_equal(results[0], results[1])
    assert seen[0] == default // np.dtype(dtype).itemsize and seen[-1] == 8  # elements a call, from bytes
