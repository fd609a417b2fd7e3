"""What ``npgpt check --impl`` can name: the implementation under test (NumPy is always the
reference).

    torchgpt                 the book's PyTorch model in this repository (the default)
    hf, hf-sdpa              transformers' GPT2LMHeadModel, eager or SDPA attention (the hf extra)
    path/to/file.py:Name     a torch nn.Module class (built from the book's config dict, or from
                             a GPT2Config when it is a transformers model) or a factory function
                             taking the config dict; its layout is detected from its keys
    package.module:Name      the same, from an importable module; or a class implementing the
                             adapter protocol (docs/adapters.md), constructed with no arguments
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from parity.adapters import TorchImpl
from parity.hf_model import HFModelImpl, hf_model
from parity.torch_module import TorchModuleImpl, hf_config

BUILTIN = ("torchgpt", "hf", "hf-sdpa")


def resolve(spec: str, device: str = "cpu") -> Any:
    """The implementation ``spec`` names, ready for ``parity.engine.run_check``."""
    if spec == "torchgpt":
        return TorchImpl(device)
    if spec in ("hf", "hf-sdpa"):
        attention = "sdpa" if spec == "hf-sdpa" else "eager"
        _need_transformers()
        return HFModelImpl(f"transformers GPT2LMHeadModel ({attention})", lambda cfg: hf_model(cfg, attention), device)
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise NpgptError(f"--impl {spec}: not one of {', '.join(BUILTIN)}, file.py:Name or package.module:Name")
    obj = getattr(_import(where, spec), name, None)
    if obj is None:
        raise NpgptError(f"--impl {spec}: {where} has no {name!r}")
    if inspect.isclass(obj) and all(hasattr(obj, m) for m in ("load", "loss_and_grads", "optimizer_step")):
        return obj()  # an adapter
    if not callable(obj):
        raise NpgptError(f"--impl {spec}: {name} is neither a class nor a function")
    kind = HFModelImpl if _is_hf_class(obj) else TorchModuleImpl
    return kind(spec, lambda cfg: _construct(obj, cfg, spec), device)


def _is_hf_class(obj: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return False
    return inspect.isclass(obj) and issubclass(obj, PreTrainedModel)


def _need_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise NpgptError("--impl hf needs transformers; pip install 'npgpt[hf]'") from None


def _import(where: str, spec: str) -> Any:
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise NpgptError(f"--impl {spec}: {where} does not exist")
        module_name = f"npgpt_user_{path.stem}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        if loader is None or loader.loader is None:
            raise NpgptError(f"--impl {spec}: cannot import {where}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
        sys.path.insert(0, str(path.resolve().parent))  # its own sibling imports
        try:
            loader.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    try:
        return importlib.import_module(where)
    except ImportError as exc:
        raise NpgptError(f"--impl {spec}: cannot import {where} ({exc}); is it on PYTHONPATH?") from None


def _construct(obj: Any, cfg: GPTConfig, spec: str) -> Any:
    """A transformers model from a GPT2Config; anything else from the book's config dict."""
    if _is_hf_class(obj):
        return obj(hf_config(cfg))
    try:
        return obj(cfg.to_dict())
    except Exception as exc:
        raise NpgptError(
            f"--impl {spec}: {obj.__name__}(cfg) failed with {type(exc).__name__}: {exc}; it is called with the "
            "book's config dict (vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias)"
        ) from None
