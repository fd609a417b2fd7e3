"""The ``npgpt`` console script end to end (subprocesses), and the import-hygiene rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgpt.checkpoint import load_checkpoint
from parity.cli import main

TINY = ["--config", "tiny", "--context-length", "16", "--epochs", "2", "--eval-freq", "2", "--sample-tokens", "3"]


def npgpt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parity.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_command_and_npgpt_pull_in_neither_torch_nor_tensorflow():
    """A NumPy-only install runs train, demo and generate: building the parser imports no torch."""
    code = (
        "import sys, npgpt, parity.cli; parity.cli.build_parser(); "
        "print(sorted({'torch', 'tensorflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_numpy_only_install_trains_and_generates_and_says_what_to_install(tmp_path):
    """torch made unimportable, as on `pip install npgpt` without extras."""
    no_torch = "import sys; sys.modules['torch'] = None; from parity.cli import main; sys.exit(main(sys.argv[1:]))"

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", no_torch, *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)

    assert run("train", *TINY, "--epochs", "1", "--out", "run").returncode == 0
    gen = run("generate", "--checkpoint", "run/checkpoint.npz", "--max-new-tokens", "3")
    assert gen.returncode == 0 and gen.stdout.startswith("Every effort moves you"), gen.stderr
    for args in (["check", "--config", "tiny"], ["train", "--impl", "torch"]):
        refused = run(*args)
        err = refused.stderr
        assert refused.returncode == 2 and err.count("\n") == 1 and "pip install 'npgpt[torch]'" in err, err


def test_train_then_generate(tmp_path):
    run = npgpt("train", *TINY, "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Ep 1 (Step 000000): Train loss" in run.stdout and "tok/s" in run.stdout
    assert (tmp_path / "run" / "checkpoint.npz").is_file()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["train_losses"]) == len(history["val_losses"]) > 1
    assert (tmp_path / "run" / "losses.png").read_bytes()[:4] == b"\x89PNG"

    ckpt = str(tmp_path / "run" / "checkpoint.npz")
    gen = ["generate", "--checkpoint", ckpt, "--max-new-tokens", "8"]
    greedy = [npgpt(*gen, "--prompt", "The keeper", *extra, cwd=tmp_path) for extra in ([], ["--no-cache"])]
    assert greedy[0].returncode == 0, greedy[0].stderr
    assert greedy[0].stdout.startswith("The keeper")
    assert greedy[0].stdout == greedy[1].stdout  # KV cache on and off agree
    sampling = ["--temperature", "1.5", "--top-k", "40", "--top-p", "0.9", "--seed", "3"]
    sampled = [npgpt(*gen, *sampling, cwd=tmp_path) for _ in range(2)]
    assert sampled[0].returncode == 0 and sampled[0].stdout == sampled[1].stdout  # seeded: reproducible


def test_interrupted_run_resumes_to_the_same_end(tmp_path):
    text = tmp_path / "story.txt"
    text.write_text(("A small boat crossed the bay in the dark while the light turned. " * 12), encoding="utf-8")
    args = [
        *TINY,
        "--text",
        str(text),
        "--epochs",
        "3",
        "--schedule",
        "cosine",
        "--warmup-steps",
        "2",
        "--grad-clip",
        "1.0",
    ]
    assert npgpt("train", *args, "--out", "full", cwd=tmp_path).returncode == 0
    part = npgpt("train", *args, "--out", "part", "--max-steps", "4", cwd=tmp_path)
    assert part.returncode == 0 and "paused at step 4" in part.stdout and "--resume" in part.stdout
    again = npgpt("train", "--text", str(text), "--out", "part", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    _, full_params, full_opt, full_meta = load_checkpoint(tmp_path / "full" / "checkpoint.npz")
    _, params, opt, meta = load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert meta == full_meta  # step counters, loss and lr histories, RNG state, run arguments
    for k, v in full_params.items():  # bit-for-bit
        assert np.array_equal(params[k], v) and np.array_equal(opt["m"][k], full_opt["m"][k]), k
        assert np.array_equal(opt["v"][k], full_opt["v"][k]), k


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--text", "missing.txt"], "does not exist"),
        (["train", "--text", "latin1.txt", "--config", "tiny"], "is not UTF-8"),
        (["train", "--config", "gpt5"], "unknown preset"),
        (["train", "--config", "tiny", "--context-length", "4096"], "too short for context_length=4096"),
        (["generate", "--checkpoint", "nope.npz"], "does not exist"),
        (["generate", "--checkpoint", "junk.npz"], "corrupt or truncated"),
        (["train", "--out", "junkdir", "--resume"], "corrupt or truncated"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    (tmp_path / "junkdir").mkdir()
    (tmp_path / "junkdir" / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_existing_run_is_not_overwritten(tmp_path):
    assert npgpt("train", *TINY, "--epochs", "1", "--out", "run", cwd=tmp_path).returncode == 0
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    again = npgpt("train", *TINY, "--out", "run", cwd=tmp_path)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before


def test_demo_runs(tmp_path):
    out = npgpt("demo", "--epochs", "2", "--eval-freq", "4", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "runs" / "demo" / "checkpoint.npz").is_file()
    continuation = out.stdout.split("greedy continuation with the KV cache:\n")[1]
    assert continuation.startswith("The lighthouse keeper") and len(continuation) > len("The lighthouse keeper\n")


@pytest.mark.parametrize(
    ("impl", "sig"), [("numpy", "SIGINT"), ("torch", "SIGINT"), ("numpy", "SIGTERM"), ("torch", "SIGTERM")]
)
def test_ctrl_c_or_sigterm_saves_a_checkpoint_that_resumes(tmp_path, impl, sig):
    """A real SIGINT or SIGTERM mid-run: the step finishes, a checkpoint is written, the exit code
    is 128 + the signal, and resume completes the run."""
    if impl == "torch":
        pytest.importorskip("torch")
    import signal

    (tmp_path / "story.txt").write_text("The light turned and the boat came home. " * 40, encoding="utf-8")
    args = [sys.executable, "-m", "parity.cli", "train", "--impl", impl, "--config", "tiny", "--context-length", "16"]
    args += ["--text", "story.txt", "--epochs", "50", "--eval-freq", "1", "--sample-tokens", "2", "--out", "run"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training is under way
        if "(Step 000002)" in line:
            break
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, sig), err
    assert f"{sig}: stopping after this step" in err
    assert "stopping after this step" in err and "paused at step" in out
    name = "checkpoint.npz" if impl == "numpy" else "checkpoint.pth"
    assert (tmp_path / "run" / name).is_file()
    resume = [*args[:5], impl, "--text", "story.txt", "--out", "run", "--resume", "--max-steps", "2"]
    again = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout


def test_blocked_attention_trains_to_the_same_weights(tmp_path, capsys):
    """--attention blocked: npgpt's block-skipping attention, the same steps as the book's (the
    context of 16 spans two blocks of 8)."""
    from npgpt.layers import blocked_attention

    runs = {}
    for attention in ("book", "blocked"):
        original = blocked_attention.BLOCK
        blocked_attention.BLOCK = 8
        try:
            out = tmp_path / attention
            assert main(["train", *TINY, "--max-steps", "3", "--attention", attention, "--out", str(out)]) == 0
        finally:
            blocked_attention.BLOCK = original
        runs[attention] = load_checkpoint(out / "checkpoint.npz")[1]
    for k, v in runs["book"].items():
        np.testing.assert_allclose(runs["blocked"][k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    capsys.readouterr()
    assert main(["train", "--impl", "torch", "--attention", "blocked"]) == 2
    assert "--attention blocked is npgpt's" in capsys.readouterr().err
