"""What a check must compare, declared up front from the configuration alone.

The engine records and compares what the two implementations produce; this module says, before
either runs, which rows the report must then hold. A report that lacks any of them fails (a row
naming how many and the first), so an engine or adapter that silently drops a group of tensors
(AdamW's ``v``, one layer's gradients, the generation rows) cannot pass. The names here are the
report's names; ``tests/parity/test_outputs.py`` holds them equal to what a run really compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from npgpt.config import GPTConfig

SUBMODULES = ("norm1", "att", "norm2", "ff")  # a block's sub-layers, the book's names in forward order
STATE = ("param", "adam m", "adam v")  # what is compared after the last step, per parameter
GENERATED = 4  # greedy tokens compared, each step's logits too
FILTERS = ((1.0, None, None), (1.4, 25, None), (1.0, None, 0.9), (0.7, 5, 0.95))  # (temperature, top-k, top-p)
# (batch_size, max_length, stride, drop_last) of the data rows: chapter 2's overlapping windows
# and non-overlapping ones whose last, short batch is dropped
WINDOWS = ((8, 4, 1, False), (4, 16, 16, True))


# component of a row, from the parameter or output name it mentions (first match wins)
_COMPONENTS = (
    ("raised ", "crash"),
    ("data ", "data pipeline"),
    ("generate", "generation (KV cache)"),
    ("filter ", "sampling filters"),
    (" lr", "learning-rate schedule"),
    (" grad norm", "gradient clipping"),
    ("tok_emb", "embedding"),
    ("pos_emb", "embedding"),
    (".att", "attention"),
    (".norm1", "layer norm"),
    (".norm2", "layer norm"),
    ("final_norm", "layer norm"),
    (".ff", "feed-forward"),
    ("out_head", "output head"),
    ("logits", "output head"),
    ("loss", "loss"),
    ("trf_blocks.", "block outputs"),
)


def component_of(name: str) -> str:
    return next((component for key, component in _COMPONENTS if key in name), "other")


class Output(NamedTuple):
    """One compared tensor as the run makes it: its name, and from the name its tolerance kind
    and the model component it belongs to (the report's groups)."""

    name: str
    tensor: np.ndarray

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    @property
    def component(self) -> str:
        return component_of(self.name)


def kind_of(name: str) -> str:
    """The tolerance kind (parity/tolerances.py's table) of an output, from its name: the one
    place the engine and golden bundles look it up."""
    if name.startswith("data ") or name.endswith((" tokens (KV cache)", ": kept tokens")):
        return "exact"  # token ids, kept-token masks, data windows: integers, equal or wrong
    if name.startswith("step ") and name.endswith((" loss", " lr", " grad norm")):
        return "step_loss"
    if name.startswith(tuple(f"{what} " for what in STATE)):
        return "state"
    if name == "loss":
        return "loss"
    if name.startswith("layer_norm "):
        return "bwd"  # golden bundles' component outputs
    return "model"  # block outputs, logits, gradients, generation logits, filter probabilities


def block_output(i: int, sub: str | None = None) -> str:
    return f"trf_blocks.{i} output" if sub is None else f"trf_blocks.{i}.{sub} output"


def window_label(batch_size: int, max_length: int, stride: int, drop_last: bool) -> str:
    return f"data T={max_length} stride {stride} batch {batch_size}{' drop_last' if drop_last else ''}"


def filter_label(temperature: float, top_k: int | None, top_p: float | None) -> str:
    return f"filter temperature {temperature}, top-k {top_k}, top-p {top_p}"


def generated_logits(j: int, cached: bool = True) -> str:
    return f"generate step {j} logits ({'KV cache' if cached else 'no cache, reference'})"


def state_name(what: str, key: str, steps: int) -> str:
    return f"{what} {key} @ step {steps}"


def declared(
    cfg: GPTConfig,
    keys: Iterable[str],
    steps: int,
    *,
    data: bool = True,
    generation: bool = True,
    scheduled: bool = True,
    skipped_state: Iterable[str] = (),
) -> Iterator[str]:
    """The rows a check of ``cfg`` over the parameters ``keys`` (the reference's, a tied head
    under tok_emb) must report, in report order. Sub-layer outputs are optional (an adapter
    without ``taps`` has none) and so not declared; each block's output is. ``data`` and
    ``generation``: both sides have the optional hooks; ``scheduled``: appendix D's schedule ran
    (lr and gradient norm per step); ``skipped_state``: parameters whose post-step state is left
    out by rule (the float32 W_key biases, ZERO_GRADIENT), said in the report's notes."""
    keys = list(keys)
    if data:
        for window in WINDOWS:
            label = window_label(*window)
            yield from (f"{label}: inputs", f"{label}: targets", f"{label}: batch sizes")
    yield from (block_output(i) for i in range(cfg.n_layers))
    yield "logits"
    if generation:
        yield from (generated_logits(j) for j in range(1, GENERATED + 1))
        yield "generate tokens (KV cache)"
        for temperature, top_k, top_p in FILTERS:
            label = filter_label(temperature, None if top_k is None else min(top_k, cfg.vocab_size), top_p)
            yield from (f"{label}: kept tokens", f"{label}: probabilities")
        yield from (f"reference: {generated_logits(j)} vs no cache" for j in range(1, GENERATED + 1))
    yield "loss"
    yield from (f"grad {key}" for key in keys)
    for step in range(1, steps + 1):
        yield f"step {step} loss"
        if scheduled:
            yield from (f"step {step} lr", f"step {step} grad norm")
    skipped = set(skipped_state)
    if steps:
        yield from (state_name(what, key, steps) for what in STATE for key in keys if key not in skipped)


def state_key(name: str) -> str | None:
    """The parameter a post-step state row is about (``adam m trf_blocks.0.att.W_key.bias @ step 3``
    -> ``trf_blocks.0.att.W_key.bias``); None for any other row."""
    what = next((w for w in STATE if name.startswith(f"{w} ") and " @ step " in name), None)
    return None if what is None else name.removeprefix(f"{what} ").rsplit(" @ step ", 1)[0]


def missing(declared_names: Iterable[str], compared: Iterable[str]) -> list[str]:
    """The declared rows the report lacks, in declared order."""
    have = set(compared)
    return [name for name in declared_names if name not in have]
