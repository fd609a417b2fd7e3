"""Checkpoints: one ``.npz`` file with the parameters, the AdamW state, the training position
and the RNG state, written atomically (temp file, fsync, rename) so a crash never leaves a
half-written checkpoint in place of a good one.

Layout inside the archive: ``params/<key>``, ``adam_m/<key>``, ``adam_v/<key>`` and ``meta``,
a UTF-8 JSON document stored as uint8 (config, step counters, histories, RNG state). No pickle.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from npgpt.params import check_params

FORMAT = "npgpt-checkpoint-v1"
TMP_TAG = ".npgpt-partial-"  # in the name of every temp file atomic_write makes, and only those


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete temp files that an earlier, killed ``atomic_write`` of ``path`` left behind: only
    names of our own making (``<name>.npgpt-partial-<8 characters>.tmp``), nothing else: a user's
    ``<name>.backup01.tmp`` is not ours and stays."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name + TMP_TAG) + r"[a-z0-9_]{8}\.tmp")
    stale = [p for p in path.parent.glob(f"{glob.escape(path.name + TMP_TAG)}*.tmp") if pattern.fullmatch(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
        print(f"npgpt: removed {p}, left by an interrupted save", file=sys.stderr)
    return stale


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename over ``path``.
    Temporaries of earlier saves that were killed mid-write are removed first (and said so)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + TMP_TAG, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_output_dir(out: str | Path, need_bytes: int) -> None:
    """Before the first step: ``out`` can be created and written, and has room for a checkpoint of
    ``need_bytes`` (twice that while the new one is written beside the old)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".npgpt-write-test.")
        os.close(fd)
        os.unlink(probe)  # our own probe file
    except OSError as exc:
        raise NpgptError(f"--out {out}: cannot write there ({exc.strerror}); choose another directory") from None
    free = shutil.disk_usage(out).free
    if free < 2 * need_bytes:
        raise NpgptError(
            f"--out {out}: {free / 1e9:.2f} GB free, a checkpoint needs {need_bytes / 1e9:.2f} GB "
            f"(twice that while it is replaced); free space or choose another directory"
        )


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
