"""Finite-difference gradient checks (``npgpt.gradcheck``), usable on any layer or on a whole model.

Centered differences in float64: ``(f(x + h e) - f(x - h e)) / 2h`` has error O(h^2), so with
h = 1e-5 (the default) a correct backward agrees to roughly 1e-8 relative. The error metric is CS231n's
relative error ``|a - n| / max(|a|, |n|)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from npgpt.errors import NpgptError


def rel_error(a: float | np.ndarray, b: float | np.ndarray, zero_tol: float = 1e-8) -> float:
    """CS231n relative error of two vectors, ``||a - b|| / max(||a||, ||b||)``.

    When both are below ``zero_tol`` in norm they are both zero to within finite-difference
    noise (e.g. the W_key bias, whose gradient is exactly 0 because softmax ignores a constant
    shift of a row of scores), and the error is 0.0. Comparing vectors, not single elements,
    keeps the metric meaningful when one element happens to be tiny.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)))
    if scale < zero_tol:
        return 0.0
    return float(np.linalg.norm(a - b)) / scale


def gradcheck(
    f: Callable[[dict[str, np.ndarray]], float],
    inputs: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    *,
    h: float = 1e-5,
    n_coords: int = 3,
    n_directions: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Compare analytic ``grads`` of a scalar function with centered finite differences.

    Parameters
    ----------
    f : maps a dict of float64 arrays to a scalar; it must not modify them.
    inputs : the point to check at; arrays are perturbed as copies, never in place.
    grads : the analytic gradient of f at ``inputs``, same keys and shapes.
    n_coords : coordinates per tensor to check (at random; all of them for a smaller tensor).
    n_directions : random unit directions per tensor, and over ALL tensors at once (the
        latter catches errors spread thinly over many coordinates).

    Returns
    -------
    ``{name: relative error}`` per tensor, the vector relative error over its directional and
    coordinate derivatives together, plus ``"direction"`` for the all-tensor directions.

    A layer becomes such an f with a random upstream gradient ``dout``:
    ``f = lambda p: float(np.sum(layer.forward(**p)[0] * dout))``, whose gradient is what
    ``layer.backward(dout, cache)`` returns.
    """
    for name, x in inputs.items():
        if x.dtype != np.float64:
            raise NpgptError(f"gradcheck needs float64 inputs, {name} is {x.dtype}; cast with .astype(np.float64)")
        if name not in grads or grads[name].shape != x.shape:
            raise NpgptError(f"gradcheck: the analytic gradient of {name} is missing or misshaped")
    rng = np.random.default_rng(seed)

    def derivative(direction: dict[str, np.ndarray]) -> tuple[float, float]:
        """(analytic, numeric) derivative of f along ``direction`` (a sparse dict of tensors)."""
        plus = {k: (v + h * direction[k] if k in direction else v) for k, v in inputs.items()}
        minus = {k: (v - h * direction[k] if k in direction else v) for k, v in inputs.items()}
        numeric = (float(f(plus)) - float(f(minus))) / (2 * h)
        analytic = sum(float(np.sum(grads[k] * d)) for k, d in direction.items())
        return analytic, numeric

    def unit(shape: tuple[int, ...]) -> np.ndarray:
        d = rng.standard_normal(shape)
        return d / np.linalg.norm(d)

    errors: dict[str, float] = {}
    for name, x in inputs.items():
        pairs = [derivative({name: unit(x.shape)}) for _ in range(n_directions)]
        for flat in rng.choice(x.size, size=min(n_coords, x.size), replace=False):
            e = np.zeros(x.shape)
            e[np.unravel_index(flat, x.shape)] = 1.0
            pairs.append(derivative({name: e}))
        errors[name] = rel_error([a for a, _ in pairs], [n for _, n in pairs])

    total = np.sqrt(len(inputs))
    pairs = [derivative({k: unit(v.shape) / total for k, v in inputs.items()}) for _ in range(n_directions)]
    errors["direction"] = rel_error([a for a, _ in pairs], [n for _, n in pairs])
    return errors


def check_model(model: object, ids: np.ndarray, targets: np.ndarray, **kwargs: object) -> dict[str, float]:
    """gradcheck of a float64 ``GPTModel``'s loss with respect to every parameter tensor.

    The model must be in eval mode (or have drop_rate 0) so the loss is a deterministic
    function of the parameters.
    """
    from npgpt.model import GPTModel  # local: model imports nothing from here

    if not isinstance(model, GPTModel):
        raise NpgptError("check_model expects an npgpt.GPTModel")
    if model.training and model.cfg.drop_rate > 0:
        raise NpgptError("check_model needs a deterministic loss; call model.eval() first")
    _, grads = model.loss_and_grads(ids, targets)
    original = model.params

    def loss_at(params: dict[str, np.ndarray]) -> float:
        model.params = params
        try:
            return model.loss(ids, targets)
        finally:
            model.params = original

    return gradcheck(loss_at, original, grads, **kwargs)  # type: ignore[arg-type]
