"""Issue 8's trial, replayed: nothing a user owns is deleted or overwritten, and what fails says so."""

from __future__ import annotations

import hashlib
import os
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


# --- hyperparameters, divergence, checkpoints (numbered cases 3 and 4) --------------------------

torch = pytest.importorskip("torch")

from npgpt.checkpoint import load_checkpoint as load_npz  # noqa: E402
from torchgpt import load_checkpoint as load_pth  # noqa: E402

RUN = ["--config", "tiny", "--context-length", "16", "--eval-iter", "1", "--sample-tokens", "2", "--drop-rate", "0"]
IMPLS = {"numpy": [], "torch": ["--impl", "torch", "--device", "cpu"]}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("flag", "value"),
    [("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--weight-decay", "nan"), ("--grad-clip", "0"),
     ("--eval-iter", "0"), ("--eval-freq", "0"), ("--seed", "-1"), ("--batch-size", "0"), ("--epochs", "0")],
)  # fmt: skip
def test_bad_hyperparameters_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, impl, flag, value):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *IMPLS[impl], *RUN, flag, value, "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {value}: must be" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_run_whose_weights_blow_up_saves_nothing_and_says_so(tmp_path, monkeypatch, capsys, impl):
    """The trial: --lr 1e6 saved weights whose loss is nan, and generate printed '!!!!!'."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", *IMPLS[impl], *RUN, "--lr", "1e30", "--eval-freq", "1", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert "became" in err and "at step 1" in err and "nothing was saved" in err, err
    assert not list((tmp_path / "run").glob("checkpoint*"))


@pytest.mark.parametrize("impl", IMPLS)
def test_divergence_keeps_the_last_good_checkpoint_and_names_it(tmp_path, monkeypatch, capsys, impl):
    monkeypatch.chdir(tmp_path)
    calls = {"n": 0}
    if impl == "numpy":
        from npgpt.model import GPTModel

        real = GPTModel.loss_and_grads

        def poisoned(self, ids, targets, masks=None):
            calls["n"] += 1
            loss, grads = real(self, ids, targets, masks)
            return (float("nan") if calls["n"] == 3 else loss), grads

        monkeypatch.setattr(GPTModel, "loss_and_grads", poisoned)
    else:
        import torchgpt.train

        real = torchgpt.train.calc_loss_batch

        def poisoned(*args, **kwargs):
            loss = real(*args, **kwargs)
            if torch.is_grad_enabled():  # training steps only, not evaluation
                calls["n"] += 1
                if calls["n"] == 3:
                    return loss * float("nan")
            return loss

        monkeypatch.setattr(torchgpt.train, "calc_loss_batch", poisoned)
    assert main(["train", *IMPLS[impl], *RUN, "--eval-freq", "2", "--out", "run"]) == 2
    err = capsys.readouterr().err
    ckpt = next((tmp_path / "run").glob("checkpoint*"))
    # the book evaluates after steps 1, 3, 5, ... (0-based index % eval_freq == 0): the good checkpoint is step 1's
    assert f"the training loss became nan at step 3; stopped without saving, run/{ckpt.name} from step 1 is kept" in err
    done = load_npz(ckpt)[3]["train_state"]["global_step"] + 1 if impl == "numpy" else load_pth(ckpt)["next_step"]
    assert done == 1


def test_torch_checkpoints_after_every_evaluation(tmp_path, monkeypatch):
    """The trial: kill -9 after 16 torch steps left nothing; now each evaluation saves."""
    import torchgpt.train

    monkeypatch.chdir(tmp_path)
    real, calls = torchgpt.train.evaluate_model, {"n": 0}

    def crash_on_the_fourth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(torchgpt.train, "evaluate_model", crash_on_the_fourth)
    assert main(["train", *IMPLS["torch"], *RUN, "--eval-freq", "1", "--out", "run"]) == 3  # internal error
    state = load_pth(tmp_path / "run" / "checkpoint.pth")
    assert state["next_step"] == 3 and len(state["history"]["train_losses"]) == 3


@pytest.mark.parametrize("impl", IMPLS)
def test_out_is_checked_before_the_first_step(tmp_path, monkeypatch, capsys, impl):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["train", *IMPLS[impl], *RUN, "--out", "afile/run"]) == 2
    assert "cannot write there" in capsys.readouterr().err
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert main(["train", *IMPLS[impl], *RUN, "--out", "run"]) == 2
    assert "GB free, a checkpoint needs" in capsys.readouterr().err


@pytest.mark.parametrize("impl", IMPLS)
def test_generate_refuses_non_finite_weights_and_bad_sampling_values(tmp_path, monkeypatch, capsys, impl):
    monkeypatch.chdir(tmp_path)
    params = {k: v.astype(np.float32) for k, v in random_params(TINY, 0).items()}
    params["out_head.weight"][0, 0] = np.nan
    if impl == "numpy":
        arrays = {f"params/{k}": v for k, v in params.items()}
        meta = {"format": "npgpt-checkpoint-v1", "config": TINY.to_dict()}
        arrays["meta"] = np.frombuffer(__import__("json").dumps(meta).encode(), dtype=np.uint8)
        np.savez(tmp_path / "nan.npz", **arrays)  # written by hand: the savers refuse non-finite weights
        ckpt = "nan.npz"
    else:
        state = {k: torch.from_numpy(v) for k, v in params.items()}
        state.update({"trf_blocks.0.att.mask": torch.triu(torch.ones(16, 16), diagonal=1)})
        torch.save({"model_state_dict": state, "config": TINY.to_dict()}, tmp_path / "nan.pth")
        ckpt = "nan.pth"
    gen = ["generate", *(["--impl", "torch", "--device", "cpu"] if impl == "torch" else []), "--checkpoint", ckpt]
    assert main(gen) == 2
    assert "non-finite weights" in capsys.readouterr().err
    for bad in (["--temperature", "-1"], ["--top-p", "0"], ["--top-k", "0"], ["--prompt", ""]):
        assert main([*gen, *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("must be" in err or "prompt is empty" in err), err


def test_check_refuses_bad_values_and_an_unwritable_json_before_comparing(tmp_path, capsys):
    assert main(["check", "--config", "tiny", "--steps", "-1"]) == 2
    assert "--steps -1: must be" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["check", "--config", "tiny", "--json", str(tmp_path / "afile" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a file that is not an earlier report is never overwritten, and a refused run creates nothing
    assert main(["check", "--config", "tiny", "--json", str(tmp_path / "afile")]) == 2
    assert "not an npgpt check report" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"
    assert main(["check", "--config", "tiny", "--steps", "-1", "--json", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_an_internal_error_exits_3_with_one_line_and_the_traceback_in_a_file(tmp_path, monkeypatch, capsys):
    from parity.cli import numpy_runs

    def boom(args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(numpy_runs, "run_generate", boom)
    assert main(["generate", "--checkpoint", "x.npz"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: simulated bug; traceback in " in err
    log = Path(err.split("traceback in ")[1].split(" ")[0])
    assert "simulated bug" in log.read_text() and "Traceback" in log.read_text()
    log.unlink()
    assert main(["generate", "--checkpoint", "x.npz", "--debug"]) == 3
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_killed_save_leaves_no_orphan_on_the_next_save(tmp_path, capsys):
    """The trial: every kill -9 during a save left a checkpoint.npz.*.tmp of up to 2 GB."""
    import tempfile

    from npgpt.checkpoint import save_checkpoint

    params = {k: v.astype(np.float32) for k, v in random_params(TINY, 0).items()}
    from npgpt.files import TMP_TAG

    fd, orphan = tempfile.mkstemp(dir=tmp_path, prefix="w.npz" + TMP_TAG, suffix=".tmp")  # a killed save's
    os.close(fd)
    mine = [tmp_path / "w.npz.mine.tmp", tmp_path / "w.npz.backup01.tmp"]  # a user's, only similar
    for path in mine:
        path.write_text("mine")
    save_checkpoint(tmp_path / "w.npz", TINY, params)
    assert not Path(orphan).exists() and all(p.read_text() == "mine" for p in mine)
    assert f"removed {orphan}, left by an interrupted save" in capsys.readouterr().err


@pytest.mark.parametrize("impl", IMPLS)
def test_demo_saves_once_runs_again_and_never_replaces_a_real_run(tmp_path, monkeypatch, capsys, impl):
    """The trial: 33 checkpoints written per demo, and a second `make demo` failed."""
    import npgpt.train
    from parity.cli import torch_runs

    monkeypatch.chdir(tmp_path)
    saves = {"n": 0}
    for module in (npgpt.train, torch_runs):
        real = module.save_checkpoint

        def counted(*a, _real=real, **k):
            saves["n"] += 1
            return _real(*a, **k)

        monkeypatch.setattr(module, "save_checkpoint", counted)
    demo = ["demo", *IMPLS[impl], "--epochs", "2", "--sample-tokens", "2"]
    assert main(demo) == 0 and saves["n"] == 1
    assert main(demo) == 0 and "replacing the earlier demo run" in capsys.readouterr().out
    assert saves["n"] == 2
    assert main(["train", *IMPLS[impl], *RUN, "--epochs", "1", "--out", "mine"]) == 0
    before = _digest(tmp_path / "mine")
    assert main([*demo, "--out", "mine"]) == 2
    assert "not a demo" in capsys.readouterr().err and _digest(tmp_path / "mine") == before


# --- messages that named the wrong problem ----------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_resume_refuses_flags_that_differ_from_the_run(tmp_path, monkeypatch, capsys, impl):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *IMPLS[impl], *RUN, "--max-steps", "2", "--out", "run"]) == 0
    assert main(["train", *IMPLS[impl], "--out", "run", "--resume", "--lr", "0.1", "--eval-freq", "3"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.1 (the run has 0.0004), --eval-freq 3 (the run has 5)" in err and err.count("\n") == 1, err
    # a flag typed at its default value, where the run has another, is refused too (not silently ignored)
    assert main(["train", *IMPLS[impl], "--out", "run", "--resume", "--config", "gpt2-small"]) == 2
    assert "--config gpt2-small (the run has tiny)" in capsys.readouterr().err
    assert main(["train", *IMPLS[impl], "--out", "run", "--resume", "--config=tiny"]) == 0  # the run's own value
    assert main(["train", *IMPLS[impl], "--out", "run", "--resume", "--max-steps", "1"]) == 0  # not a run setting


def test_wrong_kinds_of_checkpoint_are_named_for_what_they_are(tmp_path, monkeypatch, capsys, weights):
    import argparse

    monkeypatch.chdir(tmp_path)
    assert main(["convert", "models/w.npz", "w.safetensors"]) == 0
    assert main(["generate", "--checkpoint", "w.safetensors"]) == 2
    assert "npgpt reads .npz checkpoints: `npgpt convert" in capsys.readouterr().err
    assert main(["convert", "models/w.npz", "run/checkpoint.pth"]) == 0
    (tmp_path / "story.txt").write_text("word " * 400)
    assert main(["train", *IMPLS["torch"], "--text", "story.txt", "--out", "run", "--resume"]) == 2
    assert "holds weights only" in capsys.readouterr().err  # was: "trained on a different text"
    torch.save({"model_state_dict": {}, "extra": argparse.Namespace(a=1)}, tmp_path / "pickled.pth")
    assert main(["generate", *IMPLS["torch"], "--checkpoint", "pickled.pth"]) == 2
    err = capsys.readouterr().err
    assert "needs pickle to load" in err and "refused for safety" in err and err.count("\n") == 1


def test_a_demo_with_a_bad_value_keeps_the_earlier_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--epochs", "1", "--sample-tokens", "2"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "runs" / "demo").iterdir()}
    capsys.readouterr()
    assert main(["demo", "--vocab-size", "0"]) == 2
    assert "--vocab-size 0: must be an integer >= 1" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "runs" / "demo").iterdir()} == before


@pytest.mark.parametrize("impl", IMPLS)
def test_resume_override_changes_lr_on_purpose_and_records_it(tmp_path, monkeypatch, capsys, impl):
    import json

    monkeypatch.chdir(tmp_path)
    assert main(["train", *IMPLS[impl], *RUN, "--max-steps", "2", "--out", "run"]) == 0
    assert main(["train", *IMPLS[impl], "--out", "run", "--resume", "--max-steps", "1", "--override", "lr=1e-4"]) == 0
    assert "--override: lr 0.0004 -> 0.0001 from here on" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["overridden"] == [{"flag": "lr", "from": 0.0004, "to": 0.0001}]
    assert history["lrs"][-1] == pytest.approx(1e-4) and history["lrs"][0] == pytest.approx(4e-4)  # it took effect
    # the next resume keeps the new lr as the run's own: --lr 1e-4 is no conflict, the old value is
    assert main(["train", *IMPLS[impl], "--out", "run", "--resume", "--max-steps", "1", "--lr", "1e-4"]) == 0
    assert main(["train", *IMPLS[impl], "--out", "run", "--resume", "--lr", "0.0004"]) == 2
    capsys.readouterr()
    for bad in (["--override", "lr=1e-4"], ["--resume", "--override", "epochs=3"], ["--resume", "--override", "lr=x"]):
        assert main(["train", *IMPLS[impl], "--out", "run", *bad]) == 2
    err = capsys.readouterr().err
    assert "add --resume" in err and "KEY one of lr, grad_clip" in err and "'x' is not a number" in err
