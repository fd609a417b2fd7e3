"""npgpt.threads: a pass split across threads gives bit-identical results to one pass."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import threads
from npgpt.optim import AdamW


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(threads, "MIN_SIZE", 1)  # thread even small arrays


def adamw_after_steps(n_threads: str, monkeypatch) -> dict[str, np.ndarray]:
    monkeypatch.setenv("NPGPT_THREADS", n_threads)
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((37, 53)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    for step in range(3):
        grads = {k: np.random.default_rng(step).standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
        opt.step(grads)
    return {**params, **{f"m {k}": v for k, v in opt.m.items()}, **{f"v {k}": v for k, v in opt.v.items()}}


def test_adamw_threaded_is_bit_identical(small_threshold, monkeypatch):
    one, three = adamw_after_steps("1", monkeypatch), adamw_after_steps("3", monkeypatch)
    assert all(np.array_equal(one[k], three[k]) for k in one)


def test_the_ranges_cover_every_element_once(small_threshold, monkeypatch):
    monkeypatch.setenv("NPGPT_THREADS", "4")
    a = np.zeros(10, dtype=np.int64)

    def bump(x, scratch):
        assert scratch.shape == x.shape and scratch.dtype == x.dtype  # the chunk's own temporary
        np.add(x, 1, out=scratch)
        x[...] = scratch

    threads.in_ranges(bump, a)
    assert np.array_equal(a, np.ones(10))
    strided = np.zeros((4, 6))[:, ::2]  # not contiguous: one call on the whole array, still in place
    threads.in_ranges(bump, strided)
    assert np.array_equal(strided, np.ones((4, 3)))


def test_a_worker_exception_is_raised(small_threshold, monkeypatch):
    monkeypatch.setenv("NPGPT_THREADS", "2")

    def fails(x, scratch):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        threads.in_ranges(fails, np.zeros(8))


def test_over_parts_covers_every_index_once_and_restores_blas(monkeypatch):
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("NPGPT_THREADS", "3")
    before = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    seen = np.zeros(11, dtype=np.int64)
    inside = []

    def fill(lo, hi):
        seen[lo:hi] += 1
        inside.extend(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")

    threads.over_parts(fill, 11)
    assert np.array_equal(seen, np.ones(11)) and set(inside) <= {1}  # BLAS on one thread in the parts
    assert [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"] == before

    def fails(lo, hi):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        threads.over_parts(fails, 4)
    assert [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"] == before


def test_blocked_attention_split_over_heads_is_bit_identical(monkeypatch):
    """The heads side by side on threads (single-threaded BLAS) or all in one loop: the same bits."""
    from npgpt.layers import blocked_attention

    rng = np.random.default_rng(0)
    C, H, T = 16, 4, 40
    params = {f"{n}.weight": rng.standard_normal((C, C)) for n in ("W_query", "W_key", "W_value", "out_proj")}
    x, dout = rng.standard_normal((2, T, C)), rng.standard_normal((2, T, C))
    mask = rng.random((2, H, T, T)) >= 0.2
    runs = []
    for n in ("1", "2"):
        monkeypatch.setenv("NPGPT_THREADS", n)
        out, cache = blocked_attention.forward(x, params, "", H, 0.2, train=True, mask=mask, block=8)
        dx, grads = blocked_attention.backward(dout, cache)
        runs.append((out, dx, grads))
    (out1, dx1, g1), (out2, dx2, g2) = runs
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(dx1, dx2)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
