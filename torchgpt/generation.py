"""Generation: chapter 4's ``generate_text_simple`` and chapter 5's ``generate`` (temperature,
top-k), plus top-p and a KV cache whose output equals the uncached path."""

from __future__ import annotations

from collections.abc import Callable

import torch

from npgpt.errors import NpgptError
from torchgpt.model import GPTModel, KVCache


def generate_text_simple(model: GPTModel, idx: torch.Tensor, max_new_tokens: int, context_size: int) -> torch.Tensor:
    """Greedy decoding, recomputing the cropped context every step (the book's loop)."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]  # (B, V) the last position predicts the next token
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def _check_ids(model: GPTModel, idx: torch.Tensor) -> None:
    V = model.tok_emb.num_embeddings
    if idx.dtype not in (torch.int64, torch.int32) or idx.ndim != 2:
        raise NpgptError(f"idx must be a (batch, tokens) integer tensor, got {tuple(idx.shape)} {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= V):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise NpgptError(f"token id {bad} is out of range [0, {V}); check the tokenizer matches vocab_size")


def filter_logits(
    logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Top-k as in the book (drop logits below the k-th largest), temperature, then top-p."""
    if top_k is not None:
        top_logits, _ = torch.topk(logits, top_k)
        min_val = top_logits[:, -1:]
        logits = torch.where(logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits)
    if temperature > 0.0:
        logits = logits / temperature
    if top_p is not None and top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly before each token
        drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def generate(
    model: GPTModel,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    top_p: float | None = None,
    use_cache: bool = False,
    generator: torch.Generator | None = None,
    on_logits: Callable[[torch.Tensor], object] | None = None,
    on_token: Callable[[torch.Tensor], object] | None = None,
) -> torch.Tensor:
    """Chapter 5's ``generate``; greedy at temperature 0, multinomial sampling otherwise.

    Stops when every row's next token is ``eos_id`` (not appended). ``use_cache`` feeds only the
    new token each step; when the window slides past the context the cache is refilled from
    the cropped window, so the tokens are those of the uncached loop. ``on_logits``, if given,
    sees each step's next-token logits (B, V) before filtering; ``on_token`` each step's new tokens
    (B, 1) once appended (to stream them).
    """
    _check_ids(model, idx)
    if top_k is not None and not 1 <= top_k <= model.tok_emb.num_embeddings:
        raise NpgptError(f"top_k={top_k} must be between 1 and vocab_size")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise NpgptError(f"top_p={top_p} must be in (0, 1]")
    context_size = min(context_size, model.pos_emb.num_embeddings)
    kv = KVCache(model, idx.shape[0]) if use_cache else None
    for _ in range(max_new_tokens):
        with torch.no_grad():
            if kv is None:
                logits = model(idx[:, -context_size:])
            elif kv.length == 0 or kv.length >= context_size:
                kv.reset()
                logits = model(idx[:, -context_size:], kv)
            else:
                logits = model(idx[:, -1:], kv)
        if on_logits is not None:
            on_logits(logits[:, -1, :])
        logits = filter_logits(logits[:, -1, :], temperature, top_k, top_p)
        if temperature > 0.0:
            probs = torch.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (B, 1)
        if eos_id is not None and bool((idx_next == eos_id).all()):
            break
        idx = torch.cat((idx, idx_next), dim=1)
        if on_token is not None:
            on_token(idx_next)
    return idx
