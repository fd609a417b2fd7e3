"""Where npgpt's train step spends its time, phase by phase (issue 13's profile, this machine).

    python -m benchmarks.phases

GPT-2 small, B=2, float32, dropout 0.1: every forward and backward of npgpt's layers is wrapped
with a timer (wall time, and the process's kernel time around it), one warm-up step, then the
mean of two steps, at T=256 with the plain attention and T=1024 with both attentions.
"Attention core and the rest" is the step minus the timed layers and AdamW: the attention
product and softmax (the projections are in linear), residual adds, the model's glue.
Writes benchmarks/results/phases-<cpu kind>-<cores>core.{json,md}.
"""

from __future__ import annotations

import collections
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import cpu_kind, machine
from npgpt import AdamW, GPTModel
from npgpt.config import GPTConfig
from npgpt.layers import cross_entropy, dropout, embedding, gelu, layer_norm, linear

LAYERS = (linear, gelu, layer_norm, cross_entropy, embedding, dropout)
RUNS = [(256, "plain"), (1024, "plain"), (1024, "blocked")]


def _kernel_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def profile(T: int, attention: str) -> dict:
    wall: collections.Counter = collections.Counter()
    kernel: collections.Counter = collections.Counter()
    originals = []

    def timed(module, name):
        real = getattr(module, name)
        key = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"

        def call(*args, **kwargs):
            t, k = time.perf_counter(), _kernel_s()
            out = real(*args, **kwargs)
            wall[key] += time.perf_counter() - t
            kernel[key] += _kernel_s() - k
            return out

        originals.append((module, name, real))
        setattr(module, name, call)

    for module in LAYERS:
        timed(module, "forward")
        timed(module, "backward")
    try:
        cfg = GPTConfig.preset("gpt2-small", context_length=1024, drop_rate=0.1)
        model = GPTModel(cfg, seed=0, attention=attention, reuse_grad_buffers=True)  # as npgpt train runs it
        ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, T))
        opt = AdamW(model.params, lr=4e-4, weight_decay=0.1)
        steps, adamw = 2, 0.0
        for i in range(steps + 1):
            if i == 1:
                wall.clear(), kernel.clear()
                t0 = time.perf_counter()
            _, grads = model.loss_and_grads(ids, ids)
            t = time.perf_counter()
            opt.step(grads)
            if i:
                adamw += time.perf_counter() - t
            del grads
        step = (time.perf_counter() - t0) / steps
    finally:
        for module, name, real in originals:
            setattr(module, name, real)
    phases = {k: {"wall_s": v / steps, "kernel_s": kernel[k] / steps} for k, v in wall.most_common()}
    phases["AdamW"] = {"wall_s": adamw / steps, "kernel_s": None}
    rest = step - sum(p["wall_s"] for p in phases.values())
    phases["attention core and the rest"] = {"wall_s": rest, "kernel_s": None}
    return {"T": T, "attention": attention, "step_s": step, "phases": phases}


def main() -> int:
    m = machine()
    runs = [profile(T, attention) for T, attention in RUNS]
    result = {"machine": m, "date": time.strftime("%Y-%m-%d"), "runs": runs}
    stem = Path("benchmarks/results") / f"phases-{cpu_kind(m['cpu'])}-{m['cores']}core"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# npgpt train step by phase, GPT-2 small B=2 float32 — {m['cpu']}, {m['cores']} cores ({result['date']})"
    ]
    for run in runs:
        lines += [
            "",
            f"## T={run['T']}, {run['attention']} attention: {run['step_s']:.2f} s a step",
            "",
            "| phase | wall s | share | of which kernel s |",
            "|---|---|---|---|",
        ]
        for name, p in sorted(run["phases"].items(), key=lambda kv: -kv[1]["wall_s"]):
            k = "—" if p["kernel_s"] is None else f"{p['kernel_s']:.2f}"
            lines.append(f"| {name} | {p['wall_s']:.3f} | {100 * p['wall_s'] / run['step_s']:.0f}% | {k} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
