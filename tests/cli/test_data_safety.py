"""Issue 8's trial, replayed: nothing a user owns is deleted or overwritten, and what fails says so."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from npgpt import GPTConfig
from parity.cli import main
from parity.engine import random_params
from parity.weights import save_weights

TINY = GPTConfig(vocab_size=97, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


def _digest(root: Path) -> dict[str, str]:
    """Every file under root with its sha256: the state a command must leave alone."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture
def weights(tmp_path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    return save_weights(models / "w.npz", TINY, {k: v.astype(np.float32) for k, v in random_params(TINY, 0).items()})


@pytest.mark.parametrize(
    ("dst", "message"),
    [
        ("models", "is SRC or contains it"),  # the trial: deleted models/, the source included
        (".", "is SRC or contains it"),  # the trial: a ValueError traceback
        ("other", "is an existing directory"),  # any directory that exists
        ("models/w.npz", "is SRC or contains it"),  # the trial: stripped the training state
        ("models/notes.txt", "exists; pass --force"),  # the trial: overwritten without a word
    ],
)
def test_convert_never_touches_an_existing_destination(tmp_path, monkeypatch, capsys, weights, dst, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.bin").write_bytes(b"x")
    before = _digest(tmp_path)
    assert main(["convert", "models/w.npz", dst]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert _digest(tmp_path) == before


def test_convert_force_replaces_a_file_but_never_a_directory(tmp_path, monkeypatch, capsys, weights):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.npz").write_bytes(b"stale")
    assert main(["convert", "models/w.npz", "old.npz", "--force"]) == 0
    assert (tmp_path / "old.npz").read_bytes() == (tmp_path / "models" / "w.npz").read_bytes()
    before = _digest(tmp_path)
    assert main(["convert", "models/w.npz", "models", "--force"]) == 2
    assert _digest(tmp_path) == before
    assert not list(tmp_path.rglob("*.tmp"))
