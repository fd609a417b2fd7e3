"""One run per --out: a second train or demo into a directory a run holds is refused (exit 2, the
holder's pid), its files untouched; a killed holder never blocks the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from npgpt.files import LOCK, run_lock
from parity.cli import main


def run(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_second_run_into_a_held_directory_is_refused_and_touches_nothing(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    live = out / "checkpoint.npz.npgpt-partial-abcd1234.tmp"  # the first run's save in progress
    live.write_bytes(b"being written")
    with run_lock(out):
        for command in (["train", "--config", "tiny", "--epochs", "1"], ["demo"]):
            code, text = run(capsys, *command, "--out", out)
            assert code == 2 and f"is in use by another npgpt run (pid {os.getpid()})" in text, text
            assert live.read_bytes() == b"being written"
    code, text = run(capsys, "train", "--config", "tiny", "--epochs", "1", "--max-steps", "1", "--out", out)
    assert code == 0, text  # released: the next run goes on


def test_a_killed_holder_releases_the_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from npgpt.files import run_lock\nwith run_lock({str(out)!r}):\n    input()"],
        stdin=subprocess.PIPE,
    )
    for _ in range(100):  # until the child holds it
        if (out / LOCK).exists() and (out / LOCK).read_text().strip() == str(holder.pid):
            break
        time.sleep(0.05)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(out):  # taken at once: the kernel released the dead process's lock
        assert (out / LOCK).read_text().strip() == str(os.getpid())


def test_a_second_sigterm_during_a_save_finishes_the_save_and_exits_143(capsys, tmp_path, monkeypatch):
    """Two SIGTERMs arrive while the checkpoint is being written: the save completes (a loadable
    checkpoint), then the run stops with 143, no traceback."""
    import npgpt.files
    from npgpt.checkpoint import load_checkpoint

    real_fsync, sent = npgpt.files.os.fsync, []

    def fsync_under_signals(fd):
        if not sent:  # the first save: both signals land in the middle of it
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_fsync(fd)

    monkeypatch.setattr(npgpt.files.os, "fsync", fsync_under_signals)
    out = tmp_path / "run"
    code, text = run(capsys, "train", "--config", "tiny", "--context-length", "16", "--eval-freq", "1", "--out", out)
    assert code == 143 and "finishing the checkpoint being saved, then stopping" in text, text
    assert "Traceback" not in text
    load_checkpoint(out / "checkpoint.npz")  # whole and loadable
