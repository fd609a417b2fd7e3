"""Checkpoints: one ``.npz`` file with the parameters, the AdamW state, the training position
and the RNG state, written atomically (temp file, fsync, rename) so a crash never leaves a
half-written checkpoint in place of a good one.

Layout inside the archive: ``params/<key>``, ``adam_m/<key>``, ``adam_v/<key>`` and ``meta``,
a UTF-8 JSON document stored as uint8 (config, step counters, histories, RNG state). No pickle.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from npgpt.files import atomic_write
from npgpt.params import check_params

FORMAT = "npgpt-checkpoint-v1"


def save_checkpoint(
    path: str | Path,
    cfg: GPTConfig,
    params: dict[str, np.ndarray],
    optimizer_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write params (+ AdamW ``state_dict()``) + JSON-serialisable ``meta`` to ``path`` atomically.
    Non-finite weights are refused: a checkpoint is always something worth resuming."""
    check_params(params, cfg)
    bad = [k for k, v in params.items() if not np.isfinite(v).all()]
    if bad:
        raise NpgptError(f"refusing to save non-finite weights ({len(bad)} tensors, first {bad[0]}) to {path}")
    arrays = {f"params/{k}": v for k, v in params.items()}
    info: dict[str, Any] = {"format": FORMAT, "config": cfg.to_dict(), **(meta or {})}
    if optimizer_state is not None:
        arrays.update({f"adam_m/{k}": v for k, v in optimizer_state["m"].items()})
        arrays.update({f"adam_v/{k}": v for k, v in optimizer_state["v"].items()})
        info["optimizer"] = {k: v for k, v in optimizer_state.items() if k not in ("m", "v")}
    arrays["meta"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str | Path) -> tuple[GPTConfig, dict[str, np.ndarray], dict[str, Any] | None, dict[str, Any]]:
    """Returns ``(cfg, params, optimizer_state or None, meta)``; validates everything it reads."""
    path = Path(path)
    if not path.is_file():
        raise NpgptError(f"checkpoint {path} does not exist; pass the .npz written by `npgpt train`")
    if path.suffix.lower() in (".safetensors", ".pth", ".pt", ".bin"):
        raise NpgptError(
            f"{path} is a {path.suffix} file, and npgpt reads .npz checkpoints: "
            f"`npgpt convert {path} {path.with_suffix('.npz')}` makes one (or use --impl torch for .pth)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise NpgptError(f"checkpoint {path} is corrupt or truncated ({exc}); use an earlier checkpoint") from None
    if "meta" not in data:
        raise NpgptError(f"{path} is not an npgpt checkpoint (no meta record)")
    try:
        meta = json.loads(data.pop("meta").tobytes().decode())
    except ValueError:  # not UTF-8, not JSON
        raise NpgptError(f"checkpoint {path} has a damaged meta record; use an earlier checkpoint") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise NpgptError(f"checkpoint {path} has a damaged meta record (no config); use an earlier checkpoint")
    if meta.get("format") != FORMAT:
        raise NpgptError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    cfg = GPTConfig.from_dict(meta.pop("config"))
    params = {k.removeprefix("params/"): v for k, v in data.items() if k.startswith("params/")}
    check_params(params, cfg)
    opt = meta.pop("optimizer", None)
    if opt is not None:
        opt["m"] = {k.removeprefix("adam_m/"): v for k, v in data.items() if k.startswith("adam_m/")}
        opt["v"] = {k.removeprefix("adam_v/"): v for k, v in data.items() if k.startswith("adam_v/")}
        for name in ("m", "v"):
            if opt[name].keys() != params.keys():
                raise NpgptError(f"checkpoint {path}: AdamW state {name} does not match the parameters")
    return cfg, params, opt, meta
