"""The opt-in speed-ups of ``npgpt train/demo``, declared once (all torch's but ``--attention
blocked``, npgpt's block-skipping attention): the parser
builds its flags from this table, the torch runner reads the same names, and a resumed run takes
them from its checkpoint. Each keeps the book's weights and math (docs/torchgpt.md)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class SpeedUp:
    name: str  # the argparse dest; the flag is --name with dashes
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SPEED_UPS = (
    SpeedUp(
        "attention",
        "book",
        "sdpa (--impl torch): F.scaled_dot_product_attention (flash attention on GPUs); blocked (npgpt): "
        "causal blocks in the future skipped, weights recomputed in backward (long contexts)",
        ("book", "sdpa", "blocked"),
    ),
    SpeedUp("amp", "none", "bf16 autocast", ("none", "bf16")),
    SpeedUp("compile", False, "torch.compile the model"),
    SpeedUp("fused_adamw", False, "single-kernel AdamW (CPU and CUDA)"),
    SpeedUp("tf32", False, "TF32 tensor cores for float32 matmuls"),
    SpeedUp("grad_accum", 1, "micro-batches per optimizer step"),
)
NAMES = tuple(s.name for s in SPEED_UPS)


def add_speed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed-ups (opt-in, same weights and math; --impl torch only, but --attention blocked)")
    for s in SPEED_UPS:
        if isinstance(s.default, bool):
            g.add_argument(s.flag, action="store_true", help=s.help)
        else:
            g.add_argument(s.flag, type=type(s.default), default=s.default, choices=s.choices, help=s.help)


NUMPY_ATTENTION = "blocked"  # the one value of a speed-up flag that is npgpt's, not torch's


def used(args: argparse.Namespace) -> list[str]:
    """The torch speed-up flags given with a value other than their default."""
    return [
        s.flag for s in SPEED_UPS
        if getattr(args, s.name, s.default) not in (s.default, NUMPY_ATTENTION if s.name == "attention" else None)
    ]  # fmt: skip
