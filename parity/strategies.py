"""Hypothesis strategies: they draw STRUCTURE (config, B, T, flags, a seed); every tensor then
comes from ``np.random.default_rng(seed)``, every parameter randomised (scale, shift and biases
too), with a random upstream gradient — never ones or a plain sum."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

from npgpt.config import GPTConfig


@dataclasses.dataclass(frozen=True)
class Case:
    cfg: GPTConfig
    B: int
    T: int
    seed: int

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def ids(self, salt: int = 0) -> np.ndarray:
        """(B, T) token ids; a small alphabet half the time so ids repeat (scatter-add paths)."""
        rng = self.rng(salt)
        high = self.cfg.vocab_size if rng.random() < 0.5 else min(3, self.cfg.vocab_size)
        return rng.integers(0, high, (self.B, self.T))


@st.composite
def cases(draw: st.DrawFn, max_layers: int = 2, dropout: bool = False, min_emb_dim: int = 1) -> Case:
    """``min_emb_dim``: the float32 training tier (and float32 components with a LayerNorm
    inside) needs emb_dim >= 4. With C <= 2 LayerNorm's
    output does not depend on its input (C=1: 0; C=2: +-1), so every gradient below the first
    LayerNorm is pure round-off, which AdamW normalises into O(lr) steps in a round-off-chosen
    direction: not comparable between any two float32 implementations. float64 covers them."""
    n_heads = draw(st.integers(1, 4))
    head_dim = draw(st.integers(max(1, -(-min_emb_dim // n_heads)), 6))
    T = draw(st.integers(1, 8))
    cfg = GPTConfig(
        vocab_size=draw(st.integers(2, 50)),
        context_length=draw(st.integers(T, 12)),
        emb_dim=n_heads * head_dim,
        n_heads=n_heads,
        n_layers=draw(st.integers(1, max_layers)),
        drop_rate=draw(st.sampled_from([0.1, 0.5])) if dropout else 0.0,
        qkv_bias=draw(st.booleans()),
    )
    return Case(cfg, draw(st.integers(1, 3)), T, draw(st.integers(0, 2**31 - 1)))
