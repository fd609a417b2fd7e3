"""The book's causal MultiHeadAttention: separate W_query/W_key/W_value, 1/sqrt(D) scaling,
dropout on the attention weights, then out_proj.

Shapes: B batch, T query tokens, S key tokens (S = T without a KV cache, S = past + T with one),
C emb_dim, H n_heads, D head_dim = C // H.
Derivation of the backward pass (softmax, causal mask, scaling): docs/math/attention.md.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from npgpt.layers import dropout, linear
from npgpt.layers.kv_cache import LayerKV


class Cache(NamedTuple):
    q_cache: linear.Cache
    k_cache: linear.Cache
    v_cache: linear.Cache
    out_cache: linear.Cache
    queries: np.ndarray  # (B, H, T, D)
    keys: np.ndarray  # (B, H, S, D)
    values: np.ndarray  # (B, H, S, D)
    attn_weights: np.ndarray  # (B, H, T, S) softmax output, before dropout
    drop_cache: dropout.Cache
    dropped_weights: np.ndarray  # (B, H, T, S) after dropout (same array when no dropout)
    prefix: str  # the state_dict prefix the gradients are keyed by, e.g. "trf_blocks.0.att."


def causal_mask(T: int, S: int) -> np.ndarray:
    """Boolean (T, S) mask, True where query t must NOT see key s (s > t + S - T).

    Without a KV cache S == T and this is ``triu(ones(T, T), k=1)``, the book's ``mask`` buffer.
    With a cache the T new queries sit at positions S - T ... S - 1.
    """
    return np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)


@functools.lru_cache(maxsize=64)
def mask_bias(T: int, S: int, dtype: np.dtype) -> np.ndarray:
    """(T, S) array of 0 and -inf: adding it equals masked_fill(mask, -inf), ~100x faster than
    boolean-index assignment on a (B, H, T, S) array."""
    bias = np.where(causal_mask(T, S), -np.inf, 0.0).astype(dtype)
    bias.flags.writeable = False
    return bias


def split_heads(x: np.ndarray, H: int) -> np.ndarray:
    B, T, C = x.shape
    return x.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, H, T, D)


def merge_heads(x: np.ndarray) -> np.ndarray:
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, C)


def forward(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    prefix: str,
    n_heads: int,
    drop_rate: float = 0.0,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
    mask: np.ndarray | None = None,
    kv: LayerKV | None = None,
) -> tuple[np.ndarray, Cache]:
    """Causal self-attention over x.

    Parameters
    ----------
    x : (B, T, C)
    params : state_dict; reads ``{prefix}W_query.weight`` (and ``.bias`` if present),
        ``W_key``, ``W_value``, ``out_proj``.
    prefix : e.g. ``"trf_blocks.0.att."``
    n_heads : H
    drop_rate, train, rng, mask : dropout on the attention weights; ``mask`` is a (B, H, T, S)
        boolean keep mask.
    kv : optional KV cache; the new keys/values are appended and the queries attend to all
        cached positions (generation).

    Returns
    -------
    out : (B, T, C)
    cache : q, k, v, the attention weights (B, H, T, S) and the linear caches; the (T, S)
        weights are the memory cost of not recomputing the softmax in backward.
    """

    def proj(name: str) -> tuple[np.ndarray, linear.Cache]:
        return linear.forward(x, params[f"{prefix}{name}.weight"], params.get(f"{prefix}{name}.bias"))

    q2, q_cache = proj("W_query")  # (B, T, C)
    k2, k_cache = proj("W_key")  # (B, T, C)
    v2, v_cache = proj("W_value")  # (B, T, C)
    queries = split_heads(q2, n_heads)  # (B, T, C) -> (B, H, T, D)
    keys = split_heads(k2, n_heads)  # (B, T, C) -> (B, H, T, D)
    values = split_heads(v2, n_heads)  # (B, T, C) -> (B, H, T, D)
    if kv is not None:
        keys, values = kv.append(keys, values)  # (B, H, S, D) each
    T, S, D = queries.shape[2], keys.shape[2], queries.shape[3]

    attn_scores = queries @ keys.transpose(0, 1, 3, 2)  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    attn_scores += mask_bias(T, S, attn_scores.dtype)  # the book's masked_fill_(mask_bool, -inf)
    attn_scores /= math.sqrt(D)  # the book divides by keys.shape[-1] ** 0.5
    attn_weights = attn_scores  # softmax over keys, in place: the scores are not needed again
    attn_weights -= attn_weights.max(axis=-1, keepdims=True)  # (B, H, T, S)
    np.exp(attn_weights, out=attn_weights)
    attn_weights /= attn_weights.sum(axis=-1, keepdims=True)
    dropped_weights, drop_cache = dropout.forward(attn_weights, drop_rate, train=train, rng=rng, mask=mask)

    context_heads = dropped_weights @ values  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    context_vec = merge_heads(context_heads)  # (B, H, T, D) -> (B, T, C)
    out, out_cache = linear.forward(
        context_vec, params[f"{prefix}out_proj.weight"], params.get(f"{prefix}out_proj.bias")
    )
    cache = Cache(
        q_cache, k_cache, v_cache, out_cache, queries, keys, values, attn_weights, drop_cache, dropped_weights, prefix
    )
    return out, cache


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns ``(dx, grads)`` with grads keyed like the state_dict.

    Not defined for a forward that used a KV cache (generation only needs the forward).
    """
    grads: dict[str, np.ndarray] = {}

    def put(name: str, dW: np.ndarray, db: np.ndarray | None) -> None:
        grads[f"{cache.prefix}{name}.weight"] = dW
        if db is not None:
            grads[f"{cache.prefix}{name}.bias"] = db

    queries, keys, values, attn_weights = cache.queries, cache.keys, cache.values, cache.attn_weights
    D = queries.shape[3]
    H = queries.shape[1]

    # out = out_proj(context_vec)
    dcontext_vec, dW, db = linear.backward(dout, cache.out_cache)  # (B, T, C)
    put("out_proj", dW, db)
    dcontext_heads = split_heads(dcontext_vec, H)  # (B, T, C) -> (B, H, T, D)
    # context_heads = dropped_weights @ values
    #   ->  ddropped_weights = dcontext_heads @ values^T,  dvalues = dropped_weights^T @ dcontext_heads
    ddropped_weights = dcontext_heads @ values.transpose(0, 1, 3, 2)  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    dvalues = cache.dropped_weights.transpose(0, 1, 3, 2) @ dcontext_heads  # (B, H, S, T) @ (B, H, T, D)
    # dropped_weights = dropout(attn_weights)
    dattn_weights = dropout.backward(ddropped_weights, cache.drop_cache)  # (B, H, T, S)
    # attn_weights = softmax(scaled_scores)  ->  dscaled_scores = w * (dw - sum(dw * w))
    # masked entries have w == 0, so they get zero gradient: the mask needs no extra step.
    # computed in dattn_weights' buffer, which nothing reads again: the same operations as that
    # line, with no (B, H, T, S) temporary but the product that is summed
    dscaled_scores = dattn_weights
    dscaled_scores -= (dattn_weights * attn_weights).sum(axis=-1, keepdims=True)  # dw - sum(dw * w)
    dscaled_scores *= attn_weights  # w * (dw - sum(dw * w))
    # scaled_scores = attn_scores / sqrt(D)
    dattn_scores = dscaled_scores
    dattn_scores /= math.sqrt(D)  # (B, H, T, S)
    # attn_scores = queries @ keys^T  ->  dqueries = dattn_scores @ keys,  dkeys = dattn_scores^T @ queries
    dqueries = dattn_scores @ keys  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    dkeys = dattn_scores.transpose(0, 1, 3, 2) @ queries  # (B, H, S, T) @ (B, H, T, D) -> (B, H, S, D)

    # queries = W_query(x), keys = W_key(x), values = W_value(x)
    dx_q, dW, db = linear.backward(merge_heads(dqueries), cache.q_cache)  # (B, H, T, D) -> (B, T, C)
    put("W_query", dW, db)
    dx_k, dW, db = linear.backward(merge_heads(dkeys), cache.k_cache)  # (B, T, C)
    put("W_key", dW, db)
    dx_v, dW, db = linear.backward(merge_heads(dvalues), cache.v_cache)  # (B, T, C)
    put("W_value", dW, db)
    # x fans out to the three projections, so its gradient is the sum of the three paths
    dx = dx_q + dx_k + dx_v  # (B, T, C)
    return dx, grads
