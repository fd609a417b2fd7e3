"""How large a chunk should AdamW's elementwise update work in? (npgpt/optim.py's CHUNK_BYTES) And what
does folding gradient clipping into the update save (``step(grads, grad_scale=...)`` against
``clip_grad_norm`` then ``step``, both clipping every step)?

    python -m benchmarks.adamw

GPT-2 small's parameters, one AdamW step timed in float64 (npgpt check's dtype) and float32 (a
train step's), with 256 KB to 2 MB of each array a call, every core, rounds alternated
(this machine is shared and drifts), the median of each; glibc's mmap threshold lowered as
npgpt check lowers it. Writes benchmarks/results/adamw-<cpu kind>-<cores>core.{json,md}.
"""

from __future__ import annotations

import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import cpu_kind, machine
from npgpt import optim, threads
from npgpt.config import GPTConfig
from npgpt.optim import AdamW, clip_coef, clip_grad_norm, grad_norm
from npgpt.params import init_params

ROUNDS = 5
CHUNKS = (1 << 18, 1 << 19, 1 << 20, 1 << 21)  # bytes of each array a call
CLIPS = ("clip_grad_norm, then step", "step(grad_scale=clip_coef(grad_norm))")


def main() -> int:
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 18)  # M_MMAP_THRESHOLD, as parity/cli/check.py sets it
    default = optim.CHUNK_BYTES
    medians: dict[str, dict[str, float]] = {}
    for dtype in ("float64", "float32"):
        params = init_params(GPTConfig.preset("gpt2-small"), 0, np.dtype(dtype))
        grads = {k: np.full_like(v, 1e-3) for k, v in params.items()}
        opt = AdamW(params, lr=4e-4, weight_decay=0.1)
        opt.step(grads)  # warm-up: the pages of m and v touched
        times: dict[int, list[float]] = {c: [] for c in CHUNKS}
        for _ in range(ROUNDS):
            for chunk in CHUNKS:
                optim.CHUNK_BYTES = chunk
                t0 = time.perf_counter()
                opt.step(grads)
                times[chunk].append(time.perf_counter() - t0)
        medians[dtype] = {str(c): statistics.median(t) for c, t in times.items()}
        optim.CHUNK_BYTES = default
        max_norm = 0.999 * grad_norm(grads)  # clips every step, by 0.1%: the gradients stay the same size
        clipping: dict[str, list[float]] = {c: [] for c in CLIPS}
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            clip_grad_norm(grads, max_norm)
            opt.step(grads)
            t1 = time.perf_counter()
            opt.step(grads, grad_scale=clip_coef(grad_norm(grads), max_norm))
            clipping[CLIPS[0]].append(t1 - t0)
            clipping[CLIPS[1]].append(time.perf_counter() - t1)
        medians[f"{dtype} clipped"] = {c: statistics.median(t) for c, t in clipping.items()}
        del params, grads, opt
    optim.CHUNK_BYTES = default
    m = machine()
    result = {"machine": m, "date": time.strftime("%Y-%m-%d"), "rounds": ROUNDS, "threads": threads.workers()}
    result |= {"adamw_step_s": medians, "chunk_in_use": default}
    stem = Path("benchmarks/results") / f"adamw-{cpu_kind(m['cpu'])}-{m['cores']}core"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# AdamW step, GPT-2 small, by chunk size — {m['cpu']}, {m['cores']} cores, "
        f"{threads.workers()} threads ({result['date']})",
        "",
        f"| bytes of each array a call | float64 median s (of {ROUNDS}) | float32 median s |",
        "|---|---|---|",
        *(
            f"| {c >> 10} KB{' (in use)' if c == default else ''} | {medians['float64'][str(c)]:.3f} | "
            f"{medians['float32'][str(c)]:.3f} |"
            for c in CHUNKS
        ),
        "",
        f"Clipping every step ({default >> 10} KB a call):",
        "",
        f"| clipping | float64 median s (of {ROUNDS}) | float32 median s |",
        "|---|---|---|",
        *(f"| `{c}` | {medians['float64 clipped'][c]:.3f} | {medians['float32 clipped'][c]:.3f} |" for c in CLIPS),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
