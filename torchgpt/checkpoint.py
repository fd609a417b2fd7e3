"""Save and load model + optimizer the book's way (one ``torch.save`` dict), atomically, and
load with ``weights_only=True`` (no pickle code execution)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from npgpt.errors import NpgptError
from npgpt.files import atomic_write


def save_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra: Any
) -> None:
    """``{"model_state_dict", "optimizer_state_dict", **extra}`` written to a temp file and renamed.
    Non-finite weights are refused: a checkpoint is always something worth resuming."""
    raw = getattr(model, "module", model)  # unwrap DDP / compile
    raw = getattr(raw, "_orig_mod", raw)
    bad = [k for k, p in raw.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise NpgptError(f"refusing to save non-finite weights ({len(bad)} tensors, first {bad[0]}) to {path}")
    payload: dict[str, Any] = {"model_state_dict": raw.state_dict(), **extra}
    if optimizer is not None:
        payload["optimizer_state_dict"] = optimizer.state_dict()
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise NpgptError(f"checkpoint {path} does not exist; pass the .pth written by `npgpt train --impl torch`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        text = str(exc).strip()
        # a real pickle of Python objects, refused (garbage says "operand"); torch 2.13 writes "GLOBAL"
        if "unsupported global" in text.lower():
            raise NpgptError(
                f"{path} needs pickle to load (it holds Python objects besides tensors), which is refused for "
                "safety; save a plain state_dict instead, or convert it from a trusted copy"
            ) from None
        first = textwrap.shorten(text.splitlines()[0] if text else type(exc).__name__, 140, placeholder=" ...")
        raise NpgptError(f"checkpoint {path} is corrupt or not a torch checkpoint ({first})") from None


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict`` with a one-line error naming missing, unexpected and misshaped tensors."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        raise NpgptError(
            f"checkpoint does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"misshaped {misshaped[:3]}; it was saved from another config"
        )
    model.load_state_dict(state_dict)
