"""Peak resident memory and wall time of the main job, `npgpt check` with its defaults (GPT-2
small's shape, float64, 10 AdamW steps), run as a user runs it: a child process, measured from
outside (getrusage of the child). Writes benchmarks/results/check-memory-<cpu>.{json,md};
``--demo`` measures ``npgpt demo`` (into a temporary --out) instead: demo-memory-<cpu>.*.

    python -m benchmarks.check_memory [--impl hf | --demo] [--phases] [--runs N]

``--phases`` also runs the main job once more under cProfile and writes where its time goes
(check-phases-<cpu>.{json,md}): each implementation's gradients and optimizer steps, loading the
weights, the spill to disk and the reading back, the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import cpu_kind, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.check_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default=None, help="also pass --impl (default: the main job, torchgpt)")
    parser.add_argument("--demo", action="store_true", help="measure `npgpt demo` instead of check")
    parser.add_argument("--phases", action="store_true", help="also profile the main job by phase (cProfile)")
    parser.add_argument(
        "--runs", type=int, default=1, help="run it N times: this machine's wall time varies by +-10%% between runs"
    )
    args = parser.parse_args(argv)
    extra = ["--impl", args.impl] if args.impl else []
    command = ["demo"] if args.demo else ["check", "--quiet", *extra]
    walls = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="npgpt-memory-bench-") as tmp:
            out = ["--out", str(Path(tmp) / "demo")] if args.demo else []
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "parity.cli", *command, *out], capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
        if done.returncode:
            break
    wall = statistics.median(walls)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB; the largest child's
    m = machine()
    result = {
        "command": " ".join(["npgpt", *command]),
        "exit_code": done.returncode,
        "wall_s": wall,
        "wall_s_runs": walls,
        "peak_rss_bytes": peak,
        "machine": m,
        "date": time.strftime("%Y-%m-%d"),
        "summary": [line for line in done.stdout.splitlines() if "PASS" in line or "FAIL" in line],
    }
    vendor = cpu_kind(m["cpu"])
    impl = f"-{args.impl}" if args.impl else ""
    shape = "the tiny model on the embedded story" if args.demo else "GPT-2 small, float64"
    name = "demo-memory" if args.demo else f"check-memory{impl}"
    stem = Path("benchmarks/results") / f"{name}-{vendor}-{os.cpu_count()}core"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(
        f"# `{result['command']}` ({shape}) — {m['cpu']}, {m['cores']} cores ({result['date']})\n\n"
        f"| exit code | wall time | peak resident memory |\n|---|---|---|\n"
        f"| {done.returncode} | {wall:.0f} s{_spread(walls)} | {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB) |\n\n"
        + "\n".join(f"- {line}" for line in result["summary"])
        + "\n"
    )
    print(stem.with_suffix(".md").read_text())
    if args.phases and not args.demo:
        phases(command, m, Path("benchmarks/results") / f"check-phases{impl}-{vendor}-{os.cpu_count()}core")
    return done.returncode


def _spread(walls: list[float]) -> str:
    """ " (median of N: a-b s)" after the wall time when it was run more than once."""
    return f" (median of {len(walls)}: {min(walls):.0f}-{max(walls):.0f} s)" if len(walls) > 1 else ""


def _phase_functions() -> list[tuple[str, object]]:
    """(label, function): summed cumulative time; the functions do not nest in each other."""
    from parity.adapters import NumpyImpl
    from parity.engine import Spill
    from parity.tolerances import compare
    from parity.torch_module import TorchModuleImpl

    return [
        ("npgpt: loss and gradients (11 calls)", NumpyImpl.loss_and_grads),
        ("npgpt: AdamW and clipping (10 steps)", NumpyImpl.optimizer_step),
        ("npgpt: loading the weights", NumpyImpl.load),
        ("torch: loss and gradients (11 calls)", TorchModuleImpl.loss_and_grads),
        ("torch: AdamW and clipping (10 steps)", TorchModuleImpl.optimizer_step),
        ("torch: loading the weights", TorchModuleImpl.load),
        ("spill to disk (the reference's tensors)", Spill.put),
        ("reading the spill back", Spill.__getitem__),
        ("comparison (903 tensors)", compare),
    ]


def phases(command: list[str], m: dict, stem: Path) -> None:
    """The main job once more under cProfile, its time summed by phase."""
    with tempfile.TemporaryDirectory(prefix="npgpt-phases-") as tmp:
        prof = Path(tmp) / "check.prof"
        t0 = time.perf_counter()
        run = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "parity.cli", *command]
        subprocess.run(run, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        stats = pstats.Stats(str(prof)).stats  # (file, line, function) -> (cc, nc, tottime, cumtime, callers)
    total = max(v[3] for (_, _, fn), v in stats.items() if fn == "run_check")
    rows = []
    for label, function in _phase_functions():
        where = (function.__code__.co_filename, function.__code__.co_firstlineno)
        rows.append((label, sum(v[3] for (f, line, _), v in stats.items() if (f, line) == where)))
    rows.append(("the rest (forward, generation, data rows, ...)", total - sum(s for _, s in rows)))
    result = {
        "command": " ".join(["npgpt", *command]),
        "wall_s_profiled": wall,
        "run_check_s": total,
        "phases_s": dict(rows),
        "machine": m,
        "date": time.strftime("%Y-%m-%d"),
    }
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    table = "\n".join(f"| {label} | {s:.1f} s | {100 * s / total:.0f}% |" for label, s in rows)
    stem.with_suffix(".md").write_text(
        f"# Where `{result['command']}` spends its time — {m['cpu']}, {m['cores']} cores ({result['date']})\n\n"
        f"Under cProfile (which adds a little): {total:.1f} s comparing, {wall:.0f} s wall with the imports.\n\n"
        f"| phase | time | share |\n|---|---|---|\n{table}\n"
    )
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    sys.exit(main())
