"""Keys and values kept between generation steps (the KV cache): each new token attends to every
cached position instead of recomputing the whole context. Generation only; no backward.

Shapes: B batch, H n_heads, P context_length (preallocated), D head_dim, T new tokens,
S = filled positions after an append.
"""

from __future__ import annotations

import numpy as np

from npgpt.config import GPTConfig


class LayerKV:
    """Keys and values of one attention layer for generation with a KV cache.

    Buffers are preallocated to the context length; ``length`` says how many positions
    are filled. Appending never reallocates.
    """

    def __init__(self, B: int, H: int, max_len: int, D: int, dtype: np.dtype) -> None:
        self.keys = np.zeros((B, H, max_len, D), dtype=dtype)  # (B, H, P, D)
        self.values = np.zeros((B, H, max_len, D), dtype=dtype)  # (B, H, P, D)
        self.length = 0

    def append(self, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store (B, H, T, D) new keys/values; return views of all S = length + T of them."""
        T = keys.shape[2]
        end = self.length + T
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]  # (B, H, S, D) each


class KVCache:
    """Per-layer keys and values for incremental generation; ``length`` positions are filled."""

    def __init__(self, cfg: GPTConfig, batch_size: int, dtype: np.dtype) -> None:
        self.layers = [
            LayerKV(batch_size, cfg.n_heads, cfg.context_length, cfg.head_dim, dtype) for _ in range(cfg.n_layers)
        ]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        """Forget every cached position (the buffers are reused)."""
        for layer in self.layers:
            layer.length = 0
