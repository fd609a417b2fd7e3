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
