"""Text generation: the book's ``generate_text_simple`` and ``generate`` (temperature, top-k),
plus top-p and a KV cache whose logits equal the uncached path.

Shapes: B batch, T tokens so far, V vocab_size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from npgpt.errors import NpgptError
from npgpt.layers.kv_cache import KVCache
from npgpt.layers.softmax import softmax
from npgpt.model import GPTModel


def generate_text_simple(model: GPTModel, idx: np.ndarray, max_new_tokens: int, context_size: int) -> np.ndarray:
    """Chapter 4's greedy loop: crop to the context, take the last position's argmax, append."""
    return generate(model, idx, max_new_tokens, context_size, temperature=0.0, use_cache=False)


def _next_token_logits(model: GPTModel, idx: np.ndarray, context_size: int, kv: KVCache | None) -> np.ndarray:
    """Logits (B, V) for the token after ``idx``; with a cache, feed only what it lacks."""
    if kv is None:
        return model(idx[:, -context_size:])[:, -1, :]
    if kv.length == 0 or kv.length >= context_size:
        # (re)fill: the first call, or the window slid past the context and every cached
        # position embedding would be off by one; start over on the cropped window.
        kv.reset()
        return model(idx[:, -context_size:], kv_cache=kv)[:, -1, :]
    return model(idx[:, -1:], kv_cache=kv)[:, -1, :]


def filter_logits(
    logits: np.ndarray, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None
) -> np.ndarray:
    """Apply top-k (the book's rule: drop logits below the k-th largest), temperature, then
    top-p (keep the smallest set of most likely tokens whose probability reaches p)."""
    if top_k is not None:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]  # (B, 1) k-th largest
        logits = np.where(logits < kth, -np.inf, logits)
    if temperature > 0.0:
        logits = logits / temperature
    if top_p is not None and top_p < 1.0:
        probs = softmax(logits)  # (B, V)
        order = np.argsort(-probs, axis=-1, kind="stable")  # (B, V) most likely first
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass strictly before each token
        drop_sorted = before >= top_p  # the token that crosses p is kept
        drop = np.empty_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits = np.where(drop, -np.inf, logits)
    return logits


def generate(
    model: GPTModel,
    idx: np.ndarray,
    max_new_tokens: int,
    context_size: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    rng: np.random.Generator | None = None,
    use_cache: bool = True,
    on_logits: Callable[[np.ndarray], object] | None = None,
    on_token: Callable[[np.ndarray], object] | None = None,
) -> np.ndarray:
    """Chapter 5's ``generate``: idx (B, T) -> (B, T + n) with n <= max_new_tokens.

    Greedy (argmax) when ``temperature`` is 0, otherwise samples from the softmax of the
    filtered logits with ``rng``. Stops early when every row's next token is ``eos_id`` (which is
    not appended, as in the book). Runs the model in eval mode and restores its mode after.
    ``on_logits``, if given, sees each step's next-token logits (B, V) before filtering;
    ``on_token`` each step's new tokens (B, 1) once appended (to stream them).
    """
    if top_k is not None and not 1 <= top_k <= model.cfg.vocab_size:
        raise NpgptError(f"top_k={top_k} must be between 1 and vocab_size={model.cfg.vocab_size}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise NpgptError(f"top_p={top_p} must be in (0, 1]")
    if temperature < 0.0:
        raise NpgptError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if temperature > 0.0 and rng is None:
        rng = np.random.default_rng()
    context_size = min(context_size, model.cfg.context_length)
    idx = np.asarray(idx)
    was_training = model.training
    model.eval()
    kv = KVCache(model.cfg, idx.shape[0], model.dtype) if use_cache else None
    try:
        for _ in range(max_new_tokens):
            logits = _next_token_logits(model, idx, context_size, kv)  # (B, V)
            if on_logits is not None:
                on_logits(logits)
            logits = filter_logits(logits, temperature, top_k, top_p)
            if temperature > 0.0:
                probs = softmax(logits.astype(np.float64))  # (B, V)
                u = rng.random((probs.shape[0], 1))  # type: ignore[union-attr]
                idx_next = np.minimum((np.cumsum(probs, axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)[:, None]
            else:
                idx_next = logits.argmax(axis=-1)[:, None]  # (B, 1)
            if eos_id is not None and np.all(idx_next == eos_id):
                break
            idx = np.concatenate([idx, idx_next.astype(idx.dtype)], axis=1)  # (B, T + 1)
            if on_token is not None:
                on_token(idx_next)
    finally:
        model.train(was_training)
    return idx
