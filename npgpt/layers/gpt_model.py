"""The book's GPTModel as a forward/backward pair over the flat state_dict.

    x = drop_emb(tok_emb[ids] + pos_emb[positions])
    x = trf_blocks(x)
    logits = out_head(final_norm(x))

Shapes: B batch, T tokens, C emb_dim, V vocab_size, L n_layers.
Derivation: docs/math/gpt_model.md (and docs/math/residual.md for the blocks' shortcuts).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgpt.config import GPTConfig
from npgpt.layers import dropout, embedding, layer_norm, linear, transformer_block
from npgpt.layers.kv_cache import KVCache

EMB_DROP = "drop_emb"


def dropout_sites(cfg: GPTConfig) -> list[str]:
    """Names of every dropout site in forward order; keys of the ``masks`` dict."""
    sites = [EMB_DROP]
    for i in range(cfg.n_layers):
        prefix = f"trf_blocks.{i}."
        sites += [
            prefix + transformer_block.ATT_DROP,
            prefix + transformer_block.SHORTCUT_DROP_1,
            prefix + transformer_block.SHORTCUT_DROP_2,
        ]
    return sites


class Cache(NamedTuple):
    emb_cache: embedding.Cache
    drop_cache: dropout.Cache
    block_caches: list[transformer_block.Cache]
    block_outputs: list[np.ndarray]  # L arrays (B, T, C): the residual stream after each block
    norm_cache: layer_norm.Cache
    head_cache: linear.Cache
    masks: dict[str, np.ndarray]  # the dropout keep masks used (empty in eval mode)


def forward(
    params: dict[str, np.ndarray],
    cfg: GPTConfig,
    ids: np.ndarray,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
    masks: dict[str, np.ndarray] | None = None,
    kv_cache: KVCache | None = None,
    taps: list[dict[str, np.ndarray]] | None = None,
    attention: str = "plain",
    block: int | None = None,
) -> tuple[np.ndarray, Cache]:
    """ids (B, T) -> logits (B, T, V).

    In train mode every dropout site takes its mask from ``masks`` (by site name, see
    ``dropout_sites``) or draws it from ``rng``; the masks used are returned in the cache so
    another implementation can replay them. With ``kv_cache`` the ids continue the cached
    sequence (positions start at ``kv_cache.length``). ``taps``, if given, receives one dict of
    sub-layer outputs per block (``transformer_block.forward``). ``attention``: "plain" (the
    book's) or "blocked" (npgpt/layers/blocked_attention.py), with ``block`` rows per block.
    """
    masks = dict(masks or {})
    offset = 0 if kv_cache is None else kv_cache.length
    x, emb_cache = embedding.forward(ids, params["tok_emb.weight"], params["pos_emb.weight"], offset)  # (B, T, C)
    rate, mask = dropout.at_site(masks, EMB_DROP, cfg.drop_rate)
    x, drop_cache = dropout.forward(x, rate, train=train, rng=rng, mask=mask)
    block_caches, block_outputs = [], []
    if taps is not None:
        taps[:] = [{} for _ in range(cfg.n_layers)]
    for i in range(cfg.n_layers):
        kv = None if kv_cache is None else kv_cache.layers[i]
        x, c = transformer_block.forward(
            x,
            params,
            f"trf_blocks.{i}.",
            cfg.n_heads,
            cfg.drop_rate,
            train=train,
            rng=rng,
            masks=masks,
            kv=kv,
            taps=None if taps is None else taps[i],
            attention=attention,
            block=block,
        )  # (B, T, C)
        block_caches.append(c)
        block_outputs.append(x)
    x, norm_cache = layer_norm.forward(x, params["final_norm.scale"], params["final_norm.shift"])  # (B, T, C)
    logits, head_cache = linear.forward(x, params["out_head.weight"])  # (B, T, C) @ (C, V) -> (B, T, V)
    used = _collect_masks(drop_cache, block_caches)
    return logits, Cache(emb_cache, drop_cache, block_caches, block_outputs, norm_cache, head_cache, used)


def _collect_masks(drop_cache: dropout.Cache, block_caches: list[transformer_block.Cache]) -> dict[str, np.ndarray]:
    used: dict[str, np.ndarray] = {}
    if drop_cache.mask is not None:
        used[EMB_DROP] = drop_cache.mask
    for i, c in enumerate(block_caches):
        prefix = f"trf_blocks.{i}."
        for site, dc in (
            (transformer_block.ATT_DROP, c.att_cache.drop_cache),
            (transformer_block.SHORTCUT_DROP_1, c.drop1_cache),
            (transformer_block.SHORTCUT_DROP_2, c.drop2_cache),
        ):
            if dc.mask is not None:
                used[prefix + site] = dc.mask
    return used


def backward(dlogits: np.ndarray, cache: Cache) -> dict[str, np.ndarray]:
    """dlogits (B, T, V) -> gradients of every parameter, keyed and shaped like ``params``."""
    grads: dict[str, np.ndarray] = {}
    # logits = out_head(x)
    dx, grads["out_head.weight"], _ = linear.backward(dlogits, cache.head_cache)  # (B, T, C)
    # x = final_norm(x)
    dx, grads["final_norm.scale"], grads["final_norm.shift"] = layer_norm.backward(dx, cache.norm_cache)
    # x = trf_blocks(x), last block first
    for i in reversed(range(len(cache.block_caches))):
        dx, block_grads = transformer_block.backward(dx, cache.block_caches[i])
        grads.update(block_grads)
    # x = drop_emb(tok_embeds + pos_embeds)
    dx = dropout.backward(dx, cache.drop_cache)
    grads["tok_emb.weight"], grads["pos_emb.weight"] = embedding.backward(dx, cache.emb_cache)
    return grads
