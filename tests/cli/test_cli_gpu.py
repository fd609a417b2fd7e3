"""GPU (marker ``gpu``): the command-line paths that only run on CUDA. Skipped without it."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from parity.cli import main  # noqa: E402
from tests.helpers import STORY, TINY, npgpt, torchrun  # noqa: E402
from torchgpt import load_checkpoint  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
SPEED_UPS = ["--attention", "sdpa", "--amp", "bf16", "--fused-adamw", "--tf32", "--compile"]


def test_check_on_cuda_passes_in_float64_and_float32(tmp_path, capsys):
    out = tmp_path / "check.json"
    rc = main(["check", "--device", "cuda", "--config", "tiny", "--steps", "2", "--dtype", "both", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "(cuda)" in text and "float64: PASS" in text and "float32: PASS" in text
    assert all(row["ok"] for r in json.loads(out.read_text())["reports"] for row in r["rows"])


def test_check_on_cuda_fails_on_a_planted_bug(missing_sqrt_d, capsys):
    assert main(["check", "--device", "cuda", "--config", "tiny", "--steps", "1", "--quiet"]) == 1
    assert "first diverging tensor: trf_blocks.0.att output" in capsys.readouterr().out


def test_train_with_every_speed_up_on_cuda_then_generate(tmp_path):
    (tmp_path / "story.txt").write_text(STORY, encoding="utf-8")
    args = ["train", "--impl", "torch", "--device", "cuda", *TINY, "--text", "story.txt", "--epochs", "2"]
    run = npgpt(*args, *SPEED_UPS, "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "torch on cuda" in run.stdout and "finished at step" in run.stdout
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    losses = history["train_losses"]
    assert losses and all(0 < x < 20 for x in losses), losses
    assert losses[-1] < losses[0]  # it learns
    gen = npgpt("generate", "--impl", "torch", "--device", "cuda", "--checkpoint", "run/checkpoint.pth", cwd=tmp_path)
    assert gen.returncode == 0 and gen.stdout.startswith("Every effort moves you"), gen.stderr


def test_torchrun_one_process_runs_ddp_over_nccl_and_equals_a_plain_run(tmp_path):
    (tmp_path / "story.txt").write_text(STORY, encoding="utf-8")
    common = ["--impl", "torch", "--device", "cuda", *TINY, "--text", "story.txt", "--drop-rate", "0"]
    common += ["--batch-size", "4", "--max-steps", "3", "--epochs", "3"]
    assert npgpt("train", *common, "--out", "plain", cwd=tmp_path).returncode == 0
    ddp = torchrun(1, "train", *common, "--out", "ddp", cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "DDP over 1 process(es), nccl" in ddp.stdout
    plain, one = (load_checkpoint(tmp_path / d / "checkpoint.pth") for d in ("plain", "ddp"))
    assert plain["next_step"] == one["next_step"] == 3
    for k, v in plain["model_state_dict"].items():
        torch.testing.assert_close(one["model_state_dict"][k], v, rtol=1e-5, atol=1e-6, msg=k)
