"""The book's LayerNorm: biased variance, eps inside the square root, learned scale and shift.

Shapes: N any leading dims (usually B, T), C emb_dim.
Derivation of the backward pass: docs/math/layer_norm.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Cache(NamedTuple):
    norm_x: np.ndarray  # (N..., C) normalised input
    rstd: np.ndarray  # (N..., 1) 1 / sqrt(var + eps)
    scale: np.ndarray  # (C,)


def forward(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, Cache]:
    """``out = scale * (x - mean) / sqrt(var + eps) + shift`` over the last axis.

    ``var`` is the biased variance (divide by C, torch's ``unbiased=False``), as in the book.
    The cache keeps ``norm_x`` and ``rstd`` (one extra (N..., C) array) so backward needs no
    recomputation.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (N..., 1)
    xc = x - mean  # (N..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (N..., 1), biased
    rstd = 1.0 / np.sqrt(var + eps)  # (N..., 1)
    norm_x = xc * rstd  # (N..., C)
    out = norm_x * scale + shift  # (N..., C)
    return out, Cache(norm_x, rstd, scale)


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(dx, dscale, dshift)``.

    With ``g = dout * scale`` and ``n = norm_x`` the input gradient is
    ``dx = rstd * (g - mean(g) - n * mean(g * n))`` (means over C): the two subtractions
    are the paths through the mean and through the variance.
    """
    norm_x, rstd, scale = cache
    lead = tuple(range(dout.ndim - 1))
    # out = norm_x * scale + shift
    dshift = dout.sum(axis=lead)  # (C,)
    dscale = (dout * norm_x).sum(axis=lead)  # (C,)
    dnorm = dout * scale  # (N..., C)
    # norm_x = (x - mean) * rstd, with mean and rstd both functions of x
    mean_dnorm = dnorm.mean(axis=-1, keepdims=True)  # (N..., 1)
    mean_dnorm_norm = (dnorm * norm_x).mean(axis=-1, keepdims=True)  # (N..., 1)
    dx = (dnorm - mean_dnorm - norm_x * mean_dnorm_norm) * rstd  # (N..., C)
    return dx, dscale, dshift
