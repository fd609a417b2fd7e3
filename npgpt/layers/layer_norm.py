"""The book's LayerNorm: biased variance, eps inside the square root, learned scale and shift.

Shapes: N any leading dims (usually B, T), C emb_dim.
Derivation of the backward pass: docs/math/layer_norm.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Cache(NamedTuple):
    x: np.ndarray  # (N..., C) the input (a block holds it anyway: the residual stream)
    mean: np.ndarray  # (N..., 1)
    rstd: np.ndarray  # (N..., 1) 1 / sqrt(var + eps)
    scale: np.ndarray  # (C,)


def forward(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, Cache]:
    """``out = scale * (x - mean) / sqrt(var + eps) + shift`` over the last axis.

    ``var`` is the biased variance (divide by C, torch's ``unbiased=False``), as in the book.
    The cache keeps the input, ``mean`` and ``rstd``: backward recomputes ``norm_x`` from them (two
    cheap passes) rather than hold another (N..., C) array from the forward to the backward.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (N..., 1)
    xc = x - mean  # (N..., C)
    var = (xc * xc).mean(axis=-1, keepdims=True)  # (N..., 1), biased
    rstd = 1.0 / np.sqrt(var + eps)  # (N..., 1)
    # the rest in xc's buffer (in place: the same operations, no new (N..., C) arrays)
    norm_x = xc
    norm_x *= rstd  # (N..., C) norm_x = (x - mean) * rstd
    out = norm_x
    out *= scale
    out += shift  # (N..., C) out = norm_x * scale + shift
    return out, Cache(x, mean, rstd, scale)


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(dx, dscale, dshift)``.

    With ``g = dout * scale`` and ``n = norm_x`` the input gradient is
    ``dx = rstd * (g - mean(g) - n * mean(g * n))`` (means over C): the two subtractions
    are the paths through the mean and through the variance.
    """
    x, mean, rstd, scale = cache
    norm_x = x - mean
    norm_x *= rstd  # (N..., C) the forward's, recomputed with its own steps (the same bits)
    lead = tuple(range(dout.ndim - 1))
    # out = norm_x * scale + shift
    dshift = dout.sum(axis=lead)  # (C,)
    dscale = (dout * norm_x).sum(axis=lead)  # (C,)
    dnorm = dout * scale  # (N..., C)
    # norm_x = (x - mean) * rstd, with mean and rstd both functions of x
    mean_dnorm = dnorm.mean(axis=-1, keepdims=True)  # (N..., 1)
    mean_dnorm_norm = (dnorm * norm_x).mean(axis=-1, keepdims=True)  # (N..., 1)
    # dx = (dnorm - mean_dnorm - norm_x * mean_dnorm_norm) * rstd, in dnorm's and norm_x's buffers
    dx = dnorm
    dx -= mean_dnorm
    norm_x *= mean_dnorm_norm
    dx -= norm_x
    dx *= rstd  # (N..., C)
    return dx, dscale, dshift
