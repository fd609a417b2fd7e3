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
