"""The book's GELU, the tanh approximation GPT-2 was trained with.

``gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
Shapes: any. Derivation: docs/math/gelu.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from npgpt import threads

# Python floats, not np.float64: under NumPy 2 a np.float64 scalar would upcast float32 arrays.
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
COEF = 0.044715


class Cache(NamedTuple):
    x: np.ndarray  # input; backward recomputes tanh(u) from it


def formula(x: np.ndarray) -> np.ndarray:
    """GELU as the formula reads; ``forward`` computes the same thing in place, without the five
    temporaries of x's shape this line makes (tests/npgpt/test_gelu.py holds the two equal)."""
    return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + COEF * x**3)))


def _tanh_u(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``tanh(u)``, ``u = sqrt(2/pi) * (x + 0.044715 * x^3)``, written into ``out`` (x*x*x: twice
    as fast as x**3); forward and backward both call it, so the two see the same bits."""
    np.multiply(x, x, out=out)
    out *= x
    out *= COEF
    out += x
    out *= SQRT_2_OVER_PI
    return np.tanh(out, out=out)


def forward(x: np.ndarray) -> tuple[np.ndarray, Cache]:
    """Elementwise tanh-GELU, ``formula`` without its temporaries, a cache-sized chunk at a time on
    every core (npgpt.threads; the same bits as one pass). The cache keeps the input only:
    backward recomputes the tanh (an array of x's shape less per block while the activations wait
    for backward, 0.3 GB over GPT-2 small at B=2, T=1024 in float32, for about 1% of a train step)."""
    out = np.empty_like(x)
    threads.in_ranges(_forward, x, out, scratches=0)
    return out, Cache(x)


def _forward(x: np.ndarray, out: np.ndarray) -> None:
    _tanh_u(x, out)
    out += 1.0  # out = 0.5 * x * (1 + tanh(u))
    out *= x
    out *= 0.5


def backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``d gelu/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``, t = tanh(u),
    times dout; a chunk at a time on every core, so t and du/dx are cache-sized scratch, not two
    fresh arrays of x's shape per block."""
    (x,) = cache
    dx = np.empty_like(x)
    threads.in_ranges(_backward, x, np.ascontiguousarray(dout), dx, scratches=2)
    return dx


def _backward(x: np.ndarray, dout: np.ndarray, dgelu: np.ndarray, t: np.ndarray, du_dx: np.ndarray) -> None:
    _tanh_u(x, t)  # the forward's tanh, recomputed
    # out = 0.5 x (1 + t): product rule, then t = tanh(u), u = sqrt(2/pi) (x + c x^3)
    np.multiply(x, x, out=du_dx)
    du_dx *= 3.0 * COEF
    du_dx += 1.0
    du_dx *= SQRT_2_OVER_PI  # du/dx
    np.multiply(t, t, out=dgelu)
    np.subtract(1.0, dgelu, out=dgelu)  # 1 - t^2 = dt/du
    dgelu *= du_dx
    dgelu *= x
    dgelu += t
    dgelu += 1.0
    dgelu *= 0.5  # 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
    dgelu *= dout
