"""parity.tolerances.compare, which goes through large tensors in chunks, against the rule in its
module docstring written out on whole arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity import tolerances
from parity.tolerances import Tol, compare

RULES = [Tol(1e-9, 1e-9), Tol(1e-5, 0.0), Tol(0.0, 0.0), Tol(1e-4, 1e-5, norm=True)]


def by_the_rule(a: np.ndarray, b: np.ndarray, tol: Tol) -> bool:
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if not (finite_a.all() and finite_b.all()):
        same = np.array_equal(finite_a, finite_b) and np.array_equal(a[~finite_a], b[~finite_b], equal_nan=True)
        return bool(same) and by_the_rule(a[finite_a], b[finite_b], tol)
    if not b.size:
        return True
    scale = max(1.0, float(np.abs(b).max()))
    if tol.norm:
        bound = tol.atol * np.sqrt(b.size) * scale + tol.rtol * np.linalg.norm(b)
        return bool(np.linalg.norm(a - b) <= bound * (1 + 1e-12))  # the chunked sums round differently
    return bool(np.all(np.abs(a - b) <= tol.rtol * np.abs(b) + tol.atol * scale))


def share_by_the_rule(a: np.ndarray, b: np.ndarray, tol: Tol) -> tuple[float, int, int | None]:
    """(share of the tolerance used, flat index of the worst element, elements outside) on whole
    finite arrays, as the report defines them."""
    scale = max(1.0, float(np.abs(b).max()))
    diff = np.abs(a - b)
    if tol.norm:
        bound = tol.atol * np.sqrt(b.size) * scale + tol.rtol * np.linalg.norm(b)
        return float(np.linalg.norm(a - b) / bound), int(np.argmax(diff)), None
    bound = tol.rtol * np.abs(b) + tol.atol * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, diff / bound, np.where(diff > 0, np.inf, 0.0))
    return float(ratio.max()), int(np.argmax(ratio)), int(np.count_nonzero(ratio > 1))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(tolerances, "CHUNK", 7)  # every drawn array spans several chunks


@given(
    n=st.integers(0, 40),
    seed=st.integers(0, 2**16),
    noise=st.sampled_from([0.0, 1e-12, 1e-9, 1e-6, 1e-3]),
    special=st.sampled_from(["none", "nan both", "inf both", "nan in a", "inf in b", "large"]),
    where=st.integers(0, 39),
    rule=st.sampled_from(RULES),
)
def test_the_chunked_comparison_follows_the_rule(n, seed, noise, special, where, rule):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal(n) * 3
    a = b + noise * rng.standard_normal(n)
    if n and special != "none":
        i = where % n
        if special == "nan both":
            a[i] = b[i] = np.nan
        elif special == "inf both":
            a[i] = b[i] = -np.inf
        elif special == "nan in a":
            a[i] = np.nan
        elif special == "inf in b":
            b[i] = np.inf
        else:
            a[i] += 1.0  # one element far out, wherever it sits among the chunks
    row = compare("t", a.reshape(-1, 1), b.reshape(-1, 1), rule)
    assert row.ok == by_the_rule(a, b, rule)
    assert row.shape == (n, 1)
    if n and special == "none" and noise == 0.0:
        assert row.max_abs == 0.0 and row.ok
    if n and special in ("none", "large"):  # the share of the tolerance, where and how many
        used, at, outside = share_by_the_rule(a, b, rule)
        assert row.outside == outside and row.ok == (row.used <= 1.0)
        if row.worst_index is None and not rule.norm:  # far inside: an upper bound, said to be under 1%
            assert used <= row.used * (1 + 1e-12) and row.used < tolerances.EXACT_SHARE_FROM
        else:
            assert row.used == pytest.approx(used, rel=1e-9)
            assert used == 0 or row.worst_index == (at, 0)


def test_one_element_out_in_the_last_chunk_fails_and_is_measured():
    b = np.linspace(-2, 2, 50)
    a = b.copy()
    a[-1] += 1e-6
    row = compare("t", a, b, Tol(1e-9, 1e-9))
    assert not row.ok and row.max_abs == pytest.approx(1e-6) and row.max_rel == pytest.approx(1e-6 / 2)
    assert row.worst_index == (49,) and row.outside == 1 and row.used == pytest.approx(1e-6 / (2e-9 + 2e-9))
    assert "worst at [49], 1 outside" in row.row()
    assert compare("t", a, b, Tol(1e-5, 0.0)).ok  # within rtol of |b| = 2


def test_shape_and_dtype_are_asserted():
    assert not compare("t", np.zeros(3), np.zeros(4), Tol(1, 1)).ok
    row = compare("t", np.zeros(3, np.float32), np.zeros(3), Tol(1, 1))
    assert not row.ok and "dtype float32 != float64" in row.name
