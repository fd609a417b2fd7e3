"""The examples check-book draws and the data each one fixes: ``Example`` (batch B, tokens T,
heads H, head_dim D, seed), the weights a book class takes under the book's parameter names,
its inputs; and the notes a run leaves for its finding.

Every array is a function of the example and a salt (``rng_for``), so the reader's run and the
NumPy reference see the same numbers, and a failing example named in a report
(``--example B=1,T=2,H=1,D=2,seed=0``) is drawn again exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from npgpt.config import GPTConfig

VOCAB = 61  # the vocabulary of the model-level cases (small: the search runs many)


NEW_TOKENS = 3


@dataclasses.dataclass(frozen=True)
class Example:
    """One drawn example: batch B, tokens T, heads H, head_dim D (emb_dim C = H * D), seed."""

    B: int
    T: int
    H: int
    D: int
    seed: int

    @property
    def C(self) -> int:
        return self.H * self.D

    def __str__(self) -> str:
        return f"B={self.B},T={self.T},H={self.H},D={self.D},seed={self.seed}"

    @classmethod
    def parse(cls, text: str) -> Example:
        fields = dict(part.split("=", 1) for part in text.replace(" ", "").split(","))
        return cls(**{k: int(fields[k]) for k in ("B", "T", "H", "D", "seed")})

    def cfg(self, vocab: int = VOCAB) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab, context_length=max(8, self.T + NEW_TOKENS), emb_dim=self.C, n_heads=self.H,
            n_layers=2, drop_rate=0.1, qkv_bias=True,
        )  # fmt: skip

    def book_cfg(self) -> dict[str, Any]:
        return self.cfg().to_dict()


class UnusableError(Exception):
    """The reader's object cannot be run as the book's (a missing parameter, a wrong signature)."""


def rng_for(case: Example, salt: int) -> np.random.Generator:
    return np.random.default_rng([case.seed, salt])


def layer_norm_weights(case: Example, prefix: str = "") -> dict[str, np.ndarray]:
    rng = rng_for(case, 1)
    return {
        f"{prefix}scale": 1.0 + 0.2 * rng.standard_normal(case.C),
        f"{prefix}shift": 0.1 * rng.standard_normal(case.C),
    }


def linear_weights(rng: np.random.Generator, out: int, inp: int, name: str, bias: bool = True) -> dict[str, np.ndarray]:
    w = {f"{name}.weight": rng.standard_normal((out, inp)) / np.sqrt(inp)}
    if bias:
        w[f"{name}.bias"] = 0.1 * rng.standard_normal(out)
    return w


def attention_weights(case: Example, prefix: str = "", out_proj: bool = True) -> dict[str, np.ndarray]:
    rng, C = rng_for(case, 2), case.C
    w = {}
    for name in ("W_query", "W_key", "W_value", *(("out_proj",) if out_proj else ())):
        w.update(linear_weights(rng, C, C, f"{prefix}{name}"))
    return w


def ff_weights(case: Example, prefix: str = "") -> dict[str, np.ndarray]:
    rng, C = rng_for(case, 3), case.C
    return {**linear_weights(rng, 4 * C, C, f"{prefix}layers.0"), **linear_weights(rng, C, 4 * C, f"{prefix}layers.2")}


def block_weights(case: Example) -> dict[str, np.ndarray]:
    return {
        **attention_weights(case, "att."), **ff_weights(case, "ff."),
        **layer_norm_weights(case, "norm1."), **layer_norm_weights(case, "norm2."),
    }  # fmt: skip


def draw_x(case: Example, dtype: np.dtype, salt: int = 4, shape: tuple[int, ...] | None = None) -> np.ndarray:
    return rng_for(case, salt).standard_normal(shape or (case.B, case.T, case.C)).astype(dtype)


NOTES: list[str] = []  # what a run had to do differently, for the finding (drain_notes)


def drain_notes() -> list[str]:
    """The notes the runs since the last call left, each once."""
    notes = list(dict.fromkeys(NOTES))
    NOTES.clear()
    return notes
