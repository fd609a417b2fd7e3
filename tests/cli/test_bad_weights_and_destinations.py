"""Weights that are not finite are bad input (check exits 2, convert refuses unless asked), and
convert --force replaces a regular file only, never a device or a FIFO."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from npgpt.config import GPTConfig
from parity.cli import main
from parity.engine import random_params
from parity.weights import save_weights

TINY = GPTConfig.preset("tiny", qkv_bias=True)


def run(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def nan_weights(tmp_path):
    """A .safetensors file with 5 NaN, as a user's own training might leave it (npgpt's savers refuse)."""
    safetensors = pytest.importorskip("safetensors")
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "nan.safetensors"
    save_weights(path, TINY, random_params(TINY, 0))
    with safetensors.safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    tensors["transformer.h.1.mlp.c_fc.weight"][3, :5] = np.nan  # HF names: npgpt's .safetensors layout
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_check_refuses_weights_that_hold_nan(capsys, nan_weights):
    pytest.importorskip("torch")
    code, text = run(capsys, "check", "--weights", nan_weights, "--steps", "1")
    assert code == 2 and "holds 5 non-finite values (NaN or inf)" in text, text
    assert "PASS" not in text


def test_convert_refuses_nan_unless_asked(capsys, nan_weights, tmp_path):
    out = tmp_path / "out.safetensors"
    code, text = run(capsys, "convert", nan_weights, out)
    assert code == 2 and "holds 5 non-finite values" in text and "--allow-nonfinite" in text and not out.exists()
    code, text = run(capsys, "convert", nan_weights, out, "--allow-nonfinite")
    assert code == 0 and out.is_file(), text


def test_convert_force_never_replaces_a_fifo(capsys, tmp_path):
    src = tmp_path / "w.npz"
    save_weights(src, TINY, random_params(TINY, 0))
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    code, text = run(capsys, "convert", src, fifo, "--force")
    assert code == 2 and "is not a regular file" in text, text
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the FIFO
    link = tmp_path / "null.npz"
    link.symlink_to("/dev/null")
    code, text = run(capsys, "convert", src, link, "--force")
    assert code == 2 and "is not a regular file" in text and link.is_symlink(), text
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_killed_openai_converts_directory_is_removed_by_the_next(capsys, tmp_path):
    pytest.importorskip("tensorflow")
    src = tmp_path / "w.npz"
    save_weights(src, TINY, random_params(TINY, 0))
    stale = tmp_path / "124M.npgpt-partial-abcd1234.tmp"  # what a kill -9 during the save leaves
    stale.mkdir()
    (stale / "model.ckpt.data-00000-of-00001").write_bytes(b"x" * 1000)
    mine = tmp_path / "124M.backup.tmp"  # not ours: stays
    mine.mkdir()
    code, text = run(capsys, "convert", src, tmp_path / "124M")
    assert code == 0 and not stale.exists() and mine.is_dir(), text
    assert "left by an interrupted save" in text
    assert not [p for p in tmp_path.iterdir() if "npgpt-partial" in p.name]
