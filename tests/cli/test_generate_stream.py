"""`npgpt generate` streams each token as it comes; Ctrl-C keeps what was printed (exit 130, no
traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from parity.cli import main

CKPT_ARGS = ["--config", "tiny", "--context-length", "16", "--epochs", "1", "--max-steps", "2", "--eval-iter", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *CKPT_ARGS, "--sample-tokens", "0", "--out", str(out)]) == 0
    return out / "checkpoint.npz"


def test_the_stream_is_the_same_text_as_the_whole_generation(capsys, checkpoint):
    from npgpt.checkpoint import load_checkpoint
    from npgpt.generation import generate
    from npgpt.model import GPTModel
    from npgpt.tokenizer import get_tokenizer, text_to_token_ids, token_ids_to_text

    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(checkpoint), "--max-new-tokens", "20", "--no-eos"]) == 0
    streamed = capsys.readouterr().out
    cfg, params, _, _ = load_checkpoint(checkpoint)
    tok = get_tokenizer(cfg.vocab_size)
    ids = text_to_token_ids("Every effort moves you", tok)
    whole = token_ids_to_text(generate(GPTModel(cfg, params=params).eval(), ids, 20, cfg.context_length), tok)
    assert streamed == whole + "\n"


def test_ctrl_c_keeps_what_was_generated(checkpoint):
    cmd = [sys.executable, "-m", "parity.cli", "generate", "--checkpoint", str(checkpoint)]
    proc = subprocess.Popen(
        [*cmd, "--max-new-tokens", "1000000000", "--no-eos"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    first = proc.stdout.read(30)  # the prompt and the first tokens are already out
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert first.startswith(b"Every effort moves you") and len(first + out) > 30
    assert b"interrupted after" in err and b"Traceback" not in err
    np.testing.assert_equal(err.count(b"\n"), 1)
