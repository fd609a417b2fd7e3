"""Files written safely, for both implementations' checkpoints and the converters: atomic
replacement (temp file, fsync, rename), cleanup of our own stale temporaries, and an output
directory checked for writability and room before a run starts. No math lives here, which is
why torchgpt may borrow it (docs/contributing.md, "Import boundaries")."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from npgpt.errors import NpgptError

TMP_TAG = ".npgpt-partial-"  # in the name of every temp file atomic_write makes, and only those
SAVING = [False]  # True while atomic_write writes: a second Ctrl-C/SIGTERM then waits for the save to finish


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete temp files that an earlier, killed ``atomic_write`` of ``path`` left behind: only
    names of our own making (``<name>.npgpt-partial-<8 characters>.tmp``), nothing else: a user's
    ``<name>.backup01.tmp`` is not ours and stays."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name + TMP_TAG) + r"[a-z0-9_]{8}\.tmp")
    stale = [p for p in path.parent.glob(f"{glob.escape(path.name + TMP_TAG)}*.tmp") if pattern.fullmatch(p.name)]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)  # an OpenAI checkpoint directory that was being written
        else:
            p.unlink(missing_ok=True)
        print(f"npgpt: removed {p}, left by an interrupted save", file=sys.stderr)
    return stale


LOCK = ".npgpt-run.lock"  # in a run directory: held (flock) by the one run writing there


@contextlib.contextmanager
def run_lock(out: str | Path, who: str = "run") -> Iterator[None]:
    """Hold an advisory lock on the run directory ``out`` (created if needed) while the block runs:
    a second run into the same directory, new or resumed, is refused with the holder's pid instead
    of deleting the first run's live temporaries as "left by an interrupted save". The kernel
    releases the lock when the process dies, so a killed run never blocks the next one."""
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise NpgptError(f"--out {out}: cannot write there ({exc.strerror}); choose another directory") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise NpgptError(
                f"{out} is in use by another npgpt {who} (pid {holder}); let it end, or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if created and [p.name for p in out.iterdir()] == [LOCK]:  # refused before it wrote anything: no trace
            (out / LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()
        os.close(fd)  # releases the lock


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename over ``path``.
    Temporaries of earlier saves that were killed mid-write are removed first (and said so)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + TMP_TAG, suffix=".tmp")
    SAVING[0] = True
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        SAVING[0] = False
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
