"""``npgpt check --attention blocked``: npgpt's block-skipping attention against the same reference."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from npgpt.layers import blocked_attention
from parity.cli import main

TINY = ["check", "--config", "tiny", "--steps", "2", "--seq-len", "40", "--quiet"]


def test_the_blocked_attention_passes_the_main_job_at_the_tiny_config(capsys):
    assert main([*TINY, "--attention", "blocked"]) == 0
    out = capsys.readouterr().out
    assert "npgpt's attention: blocked, 16-row blocks" in out and "float64: PASS" in out


def test_a_bug_in_the_blocked_attention_is_caught_only_when_check_runs_it(monkeypatch, capsys):
    scores = blocked_attention._scores

    def off_by_a_little(*args):
        return scores(*args) * 1.001  # every block's scaled scores, forward and the backward's recomputation

    monkeypatch.setattr(blocked_attention, "_scores", off_by_a_little)
    assert main(TINY) == 0  # the plain attention never calls it
    assert main([*TINY, "--attention", "blocked"]) == 1
    assert "first diverging tensor: trf_blocks.0.att output" in capsys.readouterr().out
