"""The book's GELU, the tanh approximation GPT-2 was trained with.

``gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
Shapes: any. Derivation: docs/math/gelu.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Python floats, not np.float64: under NumPy 2 a np.float64 scalar would upcast float32 arrays.
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
COEF = 0.044715


class Cache(NamedTuple):
    x: np.ndarray  # input; backward recomputes tanh(u) from it


def formula(x: np.ndarray) -> np.ndarray:
    """GELU as the formula reads; ``forward`` computes the same thing in place, without the five
    temporaries of x's shape this line makes (tests/npgpt/test_gelu.py holds the two equal)."""
    return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + COEF * x**3)))


def _tanh_u(x: np.ndarray) -> np.ndarray:
    """``tanh(u)``, ``u = sqrt(2/pi) * (x + 0.044715 * x^3)``, built in one new array (x*x*x: twice
    as fast as x**3); forward and backward both call it, so the two see the same bits."""
    t = x * x
    t *= x
    t *= COEF
    t += x
    t *= SQRT_2_OVER_PI
    return np.tanh(t, out=t)


def forward(x: np.ndarray) -> tuple[np.ndarray, Cache]:
    """Elementwise tanh-GELU, ``formula`` in place. The cache keeps the input only: backward
    recomputes the tanh (an array of x's shape less per block while the activations wait for
    backward, 0.3 GB over GPT-2 small at B=2, T=1024 in float32, for about 1% of a train step)."""
    out = _tanh_u(x)
    out += 1.0  # out = 0.5 * x * (1 + tanh(u))
    out *= x
    out *= 0.5
    return out, Cache(x)


def backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``d gelu/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``, t = tanh(u)."""
    (x,) = cache
    t = _tanh_u(x)  # the forward's tanh, recomputed
    # out = 0.5 x (1 + t): product rule, then t = tanh(u), u = sqrt(2/pi) (x + c x^3)
    du_dx = x * x
    du_dx *= 3.0 * COEF
    du_dx += 1.0
    du_dx *= SQRT_2_OVER_PI  # du/dx
    dgelu = t * t
    np.subtract(1.0, dgelu, out=dgelu)  # 1 - t^2 = dt/du
    dgelu *= du_dx
    dgelu *= x
    dgelu += t
    dgelu += 1.0
    dgelu *= 0.5  # 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
    dgelu *= dout
    return dgelu
