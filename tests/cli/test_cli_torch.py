"""``npgpt ... --impl torch``: the same flags and output as NumPy, resume, and torchrun DDP on CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from parity.cli import main  # noqa: E402
from tests.helpers import STORY, TINY, npgpt, torchrun  # noqa: E402
from torchgpt import load_checkpoint  # noqa: E402


def test_train_and_generate_with_torch(tmp_path):
    run = npgpt("train", "--impl", "torch", "--device", "cpu", *TINY, "--epochs", "2", "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Ep 1 (Step 000000): Train loss" in run.stdout and "torch on cpu" in run.stdout
    assert "finished at step" in run.stdout and (tmp_path / "run" / "losses.png").is_file()
    ckpt = str(tmp_path / "run" / "checkpoint.pth")
    outs = [
        npgpt("generate", "--impl", "torch", "--checkpoint", ckpt, "--max-new-tokens", "6", *extra, cwd=tmp_path)
        for extra in ([], ["--no-cache"])
    ]
    assert outs[0].returncode == 0, outs[0].stderr
    assert outs[0].stdout == outs[1].stdout and outs[0].stdout.startswith("Every effort moves you")


def test_torch_resume_is_bit_for_bit(tmp_path):
    (tmp_path / "story.txt").write_text(STORY, encoding="utf-8")
    args = ["train", "--impl", "torch", "--device", "cpu", *TINY, "--text", "story.txt", "--epochs", "2"]
    args += ["--schedule", "cosine", "--warmup-steps", "2", "--grad-clip", "1.0"]
    assert npgpt(*args, "--out", "full", cwd=tmp_path).returncode == 0
    part = npgpt(*args, "--out", "part", "--max-steps", "3", cwd=tmp_path)
    assert part.returncode == 0 and "paused at step 3" in part.stdout, part.stderr
    again = npgpt("train", "--impl", "torch", "--text", "story.txt", "--out", "part", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    full, resumed = (load_checkpoint(tmp_path / d / "checkpoint.pth") for d in ("full", "part"))
    assert resumed["history"] == full["history"] and resumed["next_step"] == full["next_step"]
    for k, v in full["model_state_dict"].items():
        assert torch.equal(resumed["model_state_dict"][k], v), k


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--impl", "torch", "--device", "cuda", "--config", "tiny"], "CUDA is not available"),
        (["train", "--impl", "torch", "--device", "tpu", "--config", "tiny"], "unknown device 'tpu'"),
        (["generate", "--impl", "torch", "--checkpoint", "junk.pth", "--device", "cpu"], "corrupt"),
    ],
)
def test_bad_torch_input(tmp_path, monkeypatch, capsys, argv, message):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_torchrun_two_processes_equal_one(tmp_path):
    """gloo, 2 processes with half the batch each == 1 process with the whole batch."""
    (tmp_path / "story.txt").write_text(STORY, encoding="utf-8")
    common = ["--impl", "torch", "--device", "cpu", *TINY, "--text", "story.txt", "--epochs", "3", "--drop-rate", "0"]
    common += ["--batch-size", "4", "--max-steps", "3"]
    single = npgpt("train", *common, "--out", "one", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = torchrun(2, "train", *common, "--out", "two", cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "DDP over 2 process(es), gloo" in ddp.stdout
    assert ddp.stdout.count("Ep 1 (Step 000000)") == 1  # only rank 0 logs
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert files == [".npgpt-run.lock", "checkpoint.pth", "history.json", "losses.png"]  # the lock: npgpt.files
    one, two = (load_checkpoint(tmp_path / d / "checkpoint.pth") for d in ("one", "two"))
    assert one["next_step"] == two["next_step"] == 3
    for k, v in one["model_state_dict"].items():
        torch.testing.assert_close(two["model_state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    # the validation set is not sharded, so its loss matches; the printed train loss is an
    # estimate over rank 0's own shard under DDP and is not compared
    for a, b in zip(one["history"]["val_losses"], two["history"]["val_losses"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_speed_flags_keep_the_math(tmp_path):
    """--attention sdpa --grad-accum 2 trains to the same weights as the book path on the same batches."""
    (tmp_path / "story.txt").write_text(STORY, encoding="utf-8")
    common = ["train", "--impl", "torch", "--device", "cpu", *TINY, "--text", "story.txt", "--drop-rate", "0"]
    common += ["--batch-size", "4", "--max-steps", "2", "--epochs", "2"]
    assert npgpt(*common, "--out", "book", cwd=tmp_path).returncode == 0
    fast = npgpt(*common, "--attention", "sdpa", "--grad-accum", "2", "--out", "fast", cwd=tmp_path)
    assert fast.returncode == 0, fast.stderr
    book, quick = (load_checkpoint(tmp_path / d / "checkpoint.pth") for d in ("book", "fast"))
    assert quick["args"]["attention"] == "sdpa" and quick["args"]["grad_accum"] == 2
    for k, v in book["model_state_dict"].items():
        torch.testing.assert_close(quick["model_state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_speed_flags_need_torch(capsys):
    assert main(["train", "--config", "tiny", "--amp", "bf16"]) == 2
    assert "--amp: torch options; add --impl torch" in capsys.readouterr().err
