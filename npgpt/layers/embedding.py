"""Token plus positional embedding (the book's ``tok_emb`` and ``pos_emb`` nn.Embedding layers).

Shapes: B batch, T tokens, C emb_dim, V vocab_size, P context_length (rows of pos_emb).
Derivation of the scatter-add backward: docs/math/embedding.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgpt import workspace


class Cache(NamedTuple):
    ids: np.ndarray  # (B, T) token ids
    vocab_size: int
    context_length: int
    pos_offset: int  # position of ids[:, 0] (non-zero only when extending a KV cache)


def forward(ids: np.ndarray, tok_emb: np.ndarray, pos_emb: np.ndarray, pos_offset: int = 0) -> tuple[np.ndarray, Cache]:
    """``x[b, t] = tok_emb[ids[b, t]] + pos_emb[pos_offset + t]``.

    Parameters
    ----------
    ids : (B, T) integer token ids in [0, V)
    tok_emb : (V, C)
    pos_emb : (P, C)
    pos_offset : first position (0 unless appending to a KV cache)

    Returns
    -------
    x : (B, T, C)
    cache : the ids (backward scatters into their rows).
    """
    T = ids.shape[1]
    tok_embeds = tok_emb[ids]  # (B, T, C) gather
    pos_embeds = pos_emb[pos_offset : pos_offset + T]  # (T, C)
    x = tok_embeds + pos_embeds  # (B, T, C) + (T, C) broadcast over B
    return x, Cache(ids, tok_emb.shape[0], pos_emb.shape[0], pos_offset)


def backward(dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(dtok_emb, dpos_emb)``, dense (V, C) and (P, C) arrays.

    A gather's gradient is a scatter-ADD: a token id that appears k times receives the sum of
    its k upstream rows. ``dtok_emb[ids] += dout`` would keep only one of them (fancy-index
    assignment does not accumulate); ``np.add.at`` is unbuffered and adds every row. (A sort
    plus ``np.add.reduceat`` gives the same sums; on the pinned NumPy it was not reliably
    faster, on an operation under 1% of a train step, so the plain form stays.)
    """
    ids, V, P, offset = cache
    T, C = dout.shape[1:]
    # tok_embeds = tok_emb[ids]  ->  scatter-add each row of dout into the row of its token
    dtok_emb = workspace.zeros("dtok_emb", (V, C), dout.dtype)  # (V, C); npgpt/workspace.py
    np.add.at(dtok_emb, ids, dout)  # dtok_emb[ids[b, t]] += dout[b, t] for every (b, t), repeats summed
    # x = tok_embeds + pos_embeds[broadcast over B]  ->  dpos = dout summed over B
    dpos_emb = workspace.zeros("dpos_emb", (P, C), dout.dtype)  # (P, C)
    dpos_emb[offset : offset + T] = dout.sum(axis=0)
    return dtok_emb, dpos_emb
