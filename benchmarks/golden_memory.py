"""Peak resident memory, wall time and disk size of `npgpt golden write` at GPT-2 small's shape
(float64, 1 AdamW step), run as a user runs it: a child process, measured from outside.
Writes benchmarks/results/golden-write-<cpu>.{json,md}.

    python -m benchmarks.golden_memory [--steps 1]
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.golden_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="npgpt-golden-bench-") as tmp:
        bundle = Path(tmp) / "bundle"
        cmd = [sys.executable, "-m", "parity.cli", "golden", "write", str(bundle), "--config", "gpt2-small"]
        cmd += ["--steps", str(args.steps)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
        disk = sum(f.stat().st_size for f in bundle.iterdir()) if bundle.is_dir() else 0
    m = machine()
    command = f"npgpt golden write DIR --config gpt2-small --steps {args.steps}"
    result = {
        "command": command,
        "exit_code": done.returncode,
        "wall_s": wall,
        "peak_rss_bytes": peak,
        "disk_bytes": disk,
        "machine": m,
        "date": time.strftime("%Y-%m-%d"),
        "stderr": done.stderr[-2000:],
    }
    vendor = cpu_kind(m["cpu"])
    stem = Path("benchmarks/results") / f"golden-write-{vendor}-{os.cpu_count()}core"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(
        f"# `{command}` — {m['cpu']}, {m['cores']} cores ({result['date']})\n\n"
        "| exit code | wall time | peak resident memory | bundle on disk |\n|---|---|---|---|\n"
        f"| {done.returncode} | {wall:.0f} s | {peak / 1e9:.2f} GB | {disk / 1e9:.2f} GB |\n"
    )
    print(stem.with_suffix(".md").read_text())
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
