"""Read and write GPT-2 weights in four formats, detected from the path:

- OpenAI's TensorFlow checkpoint directory (``checkpoint``, ``hparams.json``, ``model.ckpt.*``),
  read with ``tf.train.load_variable`` and written with a TF1 Saver — the ``openai`` extra;
- Hugging Face ``model.safetensors`` (GPT2LMHeadModel names) — the ``hf`` extra, no TensorFlow;
- ``.npz``: npgpt's checkpoint format (so ``npgpt generate`` runs converted weights);
- ``.pth``: torchgpt's checkpoint format (``{"config", "model_state_dict"}``), or a bare
  ``state_dict`` as the book saves it.

Every writer is atomic: a temp file or directory, then a rename.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from npgpt.checkpoint import load_checkpoint, save_checkpoint
from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from npgpt.files import TMP_TAG, atomic_write, remove_stale_temporaries
from npgpt.params import check_params
from parity.mapping import KNOWN_HEADS, from_gpt2, gpt2_to_hf_names, hf_to_gpt2_names, to_gpt2


@dataclasses.dataclass(frozen=True)
class WeightFormat:
    """One weights format: how to recognise it, read it and write it. ``FORMATS`` (the registry,
    at the end of this module) is the one list that the loader, the writer, ``npgpt convert``'s
    choices and the docs read; a new format is one entry there (docs/contributing.md)."""

    name: str
    suffixes: tuple[str, ...]  # file suffixes; () for a directory format
    marker: str  # the file that identifies a directory in this format
    description: str
    load: Callable[[Path], tuple[GPTConfig, dict[str, np.ndarray]]]
    save: Callable[[Path, GPTConfig, dict[str, np.ndarray]], None]


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        for fmt in FORMATS.values():
            if (path / fmt.marker).is_file():
                return fmt.name
        markers = " or ".join(f.marker for f in FORMATS.values() if f.marker)
        raise NpgptError(f"{path} is a directory without {markers}")
    for fmt in FORMATS.values():
        if path.suffix.lower() in fmt.suffixes:
            return fmt.name
    if not path.exists():
        raise NpgptError(f"{path} does not exist")
    known = ", ".join(x for f in FORMATS.values() for x in f.suffixes)
    raise NpgptError(f"cannot tell the format of {path}; use an OpenAI checkpoint directory or a {known} file")


def load_weights(path: str | Path) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """(cfg, params) from any supported format; params are keyed like the book's state_dict."""
    path = Path(path)
    if not path.exists():
        raise NpgptError(f"weights {path} do not exist")
    fmt = detect_format(path)
    if path.is_dir() and fmt != "openai":
        path = path / FORMATS[fmt].marker
    try:
        cfg, params = FORMATS[fmt].load(path)
        check_params(params, cfg)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, NpgptError):
            raise
        # bytes that parse but do not hold what the format promises (fuzzed in tests/parity/test_fuzz_loaders.py)
        detail = textwrap.shorten(f"{type(exc).__name__}: {exc}", 120, placeholder=" ...")
        raise NpgptError(f"{path} is not valid {fmt} weights ({detail}); check the file or download it again") from None
    return cfg, params


def save_weights(
    path: str | Path,
    cfg: GPTConfig,
    params: dict[str, np.ndarray],
    format: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write (cfg, params) as ``format`` (default: from the path: a name without a suffix means
    an OpenAI directory). Returns the path written.

    Nothing that exists is touched unless ``overwrite``: then an existing *file* is replaced by
    an atomic rename of a finished temp sibling. An existing directory is never replaced (it may
    hold files this function did not write)."""
    path = Path(path)
    check_params(params, cfg)
    check_destination(path, overwrite)
    fmt = format or ("openai" if path.suffix == "" else detect_format(path))
    if fmt not in FORMATS:
        raise NpgptError(f"unknown weights format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "openai" and path.exists():
        raise NpgptError(f"{path} exists and is not a directory; an OpenAI checkpoint needs a new directory name")
    FORMATS[fmt].save(path, cfg, params)
    return path


def check_destination(path: str | Path, overwrite: bool = False) -> None:
    """Refuse a destination that exists (a file, unless ``overwrite``; a directory, always; anything
    else, such as a device, a FIFO or a socket, always: --force replaces a regular file only)."""
    path = Path(path)
    if path.is_dir():
        raise NpgptError(f"{path} is an existing directory; name a new directory or a .safetensors/.npz/.pth file")
    if path.exists() and not path.is_file():
        raise NpgptError(
            f"{path} exists and is not a regular file (a device, FIFO or socket); choose another destination"
        )
    if path.exists() and not overwrite:
        raise NpgptError(f"{path} exists; pass --force to replace it, or choose another destination")


def check_finite(params: dict[str, np.ndarray], what: str, fix: str) -> None:
    """Weights that hold NaN or inf are bad input: one line naming the first such tensor and its count."""
    for name, value in params.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            raise NpgptError(f"{what}: {name} holds {bad:,} non-finite values (NaN or inf) of {value.size:,}; {fix}")


# --- OpenAI TensorFlow checkpoint -------------------------------------------------------------


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise NpgptError("OpenAI checkpoints need TensorFlow; pip install 'npgpt[openai]'") from None
    return tf


def _load_openai(model_dir: Path) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    tf = _tf()
    hparams = json.loads((model_dir / "hparams.json").read_text())
    ckpt = tf.train.latest_checkpoint(str(model_dir)) or str(model_dir / "model.ckpt")
    try:
        names = [name for name, _ in tf.train.list_variables(ckpt)]
        tensors = {name.removeprefix("model/"): tf.train.load_variable(ckpt, name) for name in names}
    except Exception as exc:  # TF raises several types for a missing or damaged checkpoint
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise NpgptError(f"cannot read the TF checkpoint in {model_dir} ({first}); download it again") from None
    cfg, params = from_gpt2(tensors, n_heads=hparams["n_head"])
    if (cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_layers) != (
        hparams["n_vocab"], hparams["n_ctx"], hparams["n_embd"], hparams["n_layer"]
    ):  # fmt: skip
        raise NpgptError(f"{model_dir}/hparams.json does not match the checkpoint's tensor shapes")
    return cfg, params


def _save_openai(model_dir: Path, cfg: GPTConfig, params: dict[str, np.ndarray]) -> None:
    tf = _tf()
    tensors = {f"model/{k}": np.asarray(v, dtype=np.float32) for k, v in to_gpt2(cfg, params, True).items()}
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(model_dir)  # a killed convert's directory, by its tag
    tmp = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=model_dir.name + TMP_TAG, suffix=".tmp"))
    try:
        graph = tf.Graph()
        with graph.as_default():
            assigns, feeds = [], {}
            for name, value in tensors.items():
                var = tf.compat.v1.get_variable(
                    name, shape=value.shape, dtype=tf.float32, initializer=tf.compat.v1.zeros_initializer()
                )
                placeholder = tf.compat.v1.placeholder(tf.float32, shape=value.shape)  # no constants in .meta
                assigns.append(var.assign(placeholder))
                feeds[placeholder] = value
            saver = tf.compat.v1.train.Saver()
            with tf.compat.v1.Session(graph=graph) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                sess.run(assigns, feed_dict=feeds)
                saver.save(sess, str(tmp / "model.ckpt"), write_meta_graph=True)
        # relative paths, as in OpenAI's files, so the directory can move
        (tmp / "checkpoint").write_text(
            'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
        )
        hparams = {
            "n_vocab": cfg.vocab_size,
            "n_ctx": cfg.context_length,
            "n_embd": cfg.emb_dim,
            "n_head": cfg.n_heads,
            "n_layer": cfg.n_layers,
        }
        (tmp / "hparams.json").write_text(json.dumps(hparams, indent=2))
        os.rename(tmp, model_dir)  # a finished directory moves into place; an existing one is never replaced
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temp directory, nothing else
        raise


# --- Hugging Face safetensors -----------------------------------------------------------------


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError:
        raise NpgptError("safetensors weights need the safetensors package; pip install 'npgpt[hf]'") from None
    return st


def _load_safetensors(file: Path) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    st = _safetensors()
    try:
        tensors = st.load_file(str(file))
        from safetensors import safe_open

        with safe_open(str(file), framework="numpy") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise NpgptError(f"{file} is not a readable safetensors file ({str(exc)[:120]})") from None
    n_heads = None
    drop_rate = 0.1
    if "npgpt_config" in metadata:
        saved = GPTConfig.from_dict(json.loads(metadata["npgpt_config"]))
        n_heads, drop_rate = saved.n_heads, saved.drop_rate
    elif (file.parent / "config.json").is_file():
        hf_cfg = json.loads((file.parent / "config.json").read_text())
        n_heads = hf_cfg.get("n_head")
    cfg, params = from_gpt2(hf_to_gpt2_names(tensors), n_heads=n_heads, drop_rate=drop_rate)
    if "npgpt_config" in metadata and not saved.qkv_bias:  # written from a model without qkv biases
        cfg = cfg.replace(qkv_bias=False)
        params = {
            k: v
            for k, v in params.items()
            if not k.endswith(tuple(f"{n}.bias" for n in ("W_query", "W_key", "W_value")))
        }
    return cfg, params


def _save_safetensors(file: Path, cfg: GPTConfig, params: dict[str, np.ndarray]) -> None:
    st = _safetensors()
    tensors = {k: np.ascontiguousarray(v) for k, v in gpt2_to_hf_names(to_gpt2(cfg, params, False)).items()}
    data = st.save(tensors, metadata={"npgpt_config": json.dumps(cfg.to_dict()), "format": "pt"})
    atomic_write(file, lambda f: f.write(data))


# --- torch .pth -------------------------------------------------------------------------------


def _load_pth(path: Path) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    try:
        from torchgpt.checkpoint import load_checkpoint as load_torch
    except ImportError:
        raise NpgptError(".pth weights need PyTorch; pip install 'npgpt[torch]'") from None
    state = load_torch(path)
    if "model_state_dict" in state:
        sd, raw_cfg = state["model_state_dict"], state.get("config")
    else:
        sd, raw_cfg = state, None
    params = {k: v.detach().cpu().numpy() for k, v in sd.items() if not k.endswith(".att.mask")}
    if raw_cfg is not None:
        return GPTConfig.from_dict(raw_cfg), params
    V, C = params["tok_emb.weight"].shape
    if C not in KNOWN_HEADS:
        raise NpgptError(f"{path} is a bare state_dict with emb_dim={C}: n_heads is unknown; save it with its config")
    n_layers = 1 + max(int(k.split(".")[1]) for k in params if k.startswith("trf_blocks."))
    cfg = GPTConfig(V, params["pos_emb.weight"].shape[0], C, KNOWN_HEADS[C], n_layers, 0.1,
                    "trf_blocks.0.att.W_query.bias" in params)  # fmt: skip
    return cfg, params


def _save_pth(path: Path, cfg: GPTConfig, params: dict[str, np.ndarray]) -> None:
    try:
        from parity.convert import to_torch
        from torchgpt.checkpoint import save_checkpoint as save_torch
    except ImportError:
        raise NpgptError(".pth weights need PyTorch; pip install 'npgpt[torch]'") from None
    save_torch(path, to_torch(cfg, params), config=cfg.to_dict())


def _load_npz(path: Path) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    cfg, params, _, _ = load_checkpoint(path)
    return cfg, params


FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat(
            "openai", (), "hparams.json", "OpenAI's TensorFlow checkpoint directory (the openai extra)",
            _load_openai, _save_openai,
        ),
        WeightFormat(
            "safetensors", (".safetensors",), "model.safetensors",
            "Hugging Face GPT2LMHeadModel weights (the hf extra)", _load_safetensors, _save_safetensors,
        ),
        WeightFormat("npz", (".npz",), "", "npgpt's checkpoint (npgpt generate reads it)", _load_npz, save_checkpoint),
        WeightFormat("pth", (".pth", ".pt"), "", "torchgpt's checkpoint or a bare state_dict", _load_pth, _save_pth),
    )
}  # fmt: skip
