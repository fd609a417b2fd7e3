"""Peak resident memory and wall time of the main job, `npgpt check` with its defaults (GPT-2
small's shape, float64, 10 AdamW steps), run as a user runs it: a child process, measured from
outside (getrusage of the child). Writes benchmarks/results/check-memory-<cpu>.{json,md};
``--demo`` measures ``npgpt demo`` (into a temporary --out) instead: demo-memory-<cpu>.*.

    python -m benchmarks.check_memory [--impl hf | --demo]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    args = parser.parse_args(argv)
    extra = ["--impl", args.impl] if args.impl else []
    command = ["demo"] if args.demo else ["check", "--quiet", *extra]
    with tempfile.TemporaryDirectory(prefix="npgpt-memory-bench-") as tmp:
        out = ["--out", str(Path(tmp) / "demo")] if args.demo else []
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "parity.cli", *command, *out], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    m = machine()
    result = {
        "command": " ".join(["npgpt", *command]),
        "exit_code": done.returncode,
        "wall_s": wall,
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
        f"| {done.returncode} | {wall:.0f} s | {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB) |\n\n"
        + "\n".join(f"- {line}" for line in result["summary"])
        + "\n"
    )
    print(stem.with_suffix(".md").read_text())
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
