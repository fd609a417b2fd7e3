"""Does splitting AdamW's elementwise update across cores pay? (npgpt/threads.py)

    python -m benchmarks.threads

GPT-2 small's parameters in float32, one AdamW step timed with NPGPT_THREADS=1 and with every
core, alternating A/B (this machine is shared and drifts), the median of each. Writes
benchmarks/results/threads-<cpu kind>-<cores>core.{json,md}.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import cpu_kind, machine
from npgpt import threads
from npgpt.config import GPTConfig
from npgpt.optim import AdamW
from npgpt.params import init_params

ROUNDS = 9


def main() -> int:
    params = init_params(GPTConfig.preset("gpt2-small"), 0, np.float32)
    grads = {k: np.full_like(v, 1e-3) for k, v in params.items()}
    opt = AdamW(params, lr=4e-4, weight_decay=0.1)
    opt.step(grads)  # warm-up: pages of m and v touched
    every = str(threads.workers())
    times: dict[str, list[float]] = {"1": [], every: []}
    for _ in range(ROUNDS):
        for n in times:
            os.environ["NPGPT_THREADS"] = n
            t0 = time.perf_counter()
            opt.step(grads)
            times[n].append(time.perf_counter() - t0)
    os.environ.pop("NPGPT_THREADS")
    m = machine()
    median = {n: statistics.median(t) for n, t in times.items()}
    result = {"machine": m, "date": time.strftime("%Y-%m-%d"), "rounds": ROUNDS, "adamw_step_s": median, "all": times}
    stem = Path("benchmarks/results") / f"threads-{cpu_kind(m['cpu'])}-{m['cores']}core"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# AdamW step, GPT-2 small float32 — {m['cpu']}, {m['cores']} cores ({result['date']})",
        "",
        "| threads | median s (of 9, A/B alternated) |",
        "|---|---|",
        *(f"| {n} | {s:.3f} |" for n, s in median.items()),
        "",
        f"- every core / one thread: {median[every] / median['1']:.2f}× the time",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
