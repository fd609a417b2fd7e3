"""The parameter vocabulary: the book's ``GPTModel.state_dict()`` keys and shapes, minus the
``trf_blocks.{i}.att.mask`` buffers; initialisation; validation.
"""

from __future__ import annotations

import math

import numpy as np

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError


def param_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's key and shape, in the order torch's state_dict lists them."""
    V, P, C = cfg.vocab_size, cfg.context_length, cfg.emb_dim
    F = 4 * C
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (V, C), "pos_emb.weight": (P, C)}
    for i in range(cfg.n_layers):
        b = f"trf_blocks.{i}."
        for name in ("W_query", "W_key", "W_value"):
            shapes[f"{b}att.{name}.weight"] = (C, C)
            if cfg.qkv_bias:
                shapes[f"{b}att.{name}.bias"] = (C,)
        shapes[f"{b}att.out_proj.weight"] = (C, C)
        shapes[f"{b}att.out_proj.bias"] = (C,)
        shapes[f"{b}ff.layers.0.weight"] = (F, C)
        shapes[f"{b}ff.layers.0.bias"] = (F,)
        shapes[f"{b}ff.layers.2.weight"] = (C, F)
        shapes[f"{b}ff.layers.2.bias"] = (C,)
        for norm in ("norm1", "norm2"):
            shapes[f"{b}{norm}.scale"] = (C,)
            shapes[f"{b}{norm}.shift"] = (C,)
    shapes["final_norm.scale"] = (C,)
    shapes["final_norm.shift"] = (C,)
    shapes["out_head.weight"] = (V, C)
    return shapes


def num_params(cfg: GPTConfig) -> int:
    """Total number of parameters (163,009,536 for GPT_CONFIG_124M, as the book prints)."""
    return sum(math.prod(s) for s in param_shapes(cfg).values())


def init_params(cfg: GPTConfig, seed: int = 0, dtype: np.dtype | type = np.float32) -> dict[str, np.ndarray]:
    """Random parameters with torch's default initialisation for each book module.

    nn.Embedding: N(0, 1). nn.Linear weight and bias: U(-1/sqrt(in), 1/sqrt(in)).
    LayerNorm: scale 1, shift 0. The distributions match torch; the random numbers do not
    (use parity's converters to share exact weights).
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    params: dict[str, np.ndarray] = {}
    for key, shape in param_shapes(cfg).items():
        if key.endswith(".scale"):
            params[key] = np.ones(shape, dtype=dtype)
        elif key.endswith(".shift"):
            params[key] = np.zeros(shape, dtype=dtype)
        elif key in ("tok_emb.weight", "pos_emb.weight"):
            params[key] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        else:
            # fan_in of a Linear is its weight's second dim; a bias shares its weight's fan_in
            fan_in = shape[1] if len(shape) == 2 else _fan_in_of_bias(key, cfg)
            bound = 1.0 / math.sqrt(fan_in)
            u = rng.random(shape, dtype=np.float32).astype(dtype, copy=False)
            params[key] = (2.0 * bound) * u - bound
    return params


def _fan_in_of_bias(key: str, cfg: GPTConfig) -> int:
    return 4 * cfg.emb_dim if ".ff.layers.2." in key else cfg.emb_dim


def check_params(params: dict[str, np.ndarray], cfg: GPTConfig) -> np.dtype:
    """Validate keys, shapes and one common float dtype; return that dtype.

    Errors name the offending tensors so a checkpoint from another config is easy to diagnose.
    """
    expected = param_shapes(cfg)
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise NpgptError(
            f"parameters do not match the config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}; build them with npgpt.init_params(cfg) "
            "or load a checkpoint made for this config"
        )
    bad_shape = [f"{k} {tuple(params[k].shape)} != {s}" for k, s in expected.items() if params[k].shape != s]
    if bad_shape:
        raise NpgptError(f"parameter shape mismatch: {'; '.join(bad_shape[:3])}; the weights belong to another config")
    dtypes = {np.asarray(v).dtype for v in params.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        names = sorted(str(d) for d in dtypes)
        raise NpgptError(f"parameters must all be float32 or all float64, got {names}; cast them with .astype")
    return next(iter(dtypes))


def check_ids(ids: np.ndarray, cfg: GPTConfig, past: int = 0) -> np.ndarray:
    """Validate a (B, T) batch of token ids; returns it as an integer array."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise NpgptError(
            f"token ids must have shape (batch, tokens), got shape {ids.shape}; add a batch axis with ids[None]"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise NpgptError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.shape[1] == 0:
        raise NpgptError("token ids are empty; give at least one token")
    if past + ids.shape[1] > cfg.context_length:
        raise NpgptError(
            f"sequence of {past + ids.shape[1]} tokens exceeds context_length={cfg.context_length}; "
            "crop it to the last context_length tokens"
        )
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= cfg.vocab_size:
        bad = lo if lo < 0 else hi
        raise NpgptError(
            f"token id {bad} is out of range [0, {cfg.vocab_size}); check the tokenizer matches vocab_size"
        )
    return ids
