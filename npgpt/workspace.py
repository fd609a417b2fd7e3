"""Buffers that live across steps: where a backward would allocate a parameter's gradient afresh
every call, it writes into the same array instead, when the caller asked for it.

A fresh gradient the size of the model is mapped and faulted in page by page on every call (the
default check's NumPy side: ~1.3 GB and ~240,000 page faults a call); writing into last call's
arrays costs none of that and computes the same numbers (the same BLAS call, with ``out=``).

Off unless a caller turns it on around a call (``with workspace.active(ws): ...``), as
``GPTModel(..., reuse_grad_buffers=True)`` does inside ``loss_and_grads`` (npgpt train turns it on):
the gradients a call returns are then valid until the next call, which overwrites them. Kept:
each linear layer's weight and bias gradients and its output, the embeddings' gradients; not kept:
the input gradients, consumed at once (keeping them saved no time and held more memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator

import numpy as np


class Workspace:
    """Arrays kept by key; ``take`` gives the same array back while the shape and dtype match."""

    def __init__(self) -> None:
        self._buffers: dict[Hashable, np.ndarray] = {}

    def take(self, key: Hashable, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[key] = np.empty(shape, dtype)
        return buf


_ACTIVE: list[Workspace | None] = [None]


@contextlib.contextmanager
def active(ws: Workspace | None) -> Iterator[None]:
    """Backward calls inside the block write their gradients into ``ws`` (None: fresh arrays)."""
    previous, _ACTIVE[0] = _ACTIVE[0], ws
    try:
        yield
    finally:
        _ACTIVE[0] = previous


def empty(key: Hashable, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array to write a result into: the workspace's for ``key`` if one is active, else new."""
    ws = _ACTIVE[0]
    return np.empty(shape, dtype) if ws is None else ws.take(key, shape, np.dtype(dtype))


def zeros(key: Hashable, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``empty`` filled with zeros (a fresh np.zeros when no workspace is active)."""
    ws = _ACTIVE[0]
    if ws is None:
        return np.zeros(shape, dtype)
    buf = ws.take(key, shape, np.dtype(dtype))
    buf.fill(0)
    return buf
