"""The book's pre-LayerNorm TransformerBlock with two residual connections.

    shortcut = x; x = drop_shortcut(att(norm1(x))) + shortcut
    shortcut = x; x = drop_shortcut(ff(norm2(x)))  + shortcut

Shapes: B batch, T tokens, C emb_dim, H heads. Residual fan-out: docs/math/residual.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgpt.layers import blocked_attention, dropout, feed_forward, layer_norm, multi_head_attention
from npgpt.layers.kv_cache import LayerKV

# the attention implementations a block can run: the book's (the reference) and the block-skipping
# one for long contexts (same function and gradients; npgpt/layers/blocked_attention.py)
ATTENTIONS = {"plain": multi_head_attention, "blocked": blocked_attention}

# Dropout sites of one block, as suffixes of the block prefix (see gpt_model.dropout_sites).
ATT_DROP = "att.dropout"
SHORTCUT_DROP_1 = "drop_shortcut.att"
SHORTCUT_DROP_2 = "drop_shortcut.ff"


class Cache(NamedTuple):
    norm1_cache: layer_norm.Cache
    att_cache: multi_head_attention.Cache | blocked_attention.Cache
    drop1_cache: dropout.Cache
    norm2_cache: layer_norm.Cache
    ff_cache: feed_forward.Cache
    drop2_cache: dropout.Cache
    prefix: str  # the state_dict prefix the gradients are keyed by, e.g. "trf_blocks.0."


def forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    prefix: str,
    n_heads: int,
    drop_rate: float = 0.0,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
    masks: dict[str, np.ndarray] | None = None,
    kv: LayerKV | None = None,
    taps: dict[str, np.ndarray] | None = None,
    attention: str = "plain",
    block: int | None = None,
) -> tuple[np.ndarray, Cache]:
    """x (B, T, C) -> (B, T, C). ``masks`` maps ``prefix + site`` to a keep mask (None: no dropout
    at that site, see dropout.at_site). ``attention``: "plain" (the book's) or "blocked" (``block``
    rows per block). ``taps``, if given, receives each sub-layer's output by the book's module name
    (norm1, att, norm2, ff), for a comparison that localizes a difference below the block."""
    masks = masks or {}
    p = params
    # shortcut = x; x = norm1(x); x = att(x); x = drop_shortcut(x); x = x + shortcut
    h, norm1_cache = layer_norm.forward(x, p[f"{prefix}norm1.scale"], p[f"{prefix}norm1.shift"])  # (B, T, C)
    rate, mask = dropout.at_site(masks, prefix + ATT_DROP, drop_rate)
    blocking = {"block": block} if attention == "blocked" else {}
    h, att_cache = ATTENTIONS[attention].forward(
        h, p, f"{prefix}att.", n_heads, rate, train=train, rng=rng, mask=mask, kv=kv, **blocking
    )  # (B, T, C)
    if taps is not None:
        taps.update(norm1=att_cache.q_cache.x, att=h)  # norm1's output is attention's input
    rate, mask = dropout.at_site(masks, prefix + SHORTCUT_DROP_1, drop_rate)
    h, drop1_cache = dropout.forward(h, rate, train=train, rng=rng, mask=mask)
    x = x + h  # (B, T, C) residual; a new array, the input is not modified
    # shortcut = x; x = norm2(x); x = ff(x); x = drop_shortcut(x); x = x + shortcut
    h, norm2_cache = layer_norm.forward(x, p[f"{prefix}norm2.scale"], p[f"{prefix}norm2.shift"])  # (B, T, C)
    h, ff_cache = feed_forward.forward(h, p, f"{prefix}ff.")  # (B, T, C)
    if taps is not None:
        taps.update(norm2=ff_cache.fc_cache.x, ff=h)
    rate, mask = dropout.at_site(masks, prefix + SHORTCUT_DROP_2, drop_rate)
    h, drop2_cache = dropout.forward(h, rate, train=train, rng=rng, mask=mask)
    out = x + h  # (B, T, C)
    return out, Cache(norm1_cache, att_cache, drop1_cache, norm2_cache, ff_cache, drop2_cache, prefix)


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns ``(dx, grads)``.

    Each residual ``x_out = x_in + f(x_in)`` sends the upstream gradient down BOTH paths and
    adds them: ``dx_in = dx_out + df/dx_in``. Overwriting instead of adding drops the
    shortcut's gradient (a classic bug the parity negative controls inject).
    """
    grads: dict[str, np.ndarray] = {}
    prefix = cache.prefix
    # out = x + drop_shortcut(ff(norm2(x)))
    dh = dropout.backward(dout, cache.drop2_cache)
    dh, ff_grads = feed_forward.backward(dh, cache.ff_cache)
    dh, grads[f"{prefix}norm2.scale"], grads[f"{prefix}norm2.shift"] = layer_norm.backward(dh, cache.norm2_cache)
    dx = dout + dh  # shortcut path + transformed path
    # x = x_in + drop_shortcut(att(norm1(x_in)))
    dh = dropout.backward(dx, cache.drop1_cache)
    attention = blocked_attention if isinstance(cache.att_cache, blocked_attention.Cache) else multi_head_attention
    dh, att_grads = attention.backward(dh, cache.att_cache)
    dh, grads[f"{prefix}norm1.scale"], grads[f"{prefix}norm1.shift"] = layer_norm.backward(dh, cache.norm1_cache)
    dx_in = dx + dh
    grads.update(ff_grads)
    grads.update(att_grads)
    return dx_in, grads
