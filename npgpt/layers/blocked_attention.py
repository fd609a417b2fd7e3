"""Causal multi-head attention computed block by block: the same function as
``multi_head_attention`` (same parameters, same dropout sites and masks, same gradients), for
long contexts. The plain layer stays the readable reference and the default; this one is opt-in
(``GPTModel(..., attention="blocked")``, ``npgpt train --attention blocked``).

What changes, and why (docs/math/blocked_attention.md):

- Queries are taken ``block`` rows at a time against keys ``block`` columns at a time, and a key
  block entirely in the future of a query block is skipped: about half of QK^T and of P·V at
  long T, and half of the softmax's exp, the work the causal mask throws away.
- The softmax is computed online per query block (a running row maximum m and sum l, the
  context rescaled when m grows), so the (B, H, T, T) weights never exist at once.
- The cache keeps, per head, q, k, v, the context and the row log-sum-exp (B, H, T), not the
  (B, H, T, T) weights: backward recomputes each block's weights from q, k and the log-sum-exp.
  A train-mode dropout mask is kept as booleans (one byte per weight, a quarter of float32).

Shapes: B batch, T tokens, C emb_dim, H heads, D = C // H; a block is at most ``block`` long.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from npgpt.errors import NpgptError
from npgpt.layers import dropout, linear, multi_head_attention
from npgpt.layers.kv_cache import LayerKV
from npgpt.layers.multi_head_attention import _mask_bias, _merge_heads, _split_heads

BLOCK = 128  # rows and columns per block: 64 and 256 were no faster at T = 1024 on the 2-core AMD EPYC


class Cache(NamedTuple):
    q_cache: linear.Cache
    k_cache: linear.Cache
    v_cache: linear.Cache
    out_cache: linear.Cache
    queries: np.ndarray  # (B, H, T, D)
    keys: np.ndarray  # (B, H, T, D)
    values: np.ndarray  # (B, H, T, D)
    context: np.ndarray  # (B, H, T, D) per-head output, before the heads are merged
    lse: np.ndarray  # (B, H, T, 1) log of each row's softmax denominator (scores scaled by 1/sqrt(D))
    drop_cache: dropout.Cache  # the (B, H, T, T) bool keep mask on the weights (None without dropout), 1/(1-p)
    block: int
    prefix: str


def _blocks(T: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(start + block, T)) for start in range(0, T, block)]


def _scores(q_i: np.ndarray, k_j: np.ndarray, i0: int, j0: int, scale: float, bias: np.ndarray) -> np.ndarray:
    """Scaled scores of one block pair (B, H, bq, bk), -inf where a key is in a query's future
    (``bias``: the (T, T) array of 0 and -inf of the plain layer)."""
    s = q_i @ k_j.transpose(0, 1, 3, 2)  # (B, H, bq, D) @ (B, H, D, bk)
    s *= scale
    bq, bk = s.shape[2], s.shape[3]
    if j0 + bk > i0 + 1:  # the block's last key is after its first query: part of it is future
        s += bias[i0 : i0 + bq, j0 : j0 + bk]
    return s


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
    block: int | None = None,
) -> tuple[np.ndarray, Cache | multi_head_attention.Cache]:
    """x (B, T, C) -> (B, T, C), as ``multi_head_attention.forward``; ``block`` defaults to BLOCK.
    With a KV cache (generation, one new token at a time) it is the plain layer: there is no
    square to skip."""
    block = block or BLOCK
    if kv is not None:
        return multi_head_attention.forward(
            x, params, prefix, n_heads, drop_rate, train=train, rng=rng, mask=mask, kv=kv
        )  # fmt: skip

    def proj(name: str) -> tuple[np.ndarray, linear.Cache]:
        return linear.forward(x, params[f"{prefix}{name}.weight"], params.get(f"{prefix}{name}.bias"))

    q2, q_cache = proj("W_query")
    k2, k_cache = proj("W_key")
    v2, v_cache = proj("W_value")
    queries, keys, values = (_split_heads(a, n_heads) for a in (q2, k2, v2))  # (B, H, T, D) each
    B, H, T, D = queries.shape
    scale = 1.0 / math.sqrt(D)
    keep, drop_scale = None, 1.0
    if train and drop_rate > 0.0:
        if mask is None:
            if rng is None:
                raise NpgptError("dropout in train mode needs an rng or a mask; pass rng=np.random.default_rng(seed)")
            mask = dropout.draw_mask(rng, (B, H, T, T), drop_rate)
        keep, drop_scale = mask, 1.0 / (1.0 - drop_rate)
    future = _mask_bias(T, T, queries.dtype)
    context = np.empty_like(queries)  # (B, H, T, D)
    lse = np.empty((B, H, T, 1), dtype=queries.dtype)
    for i0, i1 in _blocks(T, block):
        q_i = queries[:, :, i0:i1]
        m = np.full((B, H, i1 - i0, 1), -np.inf, dtype=queries.dtype)  # running row maximum
        l = np.zeros_like(m)  # running row sum of exp(s - m)  # noqa: E741
        acc = np.zeros_like(q_i)  # running context, in units of exp(-m)
        for j0, j1 in _blocks(i1, block):  # key blocks up to the diagonal; later ones are all future
            s = _scores(q_i, keys[:, :, j0:j1], i0, j0, scale, future)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            s -= m_new
            p = np.exp(s, out=s)  # (B, H, bq, bk) unnormalised weights
            rescale = np.exp(m - m_new)  # how much the running sums shrink under the new maximum
            l = l * rescale + p.sum(axis=-1, keepdims=True)  # noqa: E741
            if keep is not None:  # dropout on the weights: the numerator only, never the sum l
                p = p * keep[:, :, i0:i1, j0:j1]
                p *= drop_scale
            acc *= rescale
            acc += p @ values[:, :, j0:j1]
            m = m_new
        context[:, :, i0:i1] = acc / l
        lse[:, :, i0:i1] = m + np.log(l)
    out, out_cache = linear.forward(
        _merge_heads(context), params[f"{prefix}out_proj.weight"], params.get(f"{prefix}out_proj.bias")
    )
    cache = Cache(
        q_cache, k_cache, v_cache, out_cache, queries, keys, values, context, lse,
        dropout.Cache(keep, drop_scale), block, prefix,
    )  # fmt: skip
    return out, cache


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(dx, grads keyed like the state_dict), recomputing each block's weights from the cache.

    Per block pair, with P the weights and P' = P * keep * scale after dropout:
    dV_j += P'^T dO_i;  dP' = dO_i V_j^T;  dP = dP' * keep * scale;
    dS = P * (dP - rowsum(dO_i * O_i)) / sqrt(D);  dQ_i += dS K_j;  dK_j += dS^T Q_i.
    rowsum(dO * O) equals the softmax backward's sum_k P_ik dP_ik, because O_i = sum_k P'_ik V_k.
    """
    grads: dict[str, np.ndarray] = {}

    def put(name: str, dW: np.ndarray, db: np.ndarray | None) -> None:
        grads[f"{cache.prefix}{name}.weight"] = dW
        if db is not None:
            grads[f"{cache.prefix}{name}.bias"] = db

    queries, keys, values = cache.queries, cache.keys, cache.values
    keep, drop_scale = cache.drop_cache
    _, H, T, D = queries.shape
    scale = 1.0 / math.sqrt(D)
    dcontext, dW, db = linear.backward(dout, cache.out_cache)  # (B, T, C)
    put("out_proj", dW, db)
    dctx = _split_heads(dcontext, H)  # (B, H, T, D)
    delta = (dctx * cache.context).sum(axis=-1, keepdims=True)  # (B, H, T, 1)
    dq, dk, dv = np.zeros_like(queries), np.zeros_like(keys), np.zeros_like(values)
    future = _mask_bias(T, T, queries.dtype)
    for i0, i1 in _blocks(T, cache.block):
        q_i, do_i = queries[:, :, i0:i1], dctx[:, :, i0:i1]
        for j0, j1 in _blocks(i1, cache.block):
            s = _scores(q_i, keys[:, :, j0:j1], i0, j0, scale, future)
            s -= cache.lse[:, :, i0:i1]
            p = np.exp(s, out=s)  # (B, H, bq, bk) the forward's weights, recomputed
            dp = do_i @ values[:, :, j0:j1].transpose(0, 1, 3, 2)  # (B, H, bq, bk)
            if keep is not None:
                kept = keep[:, :, i0:i1, j0:j1]
                dv[:, :, j0:j1] += (p * kept * drop_scale).transpose(0, 1, 3, 2) @ do_i
                dp *= kept
                dp *= drop_scale
            else:
                dv[:, :, j0:j1] += p.transpose(0, 1, 3, 2) @ do_i
            dp -= delta[:, :, i0:i1]
            dp *= p
            dp *= scale  # dS, the gradient of the unscaled scores
            dq[:, :, i0:i1] += dp @ keys[:, :, j0:j1]
            dk[:, :, j0:j1] += dp.transpose(0, 1, 3, 2) @ q_i
    dx_q, dW, db = linear.backward(_merge_heads(dq), cache.q_cache)
    put("W_query", dW, db)
    dx_k, dW, db = linear.backward(_merge_heads(dk), cache.k_cache)
    put("W_key", dW, db)
    dx_v, dW, db = linear.backward(_merge_heads(dv), cache.v_cache)
    put("W_value", dW, db)
    return dx_q + dx_k + dx_v, grads
