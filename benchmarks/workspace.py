"""Does writing each step's arrays into the last step's pay? (npgpt/workspace.py)

    python -m benchmarks.workspace

GPT-2 small in float32, B=2, T=256: one ``loss_and_grads`` call timed with and without
``reuse_grad_buffers``, alternating A/B (this machine is shared and drifts), the median of each,
with the minor page faults a call takes (``resource.getrusage``). Writes
benchmarks/results/workspace-<cpu kind>-<cores>core.{json,md}.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import cpu_kind, machine
from npgpt.config import GPTConfig
from npgpt.model import GPTModel

ROUNDS = 5
B, T = 2, 256


def _one_call(model: GPTModel, ids: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    model.loss_and_grads(ids, targets)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main() -> int:
    cfg = GPTConfig.preset("gpt2-small")
    rng = np.random.default_rng(0)
    ids, targets = (rng.integers(0, cfg.vocab_size, (B, T)) for _ in range(2))
    models = {
        "fresh arrays": GPTModel(cfg, seed=0, dtype=np.float32),
        "reuse_grad_buffers": GPTModel(cfg, seed=0, dtype=np.float32, reuse_grad_buffers=True),
    }
    for model in models.values():
        model.loss_and_grads(ids, targets)  # warm-up: the workspace is filled on the first call
    times: dict[str, list[float]] = {k: [] for k in models}
    faults: dict[str, list[int]] = {k: [] for k in models}
    for _ in range(ROUNDS):
        for name, model in models.items():
            seconds, n = _one_call(model, ids, targets)
            times[name].append(seconds)
            faults[name].append(n)
    m = machine()
    median = {k: statistics.median(v) for k, v in times.items()}
    median_faults = {k: int(statistics.median(v)) for k, v in faults.items()}
    result = {"machine": m, "date": time.strftime("%Y-%m-%d"), "rounds": ROUNDS, "B": B, "T": T,
              "loss_and_grads_s": median, "minor_faults": median_faults, "all": times}  # fmt: skip
    stem = Path("benchmarks/results") / f"workspace-{cpu_kind(m['cpu'])}-{m['cores']}core"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# loss_and_grads, GPT-2 small float32, B={B}, T={T} — {m['cpu']}, {m['cores']} cores ({result['date']})",
        "",
        f"| arrays | median s (of {ROUNDS}, A/B alternated) | minor page faults a call |",
        "|---|---|---|",
        *(f"| {k} | {median[k]:.3f} | {median_faults[k]:,} |" for k in models),
        "",
        f"- reuse_grad_buffers / fresh: {median['reuse_grad_buffers'] / median['fresh arrays']:.2f}x the time",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
