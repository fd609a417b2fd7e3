"""Forward/backward pairs, one module per book class.

Every module exposes ``forward(...) -> (out, cache)`` and ``backward(dout, cache) -> grads``.
Leaf layers take arrays; composite layers take ``(params, prefix)``, read the book's
state_dict keys literally, and keep the prefix in their cache so that backward returns gradients
under the same keys. ``kv_cache`` holds generation's keys and values. See docs/conventions.md
for shapes and names, docs/math/README.md for the derivation of each backward pass.
"""

from npgpt.layers import (
    cross_entropy,
    dropout,
    embedding,
    feed_forward,
    gelu,
    gpt_model,
    kv_cache,
    layer_norm,
    linear,
    multi_head_attention,
    softmax,
    transformer_block,
)

__all__ = [
    "cross_entropy",
    "dropout",
    "embedding",
    "feed_forward",
    "gelu",
    "gpt_model",
    "kv_cache",
    "layer_norm",
    "linear",
    "multi_head_attention",
    "softmax",
    "transformer_block",
]
