"""Appendix D's learning-rate schedule: linear warmup from ``initial_lr`` to ``peak_lr``, then
cosine decay to ``min_lr`` at the last step."""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    initial_lr: float = 3e-5,
    min_lr: float = 1e-6,
) -> float:
    """Learning rate for global step ``step`` (0-based), exactly as appendix D computes it.

    During warmup (``step < warmup_steps``): ``initial_lr + step * (peak_lr - initial_lr) / warmup_steps``.
    After: ``min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * progress))`` with
    ``progress = (step - warmup_steps) / (total_steps - warmup_steps)``.
    """
    if step < warmup_steps:
        return initial_lr + step * (peak_lr - initial_lr) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = (step - warmup_steps) / decay_steps
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
