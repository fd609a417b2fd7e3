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


def test_a_cpu_run_on_a_gpu_host_is_named_by_its_cpu_and_skips_the_empty_generation_table():
    from benchmarks.report import to_markdown

    row = {"impl": "numpy-cpu", "mode": "fp32", "config": "124M", "B": 2, "T": 256, "forward_tok_s": 1.0}
    row |= {"forward_frac": 0.5, "train_s": 1.0, "train_tok_s": 1.0, "train_frac": 0.3, "peak_bytes": 1e9}
    worker = {"ceiling": {"float32_matmul_flops": 1e11, "memory_bytes_per_s": 2e10}, "rows": [row], "generation": []}
    results = {"machine": {"cpu": "Some CPU", "cores": 2, "gpu": "NVIDIA H200"}, "date": "2026-11-27", "notes": []}
    text = to_markdown(results | {"workers": {"numpy-cpu": worker}})
    assert text.startswith("# npgpt bench — Some CPU, 2 cores (the host of a NVIDIA H200 machine)")
    assert "| numpy-cpu | fp32 | 124M | 2×256 |" in text and "new tokens" not in text
