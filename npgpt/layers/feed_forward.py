"""The book's FeedForward: Linear(C, 4C) -> GELU -> Linear(4C, C).

State_dict keys ``{prefix}layers.0.*`` and ``{prefix}layers.2.*`` (index 1 is the GELU).
Shapes: B batch, T tokens, C emb_dim, F = 4C.
Derivation: docs/math/residual.md (the chain rule through linear.md and gelu.md, in reverse order).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgpt.layers import gelu, linear


class Cache(NamedTuple):
    fc_cache: linear.Cache
    gelu_cache: gelu.Cache
    proj_cache: linear.Cache
    prefix: str  # the state_dict prefix the gradients are keyed by


def forward(x: np.ndarray, params: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, Cache]:
    """``out = layers.2(gelu(layers.0(x)))``; x (B, T, C) -> out (B, T, C) via (B, T, F)."""
    h, fc_cache = linear.forward(x, params[f"{prefix}layers.0.weight"], params[f"{prefix}layers.0.bias"])  # (B, T, F)
    a, gelu_cache = gelu.forward(h)  # (B, T, F)
    out, proj_cache = linear.forward(
        a, params[f"{prefix}layers.2.weight"], params[f"{prefix}layers.2.bias"]
    )  # (B, T, C)
    return out, Cache(fc_cache, gelu_cache, proj_cache, prefix)


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns ``(dx, grads)``; the three forward lines inverted in reverse order."""
    prefix = cache.prefix
    # out = layers.2(a)
    da, dW2, db2 = linear.backward(dout, cache.proj_cache)  # (B, T, F)
    # a = gelu(h)
    dh = gelu.backward(da, cache.gelu_cache)  # (B, T, F)
    # h = layers.0(x)
    dx, dW0, db0 = linear.backward(dh, cache.fc_cache)  # (B, T, C)
    grads = {
        f"{prefix}layers.0.weight": dW0,
        f"{prefix}layers.0.bias": db0,
        f"{prefix}layers.2.weight": dW2,
        f"{prefix}layers.2.bias": db2,
    }
    return dx, grads
