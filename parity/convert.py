"""NumPy params <-> torchgpt.GPTModel. The vocabularies are identical (docs/conventions.md, "Names"), so this is a
copy: no renames, no transposes."""

from __future__ import annotations

from typing import Any

import numpy as np

from npgpt.config import GPTConfig, as_config
from npgpt.params import check_params


def to_torch(cfg: GPTConfig | dict[str, Any], params: dict[str, np.ndarray], dtype: Any = None) -> Any:
    """A torchgpt.GPTModel holding copies of ``params`` (dtype: a torch dtype, default the params')."""
    import torch

    from torchgpt.checkpoint import load_model_state
    from torchgpt.model import GPTModel

    cfg = as_config(cfg)
    check_params(params, cfg)
    model = GPTModel(cfg)
    if dtype is None:
        dtype = torch.float64 if next(iter(params.values())).dtype == np.float64 else torch.float32
    model.to(dtype)
    state = {k: v for k, v in model.state_dict().items() if k.endswith(".att.mask")}  # buffers stay
    state.update({k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in params.items()})
    load_model_state(model, state)
    return model


def to_numpy(model: Any) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """(cfg, params) from a torchgpt.GPTModel (DDP- and compile-wrapped models are unwrapped)."""
    from torchgpt.model import config_of

    raw = getattr(model, "module", model)
    raw = getattr(raw, "_orig_mod", raw)
    cfg = config_of(raw)
    params = {k: v.detach().cpu().numpy().copy() for k, v in raw.state_dict().items() if not k.endswith(".att.mask")}
    check_params(params, cfg)
    return cfg, params
