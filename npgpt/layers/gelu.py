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
    x: np.ndarray  # input
    tanh_u: np.ndarray  # tanh(sqrt(2/pi) (x + 0.044715 x^3)), reused by backward


def forward(x: np.ndarray) -> tuple[np.ndarray, Cache]:
    """Elementwise tanh-GELU. The cache keeps the input and the tanh (two arrays of x's shape)."""
    u = SQRT_2_OVER_PI * (x + COEF * (x * x * x))  # x*x*x: twice as fast as x**3
    tanh_u = np.tanh(u)
    out = 0.5 * x * (1.0 + tanh_u)
    return out, Cache(x, tanh_u)


def backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``d gelu/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)``, t = tanh(u)."""
    x, t = cache
    # out = 0.5 x (1 + t): product rule, then t = tanh(u), u = sqrt(2/pi) (x + c x^3)
    du_dx = SQRT_2_OVER_PI * (1.0 + (3.0 * COEF) * (x * x))
    dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx
    return dout * dgelu
