"""Cross-entropy of logits against target ids, averaged over all B*T positions.

This is ``torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())`` as the
book's ``calc_loss_batch`` calls it. Shapes: B batch, T tokens, V vocab_size.
Derivation: docs/math/cross_entropy.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Cache(NamedTuple):
    probs: np.ndarray  # (B, T, V) softmax of the logits
    targets: np.ndarray  # (B, T)


def forward(logits: np.ndarray, targets: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, Cache]:
    """``loss = mean_{b,t} ( logsumexp(logits[b, t]) - logits[b, t, targets[b, t]] )``.

    Returns the loss as a 0-d array of the logits' dtype. The cache keeps the softmax
    probabilities, one (B, T, V) array; backward needs nothing else. ``out``: the (B, T, V) array
    to build them in (``out=logits`` when the caller is done with the logits: no second array).
    """
    if out is None:
        out = np.empty_like(logits)
    # one (B, T, V) array: the shifted logits, then (in place, once the target's is read) the probabilities
    shifted = np.subtract(logits, logits.max(axis=-1, keepdims=True), out=out)
    target_logit = np.take_along_axis(shifted, targets[..., None], axis=-1)  # (B, T, 1)
    probs = np.exp(shifted, out=shifted)  # (B, T, V), unnormalised
    sum_exp = probs.sum(axis=-1, keepdims=True)  # (B, T, 1)
    probs /= sum_exp  # (B, T, V)
    nll = np.log(sum_exp) - target_logit  # (B, T, 1) = -log p(target)
    loss = nll.mean(dtype=logits.dtype)  # () mean over B*T
    return np.asarray(loss, dtype=logits.dtype), Cache(probs, targets)


def backward(dloss: float | np.ndarray, cache: Cache, out: np.ndarray | None = None) -> np.ndarray:
    """``dlogits = (softmax(logits) - onehot(targets)) * dloss / (B*T)``. ``out``: the (B, T, V)
    array to write into (``out=cache.probs`` when the cache is not needed again)."""
    probs, targets = cache
    N = targets.size
    target_prob = np.take_along_axis(probs, targets[..., None], axis=-1)  # (B, T, 1), read before out is written
    dlogits = np.empty_like(probs) if out is None else out  # (B, T, V)
    if dlogits is not probs:
        np.copyto(dlogits, probs)
    # loss = mean(logsumexp - logit[target]): d/dlogits = probs - onehot, divided by N for the mean
    np.put_along_axis(dlogits, targets[..., None], target_prob - 1.0, axis=-1)
    dlogits *= np.asarray(dloss, dtype=probs.dtype) / N
    return dlogits
