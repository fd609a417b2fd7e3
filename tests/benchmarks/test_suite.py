"""``python -m benchmarks --quick``: the suite's plumbing (processes, ceilings, rows, files), not its speed."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")

from benchmarks.__main__ import main


def test_quick_bench_writes_json_markdown_and_plot(tmp_path, capsys):
    assert main(["--quick", "--impl", "numpy-cpu,torch-cpu,torch-cuda", "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("*-quick.json")
    res = json.loads(result.read_text())
    assert set(res["workers"]) >= {"numpy-cpu", "torch-cpu"}
    for impl, worker in res["workers"].items():
        assert worker["ceiling"]["float32_matmul_flops"] > 0 and worker["ceiling"]["memory_bytes_per_s"] > 0
        modes = 4 if impl == "torch-cuda" else 1  # fp32, tf32, bf16, compiled on a GPU
        assert len(worker["rows"]) == 2 * modes and len(worker["generation"]) == 1, impl
        for row in worker["rows"]:
            assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("forward_s", "train_s", "train_frac")), row
    numpy_rows = res["workers"]["numpy-cpu"]["rows"]
    assert all("train_ratio_vs_torch_cpu" in r for r in numpy_rows)
    assert result.with_suffix(".md").read_text().startswith("# npgpt bench")
    assert result.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    if "torch-cuda" not in res["workers"]:
        assert any("no CUDA device" in n for n in res["notes"])  # the suite says so
