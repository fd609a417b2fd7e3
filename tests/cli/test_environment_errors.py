"""The machine's answers (a full disk, a path through a file, a damaged results file, a seed no
generator takes) are bad input, one line and exit 2, never "a bug in npgpt"."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from npgpt.config import GPTConfig
from parity.cli import main
from parity.engine import random_params
from parity.weights import save_weights


def run(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_full_disk_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    import parity.weights

    cfg = GPTConfig.preset("tiny", qkv_bias=True)
    src = tmp_path / "w.npz"
    save_weights(src, cfg, random_params(cfg, 0))

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(parity.weights, "save_weights", full)
    code, text = run(capsys, "convert", src, tmp_path / "out.safetensors")
    assert code == 2 and "No space left on device (free some space" in text and "bug in npgpt" not in text, text


def test_a_path_through_a_file_is_one_line_and_exit_2(capsys, tmp_path):
    pytest.importorskip("safetensors")
    (tmp_path / "file").write_text("not a directory")
    code, text = run(capsys, "golden", "write", tmp_path / "file" / "bundle")
    assert code == 2 and "Not a directory" in text and "bug in npgpt" not in text, text


def test_a_truncated_results_file_is_one_line_and_exit_2(capsys, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    bundle = tmp_path / "bundle"
    assert run(capsys, "golden", "write", bundle, "--steps", "1")[0] == 0
    results = tmp_path / "results.safetensors"
    save_file({"logits": np.zeros((2, 16, 512))}, str(results))
    results.write_bytes(results.read_bytes()[:-100])
    code, text = run(capsys, "golden", "verify", bundle, results)
    assert code == 2 and "cannot read it as safetensors/npz" in text and "bug in npgpt" not in text, text


def test_a_seed_no_generator_takes_is_bad_input(capsys):
    code, text = run(capsys, "check", "--config", "tiny", "--seed", "99999999999999999999999")
    assert code == 2 and "--seed" in text, text


def test_a_disk_that_fills_while_the_check_spills_is_one_line_and_exit_2(capsys, monkeypatch):
    """NumPy's np.save reports a short write as an OSError with no errno ("Not enough free space to
    write ..."): the check's spill tells it as a full disk and where, not as a bug in npgpt."""
    pytest.importorskip("torch")
    import parity.engine

    real = np.save

    def full(path, array, **kwargs):
        if array.size > 1000:  # the first large tensor finds the disk full
            raise OSError(f"Not enough free space to write {array.nbytes} bytes after offset 128")
        real(path, array, **kwargs)

    monkeypatch.setattr(parity.engine.np, "save", full)
    code, text = run(capsys, "check", "--config", "tiny", "--steps", "1", "--quiet")
    assert code == 2, text
    assert "No space left on device for the check's spill" in text and "TMPDIR" in text
    assert "bug in npgpt" not in text
