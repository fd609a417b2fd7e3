"""Running the reader's torch object as the book's: the weights loaded by the book's parameter
names (a name in another case taken, extra square layers set to the identity, with notes), the
output and, by autograd, every gradient; the attention dropout replaying the reference's mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from parity.book.cases import NOTES, Example, UnusableError, draw_x, rng_for
from parity.torch_module import replay_dropout


def load_into(module: Any, weights: dict[str, np.ndarray], torch: Any, dtype: Any) -> None:
    """Copy the weights into the module's parameters of the same (book) names; a missing name or a
    wrong shape is UnusableError, with the names the book uses."""
    module.to(dtype)
    params = book_parameters(module, weights)
    missing = [k for k in weights if k not in params]
    if missing:
        have = ", ".join(list(params)[:6]) or "none"
        raise UnusableError(f"no parameter {missing[0]!r} (the book's names: {', '.join(weights)}; it has {have})")
    with torch.no_grad():
        for k, v in weights.items():
            if tuple(params[k].shape) != v.shape:
                raise UnusableError(f"parameter {k!r} has shape {tuple(params[k].shape)}; the book's is {v.shape}")
            params[k].copy_(torch.from_numpy(np.ascontiguousarray(v)))
        taken = {id(p) for p in params.values()}
        set_extras(module, {k: p for k, p in module.named_parameters() if id(p) not in taken}, torch)


def book_parameters(module: Any, names: Iterable[str]) -> dict[str, Any]:
    """The module's parameters under the book's ``names``; a name the reader spelled in another
    case (w_query.weight for W_query.weight) is taken, with a note."""
    params = dict(module.named_parameters())
    folded: dict[str, list[str]] = {}
    for k in params:
        folded.setdefault(k.lower(), []).append(k)
    out, renamed = {}, []
    for k in names:
        if k in params:
            out[k] = params[k]
        elif len(folded.get(k.lower(), [])) == 1:
            out[k] = params[folded[k.lower()][0]]
            renamed.append(f"{folded[k.lower()][0]} for {k}")
    if renamed:
        NOTES.append(
            f"(parameter names that differ from the book's only in case, taken as the book's: {', '.join(renamed[:4])})"
        )
    return out


def set_extras(module: Any, extra: dict[str, Any], torch: Any) -> None:
    """Parameters the book's class does not have: a square linear layer (the out_proj some
    wrappers add) is set to the identity, so the rest is compared as the book's; any other is left
    as the reader's code initialised it. Either way a note names them."""
    layers: dict[str, dict[str, Any]] = {}
    for k, p in extra.items():
        prefix, _, leaf = k.rpartition(".")
        layers.setdefault(prefix, {})[leaf] = p
    identity, left = [], []
    for prefix, found in layers.items():
        w, b = found.get("weight"), found.get("bias")
        if set(found) <= {"weight", "bias"} and w is not None and w.ndim == 2 and w.shape[0] == w.shape[1]:
            w.copy_(torch.eye(w.shape[0], dtype=w.dtype))
            if b is not None:
                b.zero_()
            identity.append(prefix)
        else:
            left += [f"{prefix}.{leaf}" if prefix else leaf for leaf in found]
    name = type(module).__name__
    if identity:
        NOTES.append(
            f"(your {name} has {', '.join(identity)}, which the book's does not: compared with it set to the identity)"
        )
    if left:
        NOTES.append(f"(your {name} has parameters the book's does not, left as initialised: {', '.join(left[:6])})")


def output_of(out: Any, module: Any) -> Any:
    """A module's output; of a KV cache's (output, new cache), the first."""
    if isinstance(out, tuple) and out and hasattr(out[0], "shape"):
        NOTES.append(f"({type(module).__name__} returns {len(out)} values: the first, its output, is compared)")
        return out[0]
    return out


def run_module(module: Any, weights: dict[str, np.ndarray], x: np.ndarray, dout_salt: int, case: Example, torch, dtype):
    """The module's output and, by autograd of sum(out * dout), the gradients of x (when float)
    and of every weight."""
    load_into(module, weights, torch, dtype)
    module.eval()
    xt = torch.from_numpy(x)
    if xt.is_floating_point():
        xt.requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    out = output_of(module(xt), module)
    dout = draw_x(case, np_dtype(dtype, torch), dout_salt, tuple(out.shape))  # the reference draws the same
    (out * torch.from_numpy(dout)).sum().backward()
    params = book_parameters(module, weights)
    got = {"output": out.detach().numpy()}
    if xt.is_floating_point():
        got["grad input"] = xt.grad.numpy()
    for k in weights:
        grad = params[k].grad
        got[f"grad {k}"] = np.zeros_like(weights[k]) if grad is None else grad.numpy()
    return got


def cast(weights: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
    return {k: v.astype(dtype) for k, v in weights.items()}


DROP_RATE = 0.1


def keep_mask(case: Example, heads: int) -> np.ndarray:
    """The attention-weight keep mask of the train-mode output: (B, heads, T, T)."""
    return rng_for(case, 9).random((case.B, heads, case.T, case.T)) >= DROP_RATE


def replay_attention_dropout(torch: Any, keep: Any) -> Any:
    """The reader's attention dropout replaying the reference's one keep mask (torch_module's
    replay_dropout), refusing a tensor that is not the attention weights."""

    def mask_for(x: Any) -> Any:
        if x.numel() != keep.numel():
            raise UnusableError(
                f"in train mode its dropout got a tensor of shape {tuple(x.shape)}; the book applies it to the "
                f"attention weights {tuple(keep.shape)}"
            )
        return keep.reshape(x.shape).to(x.dtype)

    return replay_dropout(torch, DROP_RATE, mask_for)


def np_dtype(dtype: Any, torch: Any) -> np.dtype:
    return np.dtype(np.float32 if dtype == torch.float32 else np.float64)
