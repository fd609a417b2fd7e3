"""GELU's in-place forward against the formula as written, and against torch's tanh GELU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npgpt.layers import gelu

VALUES = st.floats(-12.0, 12.0, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=VALUES))
def test_the_in_place_forward_is_the_formula(x):
    before = x.copy()
    out, cache = gelu.forward(x)
    np.testing.assert_allclose(out, gelu.formula(x), rtol=1e-15, atol=1e-15)
    assert cache.x is x  # the input is cached ...
    np.testing.assert_array_equal(x, before)  # ... and not modified by the in-place work


def test_the_formula_is_torchs_tanh_gelu_and_a_wrong_coefficient_is_not():
    torch = pytest.importorskip("torch")
    x = np.linspace(-6, 6, 1001)
    expected = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    np.testing.assert_allclose(gelu.formula(x), expected, rtol=1e-12, atol=1e-12)
    wrong = 0.5 * x * (1.0 + np.tanh(gelu.SQRT_2_OVER_PI * (x + 0.0447 * x**3)))  # the catalog's GELU mistake
    assert not np.allclose(wrong, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunks_on_every_core_give_the_bits_of_one_whole_pass(dtype, monkeypatch):
    """forward and backward run a cache-sized chunk at a time on every core (npgpt.threads); an
    odd size puts chunk and thread boundaries mid-row. The whole-array call is the reference."""
    from npgpt import threads

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 7, 12_345)) * 3).astype(dtype)  # 259,245 elements: several chunks
    dout = rng.standard_normal(x.shape).astype(dtype)
    monkeypatch.setattr(threads, "MIN_SIZE", 1 << 10)
    monkeypatch.setattr(threads, "CHUNK", 1 << 12)
    monkeypatch.setattr(threads, "workers", lambda: 3)
    out, cache = gelu.forward(x)
    dx = gelu.backward(dout, cache)
    monkeypatch.setattr(threads, "MIN_SIZE", x.size + 1)  # one call on the whole arrays
    whole_out, whole_cache = gelu.forward(x)
    np.testing.assert_array_equal(out, whole_out)
    np.testing.assert_array_equal(dx, gelu.backward(dout, whole_cache))
    tol = 1e-5 if dtype == np.float32 else 1e-14  # 1 + tanh(u) cancels where x << 0
    np.testing.assert_allclose(out, gelu.formula(x), rtol=tol, atol=tol)
    # a chunk that took another chunk's dout would show: the gradient depends on dout per element
    assert not np.array_equal(dx, gelu.backward(dout[..., ::-1].copy(), whole_cache))
