"""The tolerance table (docs/conventions.md), the ONE place tolerances live. Tests and ``npgpt check`` read
it; nothing loosens it elsewhere.

Elementwise rule: ``|a - b| <= atol * max(1, max|b|) + rtol * |b|`` (b is the reference:
npgpt in ``npgpt check``; ``engine.run_check`` names both sides by keyword).
Norm rule (float32 optimizer states): ``||a - b|| <= atol * sqrt(n) * max(1, max|b|) + rtol * ||b||``:
the same bound in root-mean-square form, so one element with heavy cancellation does not decide.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float
    norm: bool = False  # compare norms (float32 after k steps), not elements

    def describe(self) -> str:
        kind = "norm" if self.norm else "elem"
        return f"{kind} r{self.rtol:.0e}/a{self.atol:.0e}"


# (dtype, kind) -> Tol. kinds: component forward/backward, model (logits, block outputs, grads),
# loss, step_loss (the loss at each AdamW step), state (params, m, v after k steps), exact (token
# ids, kept-token masks, data windows: integers, equal or wrong, in every dtype).
TABLE: dict[tuple[str, str], Tol] = {
    ("float64", "fwd"): Tol(1e-10, 1e-10),
    ("float64", "bwd"): Tol(1e-10, 1e-10),
    ("float64", "model"): Tol(1e-9, 1e-9),
    ("float64", "loss"): Tol(1e-9, 1e-9),
    ("float64", "step_loss"): Tol(1e-9, 1e-9),
    ("float64", "state"): Tol(1e-9, 1e-9),
    ("float32", "fwd"): Tol(1e-5, 1e-5),
    ("float32", "bwd"): Tol(1e-4, 1e-5),
    ("float32", "model"): Tol(1e-4, 1e-4),
    ("float32", "loss"): Tol(1e-5, 0.0),
    ("float32", "step_loss"): Tol(1e-4, 0.0),
    ("float32", "state"): Tol(1e-4, 1e-5, norm=True),
    ("float64", "exact"): Tol(0.0, 0.0),
    # check-book's float64 tier for a reader's code: the book builds GELU's sqrt(2/pi) as
    # torch.tensor(2.0 / torch.pi), a float32 constant even in a float64 model, which puts the
    # book's own listing ~3e-9 from the reference. 1e-7 admits that and nothing in the catalog of
    # mistakes (the smallest, GELU's 0.0447, is >= 1e-5 relative); check-book says when a class
    # passes only this tier and not the strict one.
    ("float64", "book"): Tol(1e-7, 1e-7),
    ("float32", "exact"): Tol(0.0, 0.0),
}


def tolerance(dtype: str | np.dtype, kind: str) -> Tol:
    return TABLE[(np.dtype(dtype).name, kind)]


@dataclasses.dataclass(frozen=True)
class Comparison:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    tol: Tol
    ok: bool
    # how much of the tolerance the worst element (elementwise rule) or the norm (norm rule) used:
    # 1.0 is the limit, so a PASS at 0.9 is close to a FAIL; inf where an exact or missing row differs;
    # under EXACT_SHARE_FROM an upper bound (and worst_index None)
    used: float = math.inf
    worst_index: tuple[int, ...] | None = None  # where the largest share is (elementwise: the element)
    outside: int | None = None  # elements beyond the tolerance (elementwise rule); None for the norm rule

    def row(self) -> str:
        shape = "x".join(map(str, self.shape)) or "scalar"
        mark = "ok" if self.ok else "FAIL"
        line = (
            f"{self.name:<44} {shape:>12} {self.max_abs:10.2e} {self.max_rel:10.2e}  {self.tol.describe():<16} "
            f"{share(self.used):>5} {mark}"
        )
        if not self.ok and self.worst_index is not None:
            where = f"worst at {list(self.worst_index)}" if self.worst_index else "the scalar"
            line += f"  ({where}" + (f", {self.outside:,} outside)" if self.outside is not None else ")")
        return line


def share(used: float) -> str:
    """The share of the tolerance a row used, as the report prints it."""
    return ">999%" if not used < 9.995 else f"{100 * used:.0f}%"


CHUNK = 1 << 14  # elements per pass step: the temporaries (128 KB) stay in cache and below glibc's mmap threshold


def _chunks(*arrays: np.ndarray):
    for start in range(0, arrays[0].size, CHUNK):
        yield tuple(a[start : start + CHUNK] for a in arrays)


# parameters whose true gradient is exactly 0 (softmax ignores a shift shared by every key): their
# relative error is round-off over round-off, and AdamW scales it up to steps of lr
ZERO_GRADIENT = ("att.W_key.bias",)
# a row's share of its tolerance (Comparison.used) is exact from this share up; below it, an upper
# bound (one pass instead of two over the main job's ~1.6 G compared elements)
EXACT_SHARE_FROM = 0.01
COMPARED = [0]  # comparisons made in this process: a verdict command that made none cannot pass


def compare(name: str, a: np.ndarray, b: np.ndarray, tol: Tol) -> Comparison:
    """Compare ``a`` (implementation under test) with ``b`` (reference); shape and dtype asserted.

    Finite tensors go through in cache-sized chunks: one pass for the largest errors (the
    elementwise rule needs no second pass when the largest error is within ``atol``), a second
    only when it is not. Anything non-finite takes the whole-array path below."""
    COMPARED[0] += 1
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return Comparison(name, tuple(b.shape), float("inf"), float("inf"), tol, False, outside=b.size)
    if a.dtype != b.dtype:
        return Comparison(
            f"{name} (dtype {a.dtype} != {b.dtype})", tuple(b.shape), float("inf"), float("inf"), tol, False
        )
    # float64 views where the inputs already are float64 (no copies: the largest tensor of GPT-2
    # small is 309 MB); flattened, so chunks are contiguous
    a64, b64 = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (a, b))
    if not b64.size:
        return Comparison(name, tuple(b.shape), 0.0, 0.0, tol, True, 0.0, (), 0)
    max_abs = ref_max = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for ca, cb in _chunks(a64, b64):
            chunk_abs, chunk_ref = float(np.max(np.abs(ca - cb))), float(np.max(np.abs(cb)))
            if not (np.isfinite(chunk_abs) and np.isfinite(chunk_ref)):
                return _compare_non_finite(name, a64, b64, tuple(b.shape), tol)
            max_abs, ref_max = max(max_abs, chunk_abs), max(ref_max, chunk_ref)
    scale = max(1.0, ref_max)
    # relative to the reference tensor's largest magnitude: elementwise ratios explode where b ~ 0
    max_rel = max_abs / max(ref_max, np.finfo(np.float64).tiny)
    if tol.norm:
        diff_sq = ref_sq = 0.0
        worst, at = -1.0, 0
        for start, (ca, cb) in zip(range(0, b64.size, CHUNK), _chunks(a64, b64), strict=True):
            d = ca - cb
            diff_sq += float(np.dot(d, d))
            ref_sq += float(np.dot(cb, cb))
            i = int(np.argmax(np.abs(d)))
            if abs(d[i]) > worst:
                worst, at = abs(float(d[i])), start + i
        bound = tol.atol * np.sqrt(b64.size) * scale + tol.rtol * np.sqrt(ref_sq)
        used = _ratio(float(np.sqrt(diff_sq)), float(bound))
        return Comparison(name, tuple(b.shape), max_abs, max_rel, tol, used <= 1.0, used, _index(at, b.shape))
    floor = tol.atol * scale
    if floor > 0 and max_abs < EXACT_SHARE_FROM * floor:
        # every element is within max_abs / floor of its bound (the bound is at least the floor): far
        # inside the tolerance, that upper bound is the share shown, without a second pass
        return Comparison(name, tuple(b.shape), max_abs, max_rel, tol, True, max_abs / floor, None, 0)
    used, at, outside = _elementwise(a64, b64, tol, scale)
    return Comparison(name, tuple(b.shape), max_abs, max_rel, tol, outside == 0, used, _index(at, b.shape), outside)


def _ratio(diff: float, bound: float) -> float:
    return diff / bound if bound > 0 else (0.0 if diff == 0 else math.inf)


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _elementwise(a64: np.ndarray, b64: np.ndarray, tol: Tol, scale: float) -> tuple[float, int, int]:
    """(largest share of the bound, its flat index, elements beyond the bound) of the
    elementwise rule ``|a - b| <= rtol * |b| + atol * scale``, one cache-sized chunk at a time."""
    used, at, outside = 0.0, 0, 0
    floor = tol.atol * scale
    for start, (ca, cb) in zip(range(0, b64.size, CHUNK), _chunks(a64, b64), strict=True):
        diff = np.abs(ca - cb)
        bound = np.abs(cb)
        bound *= tol.rtol
        bound += floor
        ratio = np.divide(diff, bound, out=np.zeros_like(diff), where=bound > 0)
        ratio[(bound == 0) & (diff > 0)] = math.inf  # an exact row (or a zero bound) that differs
        i = int(np.argmax(ratio))
        if ratio[i] > used:
            used, at = float(ratio[i]), start + i
        outside += int(np.count_nonzero(ratio > 1.0))
    return used, at, outside


def _compare_non_finite(name: str, a64: np.ndarray, b64: np.ndarray, shape: tuple, tol: Tol) -> Comparison:
    """NaN and inf must sit at the same places with the same values; the rest within tolerance."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - b64)
    finite_a, finite_b = np.isfinite(a64), np.isfinite(b64)
    same = bool(np.array_equal(finite_a, finite_b)) and bool(
        np.array_equal(a64[~finite_a], b64[~finite_b], equal_nan=True)
    )
    finite = compare(name, a64[finite_a], b64[finite_b], tol) if same else None
    max_abs = float(np.max(diff))  # NaN or inf: what the row shows
    ref_max = float(np.max(np.abs(b64)))
    max_rel = max_abs / max(ref_max, np.finfo(np.float64).tiny) if np.isfinite(ref_max) else max_abs
    if finite is not None:
        return dataclasses.replace(finite, name=name, shape=shape, max_abs=max_abs, max_rel=max_rel, worst_index=None)
    apart = np.flatnonzero((finite_a != finite_b) | (~finite_b & ~np.isclose(a64, b64, equal_nan=True)))
    at = _index(int(apart[0]), shape) if apart.size else None
    return Comparison(name, shape, max_abs, max_rel, tol, False, math.inf, at, int(apart.size))
