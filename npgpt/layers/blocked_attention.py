"""Causal multi-head attention computed block by block: the same function as
``multi_head_attention`` (same parameters, same dropout sites and masks, same gradients), for
long contexts. The plain layer stays the readable reference and the default; this one is opt-in
(``GPTModel(..., attention="blocked")``, ``npgpt train --attention blocked``).

What changes, and why (docs/math/blocked_attention.md):

- Queries are taken ``block`` rows at a time, each block against the keys up to its last row
  only: the keys after it are all in its future, so about half of QK^T, of P·V and of the
  softmax's exp at long T (the work the causal mask throws away) is never done. Each block is one
  matmul over all its keys, (bq, D) @ (D, i1), large enough to run at BLAS speed.
- A query block holds its whole rows of scores (bq x i1), so its softmax is computed in one pass
  (row maximum, exp, sum), and the (B, H, T, T) weights never exist at once.
- The cache keeps, per head, q, k, v, the context and the row log-sum-exp (B, H, T), not the
  (B, H, T, T) weights: backward recomputes each block's weights from q, k and the log-sum-exp.
  A train-mode dropout mask drawn here is kept as bits (dropout.PackedMask: an eighth of a
  byte per weight), unpacked a block at a time; a mask the caller supplies is kept as given.

Shapes: B batch, T tokens, C emb_dim, H heads, D = C // H; a block is at most ``block`` rows,
``i1`` the end of a block (its keys are 0 .. i1 - 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from npgpt import threads
from npgpt.layers import dropout, linear, multi_head_attention
from npgpt.layers.kv_cache import LayerKV
from npgpt.layers.multi_head_attention import mask_bias, merge_heads, split_heads

BLOCK = 128  # query rows per block: 64 and 256 were no faster at T = 1024 (2-core AMD EPYC, 2-core Intel Xeon)


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
    drop_cache: dropout.Cache  # the (B, H, T, T) keep mask on the weights (None without dropout), 1/(1-p)
    block: int
    prefix: str


def _blocks(T: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(start + block, T)) for start in range(0, T, block)]


def _scores(q_i: np.ndarray, keys: np.ndarray, i0: int, j0: int, scale: float, bias: np.ndarray) -> np.ndarray:
    """Scaled scores of query rows i0 .. i0 + bq against ``keys`` (B, H, bk, D), which start at
    key j0: (B, H, bq, bk), -inf where a key is in a query's future (``bias``: the (T, T) array of 0
    and -inf of the plain layer)."""
    s = q_i @ keys.transpose(0, 1, 3, 2)  # (B, H, bq, D) @ (B, H, D, bk)
    s *= scale
    bq, bk = s.shape[2], s.shape[3]
    if j0 + bk > i0 + 1:  # the last key is after the first query: part of it is future
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

    q2, q_cache = proj("W_query")  # (B, T, C)
    k2, k_cache = proj("W_key")  # (B, T, C)
    v2, v_cache = proj("W_value")  # (B, T, C)
    queries, keys, values = (split_heads(a, n_heads) for a in (q2, k2, v2))  # (B, T, C) -> (B, H, T, D) each
    B, H, T, D = queries.shape
    scale = 1.0 / math.sqrt(D)
    keep, drop_scale = None, 1.0  # keep: the (B, H, T, T) bool mask M of the derivation
    if train and drop_rate > 0.0:
        keep, drop_scale = dropout.keep_mask((B, H, T, T), drop_rate, rng=rng, mask=mask), 1.0 / (1.0 - drop_rate)
    future = mask_bias(T, T, queries.dtype)  # (T, T) of 0 and -inf
    context = np.empty_like(queries)  # (B, H, T, D)
    lse = np.empty((B, H, T, 1), dtype=queries.dtype)  # (B, H, T, 1)

    def heads(h0: int, h1: int) -> None:  # heads h0 .. h1 - 1, every query block (a thread's share)
        q, k, v, o, r = (a[:, h0:h1] for a in (queries, keys, values, context, lse))  # views
        kept = None if keep is None else dropout.part(keep, (slice(None), slice(h0, h1)))
        for i0, i1 in _blocks(T, block):
            k_past, v_past = k[:, :, :i1], v[:, :, :i1]  # (B, h, i1, D): the keys this block can see
            s = _scores(q[:, :, i0:i1], k_past, i0, 0, scale, future)  # (B, h, bq, i1)
            m = s.max(axis=-1, keepdims=True)  # (B, h, bq, 1) row maximum
            s -= m
            p = np.exp(s, out=s)  # (B, h, bq, i1) unnormalised weights, in s's buffer
            l = p.sum(axis=-1, keepdims=True)  # (B, h, bq, 1) row sum  # noqa: E741
            if kept is not None:  # dropout on the numerator only, never the sum l
                p *= dropout.rows(kept, i0, i1, i1)  # (B, h, bq, i1)
                p *= drop_scale
            o[:, :, i0:i1] = p @ v_past  # (B, h, bq, i1) @ (B, h, i1, D) -> (B, h, bq, D)
            o[:, :, i0:i1] /= l
            r[:, :, i0:i1] = m + np.log(l)  # (B, h, bq, 1)

    threads.over_parts(heads, H)  # the heads side by side, one group per core
    out, out_cache = linear.forward(
        merge_heads(context), params[f"{prefix}out_proj.weight"], params.get(f"{prefix}out_proj.bias")
    )  # (B, H, T, D) -> (B, T, C) -> (B, T, C)
    if keep is not None and mask is None:  # drawn here: held until backward as bits, not bytes
        keep = dropout.PackedMask.of(keep)
    cache = Cache(
        q_cache, k_cache, v_cache, out_cache, queries, keys, values, context, lse,
        dropout.Cache(keep, drop_scale), block, prefix,
    )  # fmt: skip
    return out, cache


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(dx, grads keyed like the state_dict), recomputing each block's weights from the cache.

    Per query block i against the keys it sees (0 .. i1 - 1, "past"), in
    docs/math/blocked_attention.md's names, with w the weights, M the keep mask and
    w' = w * M / (1 - p) the weights after dropout:
    dv_past += w'^T dO_i;  dw' = dO_i v_past^T;  dw = dw' * M / (1 - p);
    ds = w * (dw - Δ_i) / sqrt(D);  dq_i = ds k_past;  dk_past += ds^T q_i,
    where Δ = rowsum(dO * O) equals the softmax backward's sum_k w_k dw_k, because
    O_i = sum_k w'_ik v_k.
    """
    grads: dict[str, np.ndarray] = {}

    def put(name: str, dW: np.ndarray, db: np.ndarray | None) -> None:
        grads[f"{cache.prefix}{name}.weight"] = dW
        if db is not None:
            grads[f"{cache.prefix}{name}.bias"] = db

    queries, keys, values = cache.queries, cache.keys, cache.values  # (B, H, T, D) each
    keep, drop_scale = cache.drop_cache  # (B, H, T, T) bool, its bits, or None; 1 / (1 - p)
    _, H, T, D = queries.shape
    scale = 1.0 / math.sqrt(D)
    dcontext, dW, db = linear.backward(dout, cache.out_cache)  # (B, T, C)
    put("out_proj", dW, db)
    dO = split_heads(dcontext, H)  # (B, T, C) -> (B, H, T, D)
    delta = (dO * cache.context).sum(axis=-1, keepdims=True)  # (B, H, T, 1) Δ = rowsum(dO ⊙ O)
    dq, dk, dv = np.zeros_like(queries), np.zeros_like(keys), np.zeros_like(values)  # (B, H, T, D) each
    future = mask_bias(T, T, queries.dtype)  # (T, T)

    def heads(h0: int, h1: int) -> None:  # heads h0 .. h1 - 1, every query block (a thread's share)
        q, k, v, do, d, lse = (a[:, h0:h1] for a in (queries, keys, values, dO, delta, cache.lse))  # views
        gq, gk, gv = (a[:, h0:h1] for a in (dq, dk, dv))  # views: this share's rows of dq, dk, dv
        kept_h = None if keep is None else dropout.part(keep, (slice(None), slice(h0, h1)))
        for i0, i1 in _blocks(T, cache.block):
            q_i, dO_i = q[:, :, i0:i1], do[:, :, i0:i1]  # (B, h, bq, D) each
            k_past, v_past = k[:, :, :i1], v[:, :, :i1]  # (B, h, i1, D) each
            s = _scores(q_i, k_past, i0, 0, scale, future)  # (B, h, bq, i1)
            s -= lse[:, :, i0:i1]
            w = np.exp(s, out=s)  # (B, h, bq, i1) the forward's weights, recomputed in s's buffer
            dw_dropped = dO_i @ v_past.transpose(0, 1, 3, 2)  # (B, h, bq, D) @ (B, h, D, i1): dw'
            if kept_h is not None:
                kept = dropout.rows(kept_h, i0, i1, i1)  # (B, h, bq, i1) M
                gv[:, :, :i1] += (w * kept * drop_scale).transpose(0, 1, 3, 2) @ dO_i  # w'^T dO_i: (B, h, i1, D)
                dw = dw_dropped  # dw = dw' ⊙ M / (1 - p), in the buffer of dw' (not needed again)
                dw *= kept
                dw *= drop_scale
            else:
                gv[:, :, :i1] += w.transpose(0, 1, 3, 2) @ dO_i  # (B, h, i1, bq) @ (B, h, bq, D)
                dw = dw_dropped  # no dropout: w' = w
            ds = dw  # ds = w ⊙ (dw - Δ_i) / sqrt(D), in dw's buffer
            ds -= d[:, :, i0:i1]
            ds *= w
            ds *= scale  # (B, h, bq, i1) the gradient of the unscaled scores
            gq[:, :, i0:i1] = ds @ k_past  # (B, h, bq, i1) @ (B, h, i1, D)
            gk[:, :, :i1] += ds.transpose(0, 1, 3, 2) @ q_i  # (B, h, i1, bq) @ (B, h, bq, D)

    threads.over_parts(heads, H)  # the heads side by side, one group per core
    dx_q, dW, db = linear.backward(merge_heads(dq), cache.q_cache)  # (B, H, T, D) -> (B, T, C)
    put("W_query", dW, db)
    dx_k, dW, db = linear.backward(merge_heads(dk), cache.k_cache)  # (B, T, C)
    put("W_key", dW, db)
    dx_v, dW, db = linear.backward(merge_heads(dv), cache.v_cache)  # (B, T, C)
    put("W_value", dW, db)
    return dx_q + dx_k + dx_v, grads
