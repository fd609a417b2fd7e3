"""nn.Linear: ``out = x @ W.T + b`` with the weight stored (out, in), as torch stores it.

Shapes: N any leading dims (usually B, T), I in_features, O out_features.
Derivation: docs/math/linear.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgpt import workspace  # where dW and db are written: fresh arrays, or last step's (npgpt/workspace.py)


class Cache(NamedTuple):
    x: np.ndarray  # (N..., I) input, needed for dW
    W: np.ndarray  # (O, I) weight, needed for dx
    has_bias: bool


def forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, Cache]:
    """Affine map over the last axis.

    Parameters
    ----------
    x : (N..., I)
    W : (O, I)
    b : (O,) or None

    Returns
    -------
    out : (N..., O)
    cache : the input and weight (references, no copies).
    """
    x2 = x.reshape(-1, x.shape[-1])  # (N..., I) -> (N, I): one BLAS call for all positions
    out = np.matmul(x2, W.T, out=workspace.empty(("out", id(W)), (x2.shape[0], W.shape[0]), np.result_type(x2, W)))
    out = out.reshape(*x.shape[:-1], W.shape[0])  # (N, I) @ (I, O) -> (N..., O)
    if b is not None:
        out += b  # (N..., O)
    return out, Cache(x, W, b is not None)


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of ``out = x @ W.T + b``.

    Returns ``(dx, dW, db)`` with ``db`` None when the layer has no bias.
    """
    x, W, has_bias = cache
    x2 = x.reshape(-1, x.shape[-1])  # (N, I)
    dout2 = dout.reshape(-1, dout.shape[-1])  # (N, O)
    # out = x @ W.T  ->  dx = dout @ W,  dW = dout.T @ x  (summed over every leading position)
    dx = (dout2 @ W).reshape(x.shape)  # (N, O) @ (O, I) -> (N..., I); consumed at once, so not kept
    dtype = np.result_type(dout2, x2)
    dW = np.matmul(dout2.T, x2, out=workspace.empty(("dW", id(W)), W.shape, dtype))  # (O, N) @ (N, I) -> (O, I)
    # out += b  ->  db = sum of dout over every leading position
    db = dout2.sum(axis=0, out=workspace.empty(("db", id(W)), W.shape[:1], dtype)) if has_bias else None  # (O,)
    return dx, dW, db
