"""Device selection with a one-line error for a device that is not there."""

from __future__ import annotations

import torch

from npgpt.errors import NpgptError


def pick_device(name: str = "auto") -> torch.device:
    """ "auto" picks cuda, then mps, then cpu; "cuda"/"mps" without one is an error, not a fallback."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NpgptError("device cuda requested but CUDA is not available; use --device cpu or auto")
    if name == "mps" and not has_mps:
        raise NpgptError("device mps requested but MPS is not available; use --device cpu or auto")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise NpgptError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)
