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

import dataclasses
import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from parity.adapters import TorchImpl
from parity.hf_model import HFModelImpl, hf_model
from parity.torch_module import TorchModuleImpl, hf_config
from parity.user_code import time_limit, user_raised

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
    module, notes = _import(where, spec)
    obj = getattr(module, name, None)
    if obj is None:
        unloaded = [n for n in notes if ": not loaded: " in n]
        raise NpgptError(f"--impl {spec}: {where} has no {name!r}" + (f" ({unloaded[0]})" if unloaded else ""))
    if inspect.isclass(obj) and all(hasattr(obj, m) for m in ("load", "loss_and_grads", "optimizer_step")):
        impl = obj()  # an adapter
    elif not callable(obj):
        raise NpgptError(f"--impl {spec}: {name} is neither a class nor a function")
    else:
        kind = HFModelImpl if _is_hf_class(obj) else TorchModuleImpl
        impl = kind(spec, lambda cfg: _construct(obj, cfg, spec, impl.notes), device)
        impl.user_code = True  # float64 at check-book's tier too, said when used (parity/engine.py)
    if notes:
        impl.notes = [*notes, *getattr(impl, "notes", [])]
    return impl


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


def _import(where: str, spec: str) -> tuple[Any, list[str]]:
    """(the module, lines for the report). A .py file is loaded as check-book loads a reader's:
    its imports, classes, functions and constants, nothing else at module level, with its folder
    and its package root on the path (parity/user_code.py)."""
    if where.endswith(".py"):
        from parity.user_code import load_file

        path = Path(where)
        if not path.is_file():
            raise NpgptError(f"--impl {spec}: {where} does not exist")
        try:
            loaded = load_file(path)
        except SyntaxError as exc:
            raise NpgptError(f"--impl {spec}: {where} line {exc.lineno}: SyntaxError: {exc.msg}") from None
        notes = [f"{where}: not loaded: {e}" for e in loaded.errors]
        if loaded.summary():
            notes.append(loaded.summary())
        return loaded.module, notes
    try:
        return importlib.import_module(where), []
    except ImportError as exc:
        raise NpgptError(f"--impl {spec}: cannot import {where} ({exc}); is it on PYTHONPATH?") from None


# the check's shape under the names GPT-2 programs give it (nanoGPT's GPTConfig, minGPT's CfgNode ...)
SYNONYMS = {
    "vocab_size": ("vocab_size", "n_vocab"),
    "context_length": ("block_size", "n_positions", "n_ctx", "context_length", "max_seq_len"),
    "emb_dim": ("n_embd", "n_embed", "emb_dim", "d_model", "hidden_size"),
    "n_heads": ("n_head", "n_heads", "num_heads"),
    "n_layers": ("n_layer", "n_layers", "num_layers"),
    "drop_rate": ("dropout", "drop_rate", "embd_pdrop", "resid_pdrop", "attn_pdrop", "dropout_rate"),
    "qkv_bias": ("bias", "qkv_bias"),
}


def _construct(obj: Any, cfg: GPTConfig, spec: str, said: list[str] | None = None) -> Any:
    """A transformers model from a GPT2Config; anything else from the book's config dict, or, when
    it does not take one, from its own config (``own_config``); ``said`` gets one line saying which."""
    if _is_hf_class(obj):
        return obj(hf_config(cfg))
    try:
        with time_limit(f"{spec}: {obj.__name__}(cfg)"):
            return obj(cfg.to_dict())
    except BaseException as exc:
        if not user_raised(exc):
            raise
        first = exc
    unloaded = next((line for line in said or [] if ": not loaded: " in line), "")
    if unloaded and isinstance(first, NameError | ImportError | AttributeError):
        raise NpgptError(f"--impl {spec}: {obj.__name__}(cfg) failed with {type(first).__name__}: {first}; {unloaded}")
    own = own_config(obj, cfg)
    if own is not None:
        config, how = own
        try:
            model = obj(config)
        except BaseException as exc:
            if not user_raised(exc):
                raise
            raise NpgptError(f"--impl {spec}: {obj.__name__}({how}) failed with {type(exc).__name__}: {exc}") from None
        line = f"{spec}: built with {how}, from the check's shape"
        if said is not None and line not in said:
            said.append(line)
        return model
    raise NpgptError(
        f"--impl {spec}: {obj.__name__}(cfg) failed with {type(first).__name__}: {first}; it is called with the "
        "book's config dict (vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate, qkv_bias), or "
        "with a config class of its module (a dataclass named like GPTConfig, or get_default_config())"
    ) from None


def own_config(obj: Any, cfg: GPTConfig) -> tuple[Any, str] | None:
    """(the config object ``obj`` takes, as one line) built from ``cfg``: minGPT's
    ``get_default_config()`` with the check's values, or a dataclass of ``obj``'s module whose name
    ends in Config (nanoGPT's GPTConfig), its fields filled by their GPT-2 names (SYNONYMS)."""
    values = {name: getattr(cfg, ours) for ours, names in SYNONYMS.items() for name in names}
    if callable(getattr(obj, "get_default_config", None)):
        config = obj.get_default_config()
        fields = [k for k in vars(config) if k in values]
        for k in fields:
            setattr(config, k, values[k])
        if hasattr(config, "model_type"):
            config.model_type = None  # the sizes are given, not a named model
        return config, f"{obj.__name__}.get_default_config() with " + ", ".join(f"{k}={values[k]}" for k in fields)
    scope = getattr(getattr(obj, "__init__", None), "__globals__", {})
    for name, kind in scope.items():
        if not (inspect.isclass(kind) and name.endswith("Config") and dataclasses.is_dataclass(kind)):
            continue
        fields = dataclasses.fields(kind)
        needed = [
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if any(n not in values for n in needed):
            continue
        given = {f.name: values[f.name] for f in fields if f.name in values}
        return kind(**given), f"{name}(" + ", ".join(f"{k}={v}" for k, v in given.items()) + ")"
    return None
