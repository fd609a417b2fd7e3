"""Hyperparameter checks shared by both implementations' commands: each value is checked before
any work starts, and a bad one is named with its flag and the range it must lie in."""

from __future__ import annotations

import math
from typing import Any

from npgpt.errors import NpgptError

# name -> (lowest, lowest allowed? , highest, highest allowed?, integer?)
_RULES: dict[str, tuple[float, bool, float, bool, bool]] = {
    "lr": (0.0, False, math.inf, False, False),
    "weight_decay": (0.0, True, math.inf, False, False),
    "grad_clip": (0.0, False, math.inf, False, False),
    "initial_lr": (0.0, True, math.inf, False, False),
    "min_lr": (0.0, True, math.inf, False, False),
    "drop_rate": (0.0, True, 1.0, False, False),
    "temperature": (0.0, True, math.inf, False, False),
    "top_p": (0.0, False, 1.0, True, False),
    "epochs": (1, True, math.inf, False, True),
    "batch_size": (1, True, math.inf, False, True),
    "context_length": (1, True, math.inf, False, True),
    "eval_freq": (1, True, math.inf, False, True),
    "eval_iter": (1, True, math.inf, False, True),
    "max_steps": (1, True, math.inf, False, True),
    "grad_accum": (1, True, math.inf, False, True),
    "top_k": (1, True, math.inf, False, True),
    "seed": (0, True, 2**63 - 1, True, True),  # torch's and NumPy's generators take 64-bit seeds
    "warmup_steps": (0, True, math.inf, False, True),
    "sample_tokens": (0, True, math.inf, False, True),
    "max_new_tokens": (0, True, math.inf, False, True),
    "steps": (0, True, math.inf, False, True),
    "seq_len": (1, True, math.inf, False, True),
    "vocab_size": (1, True, math.inf, False, True),
}


def _describe(lo: float, lo_in: bool, hi: float, hi_in: bool, integer: bool) -> str:
    kind = "an integer" if integer else "a finite number"
    low = f"{'>=' if lo_in else '>'} {lo:g}"
    return (
        f"{kind} {low}" if math.isinf(hi) else f"{kind} in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
    )


def check_values(values: dict[str, Any]) -> None:
    """Raise NpgptError for the first value outside its range; ``None`` means "not set" and passes.
    Names without a rule are ignored, so a whole ``vars(args)`` can be passed."""
    for name, value in values.items():
        rule = _RULES.get(name)
        if rule is None or value is None:
            continue
        lo, lo_in, hi, hi_in, integer = rule
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)
        ok = ok and (not integer or float(value).is_integer())
        if not ok:
            flag = "--" + name.replace("_", "-")
            shown = f"{value:g}" if isinstance(value, float) else value
            raise NpgptError(f"{flag} {shown}: must be {_describe(*rule)}")
