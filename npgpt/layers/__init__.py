"""Forward/backward pairs, one module per book class.

Every module exposes ``forward(...) -> (out, cache)`` and ``backward(dout, cache) -> grads``.
Leaf layers take arrays; composite layers take ``(params, prefix)`` and read the book's
state_dict keys literally. See docs/conventions.md for shapes and names, docs/math/ for the
derivations the backward passes implement.
"""

from npgpt.layers import (
    cross_entropy,
    dropout,
    embedding,
    feed_forward,
    gelu,
    gpt_model,
    layer_norm,
    linear,
    multi_head_attention,
    transformer_block,
)

__all__ = [
    "cross_entropy",
    "dropout",
    "embedding",
    "feed_forward",
    "gelu",
    "gpt_model",
    "layer_norm",
    "linear",
    "multi_head_attention",
    "transformer_block",
]
