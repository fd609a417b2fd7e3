"""NumPy CPU vs torch CPU vs torch CUDA, side by side and against each device's
measured limits.

The driver starts one worker process per implementation (``python -m benchmarks.workers
numpy-cpu|torch-cpu|torch-cuda``), so no implementation's threads, allocator or warm caches colour
another's numbers; each worker measures its own ceiling first (float32 — and on GPUs bf16 —
matmul FLOP/s, memory bandwidth), then forward, train step (forward + backward + AdamW) and
generation with and without KV cache. Warm-up, then the median of repeats; CUDA timings are
synchronised. FLOPs per token are counted on paper, useful ones only: 6 * N_matmul +
6 * L * C * (T + 1) for a train step, a third of that for a forward (N_matmul = 12 L C^2 + V C, the
weights used in matmuls; attention over the (T + 1) / 2 keys a token sees on average under the
causal mask, not the masked half).
MFU is those FLOPs per second over the matmul ceiling measured in the same run at the row's
precision (float32, tf32 or bf16), never a datasheet peak.
Results: benchmarks/results/<machine>.json, .md and .png; a CPU run is named by the CPU's
vendor (cpu-amd-2core, cpu-intel-2core): the two kinds rank NumPy and torch differently.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.measure import cpu_kind, machine
from benchmarks.report import plot, to_markdown, with_ratios

CHECKOUT = Path(__file__).resolve().parents[1]  # the workers import benchmarks from here


def run_all(out_dir: Path, quick: bool, impls: list[str], targets: bool = False) -> dict:
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "workers": {}, "notes": []}
    try:
        import torch

        results["machine"]["torch"] = torch.__version__
        has_cuda = torch.cuda.is_available()
        if has_cuda:
            results["machine"]["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        has_cuda = False
        impls = [i for i in impls if not i.startswith("torch")]
        results["notes"].append("torch is not installed: torch rows skipped")
    if not has_cuda and "torch-cuda" in impls:
        impls = [i for i in impls if i != "torch-cuda"]
        results["notes"].append("no CUDA device: torch-cuda rows skipped (run on a GPU machine to add them)")
    for impl in impls:
        cmd = [sys.executable, "-m", "benchmarks.workers", impl] + (["--quick"] if quick else [])
        cmd += ["--targets"] if targets else []
        print(f"== {impl}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=CHECKOUT)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            results["notes"].append(f"{impl} worker failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        results["workers"][impl] = json.loads(done.stdout)
    with_ratios(results)
    slug = (  # named by the GPU only when a GPU row was run: a lent GPU's host CPU gets a CPU name
        "gpu-" + results["machine"]["gpu"].replace(" ", "-")
        if "torch-cuda" in results["workers"]
        else f"cpu-{cpu_kind(results['machine']['cpu'])}-{results['machine']['cores']}core"
    )
    stem = out_dir / (f"{slug}-quick" if quick else f"{slug}-targets" if targets else slug)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(to_markdown(results))
    drew = not targets and plot(results, stem.with_suffix(".png"))  # four rows make no curve
    print(to_markdown(results))
    print(f"wrote {stem}.json, .md" + (", .png" if drew else "" if targets else " (no plot: pip install matplotlib)"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny config only: a smoke run in seconds")
    parser.add_argument(
        "--impl", default="numpy-cpu,torch-cpu,torch-cuda", help="comma-separated subset (default: all present)"
    )
    parser.add_argument(
        "--targets", action="store_true", help="CPU: only the 124M rows issue 24's targets name (minutes, not an hour)"
    )
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    run_all(Path(args.out), args.quick, args.impl.split(","), args.targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
