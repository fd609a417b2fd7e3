"""AdamW and gradient clipping with torch.optim.AdamW's and clip_grad_norm_'s exact semantics.

Shapes: every state array has its parameter's shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from npgpt import threads
from npgpt.errors import NpgptError

# bytes of each array per call of the update: 2^16 float64, 2^17 float32 elements. GPT-2 small's step on
# the 2-core Intel Xeon (python -m benchmarks.adamw, benchmarks/results/adamw-intel-2core.md), float64 /
# float32: 256 KB 0.89 / 0.48 s, 512 KB 0.86 / 0.45 s, 1 MB 0.88 / 0.46 s, 2 MB 0.87 / 0.47 s (an
# earlier run, by elements: float32 at 2^16 0.45 s, at 2^17 0.41 s; float64 the same at both)
CHUNK_BYTES = 1 << 19


class AdamW:
    """Decoupled weight decay (applied to every parameter, as the book's optimizer does),
    bias-corrected moments, eps added after the square root.

        param *= 1 - lr * weight_decay
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``step`` updates ``params`` in place, with in-place ufuncs and one scratch array the size of a
    cache-sized chunk of a parameter, on every core (npgpt.threads). ``step(grads, grad_scale=c)``
    updates as if every gradient had been multiplied by ``c`` first: gradient clipping folded
    into the two products through which g enters the moments, ``((1 - beta1) * c) * g`` and
    ``((1 - beta2) * c^2) * g^2``, so no pass over the gradients scales them (they are left as
    they are). It differs from ``clip_grad_norm`` then ``step`` by rounding only (the scalars
    multiply first; a few ulp); ``grad_scale=1`` is the plain update, bit for bit.

    The last line is computed as ``param -= m / denom'`` with
    ``denom' = sqrt(v) * (1 / (sqrt(1 - beta2^t) * step_size)) + eps / step_size``,
    ``step_size = lr / (1 - beta1^t)``: the same quantity with two divisions by scalars folded into one
    multiplication (a division costs three times a multiplication; the result differs from the
    formula above by rounding only, a few ulp).
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise NpgptError(f"invalid AdamW hyperparameters lr={lr}, betas={betas}, eps={eps}, wd={weight_decay}")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.t = 0
        # np.zeros, not zeros_like: fresh zero pages, faulted in by the first step's writes
        # instead of by a fill pass here
        self.m = {k: np.zeros(v.shape, v.dtype) for k, v in params.items()}
        self.v = {k: np.zeros(v.shape, v.dtype) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray], grad_scale: float = 1.0) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1.0 - beta1**self.t
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**self.t)
        step_size = self.lr / bias_correction1
        decay = 1.0 - self.lr * self.weight_decay
        moves = step_size != 0.0  # lr 0: only the moments move
        # denom' = denom / step_size, so that param -= m / denom' (see the class docstring)
        denom_scale = 1.0 / (bias_correction2_sqrt * step_size) if moves else 0.0
        denom_shift = self.eps / step_size if moves else 0.0

        # g enters the moments only through these two products: a clip factor folds into them
        m_gain = (1.0 - beta1) * grad_scale
        v_gain = (1.0 - beta2) * grad_scale * grad_scale

        def update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, scratch: np.ndarray) -> None:
            p *= decay  # param *= 1 - lr * weight_decay
            m *= beta1  # m = beta1 * m + (1 - beta1) * (grad_scale * g)
            np.multiply(g, m_gain, out=scratch)  # scratch: (shape of p), the one temporary
            m += scratch
            v *= beta2  # v = beta2 * v + (1 - beta2) * (grad_scale * g)^2
            np.multiply(g, g, out=scratch)
            scratch *= v_gain
            v += scratch
            if moves:
                np.sqrt(v, out=scratch)  # denom' = sqrt(v) / (sqrt(1 - beta2^t) * step_size) + eps / step_size
                scratch *= denom_scale
                scratch += denom_shift
                np.divide(m, scratch, out=scratch)  # param -= step_size * m / denom
                p -= scratch

        for key, p in self.params.items():  # elementwise: on every core
            threads.in_ranges(update, p, grads[key], self.m[key], self.v[key], chunk=CHUNK_BYTES // p.itemsize)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def state_dict(self) -> dict[str, Any]:
        """Step count, hyperparameters and the moment arrays (references, not copies)."""
        return {"t": self.t, **self.hyperparameters(), "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.lr, self.eps, self.weight_decay = float(state["lr"]), float(state["eps"]), float(state["weight_decay"])
        self.betas = (float(state["betas"][0]), float(state["betas"][1]))
        for key in self.params:
            self.m[key][...] = state["m"][key]
            self.v[key][...] = state["v"][key]


def grad_norm(grads: dict[str, np.ndarray]) -> float:
    """The global L2 norm of all gradients together."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_coef(norm: float, max_norm: float) -> float:
    """``torch.nn.utils.clip_grad_norm_``'s factor: ``min(1, max_norm / (norm + 1e-6))``."""
    return min(1.0, max_norm / (norm + 1e-6))


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Like ``torch.nn.utils.clip_grad_norm_``: ``coef = min(1, max_norm / (norm + 1e-6))`` and
    returns the norm before clipping. A training loop can leave the gradients alone and pass
    ``clip_coef(grad_norm(grads), max_norm)`` to ``AdamW.step`` as ``grad_scale`` instead (one
    pass over the gradients fewer; the same update to rounding, a few ulp).
    """
    total = grad_norm(grads)
    coef = clip_coef(total, max_norm)
    if coef < 1.0:
        for g in grads.values():
            g *= coef
    return total
