"""Softmax over one axis: the probabilities of generation's sampling and of the tests' references.

``softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)``; subtracting the maximum changes
nothing mathematically and keeps exp from overflowing. The layers that need a softmax on their
hot path (attention, the loss) compute it in place inside their own forward, and their backward
passes derive its Jacobian-vector product where it is used: docs/math/attention.md (step 3) and
docs/math/cross_entropy.md. Shapes: any.
"""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (subtract the max first); -inf entries get probability 0."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e
