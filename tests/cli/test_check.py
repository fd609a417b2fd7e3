"""``npgpt check`` (the main job), ``convert`` and ``download`` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

import itertools

from npgpt import GPTConfig
from parity.cli import main
from parity.engine import random_params
from parity.weights import load_weights, save_weights

CFG = GPTConfig(vocab_size=60, context_length=16, emb_dim=12, n_heads=3, n_layers=2, drop_rate=0.1, qkv_bias=True)


def test_check_passes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "check.json"
    rc = main(["check", "--config", "tiny", "--steps", "2", "--dtype", "both", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "float64: PASS" in text and "float32: PASS" in text
    assert "grad trf_blocks.1.ff.layers.2.weight" in text and "adam v" in text  # one row per tensor
    report = json.loads(out.read_text())
    assert [r["dtype"] for r in report["reports"]] == ["float64", "float32"]
    assert all(row["ok"] for r in report["reports"] for row in r["rows"])
    # a rerun replaces its own earlier report (CI reruns write to one path)
    assert main(["check", "--config", "tiny", "--steps", "1", "--json", str(out)]) == 0
    assert [r["dtype"] for r in json.loads(out.read_text())["reports"]] == ["float64"]


def test_check_fails_and_names_the_first_diverging_tensor(missing_sqrt_d, capsys):
    rc = main(["check", "--config", "tiny", "--steps", "1", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "float64: FAIL" in text and "first diverging tensor: trf_blocks.0.att output" in text


def test_check_on_weights_from_a_file(tmp_path, capsys):
    pytest.importorskip("safetensors")
    path = save_weights(tmp_path / "w.safetensors", CFG, random_params(CFG, 2))
    assert main(["check", "--weights", str(path), "--seq-len", "8", "--steps", "2", "--quiet"]) == 0
    assert f"weights {path}" in capsys.readouterr().out


def test_convert_between_every_format(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    pytest.importorskip("safetensors")
    params = {k: v.astype(np.float32) for k, v in random_params(CFG, 3).items()}
    save_weights(tmp_path / "oa", CFG, params)
    chain = ["oa", "w.safetensors", "w.npz", "w.pth", "back"]
    for src, dst in itertools.pairwise(chain):
        fmt = ["--format", "openai"] if dst == "back" else []
        assert main(["convert", str(tmp_path / src), str(tmp_path / dst), *fmt]) == 0
    cfg, final = load_weights(tmp_path / "back")
    assert cfg == CFG and all(np.array_equal(final[k], v) for k, v in params.items())
    assert "-> " in capsys.readouterr().out


def test_converted_weights_generate_the_same_text_in_both_implementations(tmp_path, capsys):
    tiny = GPTConfig.preset("tiny")
    save_weights(tmp_path / "w.npz", tiny, {k: v.astype(np.float32) for k, v in random_params(tiny, 4).items()})
    assert main(["convert", str(tmp_path / "w.npz"), str(tmp_path / "w.pth")]) == 0
    capsys.readouterr()
    texts = []
    for impl, name in (("numpy", "w.npz"), ("torch", "w.pth")):
        args = ["generate", "--impl", impl, "--checkpoint", str(tmp_path / name), "--max-new-tokens", "12"]
        assert main([*args, "--device", "cpu"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].startswith("Every effort moves you")


@pytest.mark.slow
@pytest.mark.limit_memory("6 GB")  # the main job's documented need (benchmarks/results/check-memory-*)
def test_the_default_main_job(capsys):
    """`npgpt check` with no arguments: GPT-2 small's shape, random weights, float64, 10 steps."""
    assert main(["check", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "12 layers, emb 768, 12 heads, vocab 50257" in text and "float64: PASS" in text


def test_rows_are_grouped_by_component_and_quiet_prints_one_line_each(missing_sqrt_d, capsys):
    assert main(["check", "--config", "tiny", "--steps", "1", "--quiet"]) == 1
    lines = capsys.readouterr().out.splitlines()
    for component in ("embedding", "attention", "layer norm", "feed-forward", "output head", "loss"):
        (line,) = [x for x in lines if x.startswith(component + " ")]  # exactly one line per component
        assert " tensors  " in line
    (attention,) = [x for x in lines if x.startswith("attention ")]
    assert "FAIL (" in attention and "first trf_blocks.0.att output" in attention  # the broken component
    assert main(["check", "--config", "tiny", "--steps", "1"]) == 1
    text = capsys.readouterr().out
    assert "-- attention\n" in text and "-- learning-rate schedule\n" in text and "-- gradient clipping\n" in text
