"""Where a GPT-2 train step's time goes on one GPU: tokens/s of the opt-in fast paths over a batch
sweep (MFU against the bf16 matmul ceiling measured in the same run), then a torch.profiler
summary of the fastest one, its CUDA kernels grouped by kind.

    python -m benchmarks.gpu_profile [--preset gpt2-small --seq-len 1024 --batch-sizes 16 32]

Writes benchmarks/results/gpu-<name>-profile.{json,md}. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from benchmarks.ceilings import torch_ceiling
from benchmarks.cost_model import flops_per_token
from benchmarks.measure import median_time
from benchmarks.workers import torch_step

# kernel name -> kind, first match wins
KINDS = [
    ("attention (flash/SDPA)", r"flash|fmha|attention"),
    ("matmul (cuBLAS/CUTLASS)", r"gemm|nvjet|cutlass|sm90_xmma|sm80_xmma|cublas"),
    ("AdamW", r"adam|multi_tensor"),
    ("fused elementwise/reduction (Triton)", r"^triton"),
    ("cross-entropy / softmax", r"softmax|nll|cross_entropy|log_softmax"),
    ("memory copy / fill", r"memcpy|memset|copy|fill"),
]


def kind_of(kernel: str) -> str:
    return next((k for k, pat in KINDS if re.search(pat, kernel, re.IGNORECASE)), "other elementwise")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpt2-small")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    p.add_argument("--modes", nargs="+", default=["compiled-model", "compiled"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        print("gpu_profile.py needs CUDA", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize
    ceiling = torch_ceiling("cuda", sync)
    T = args.seq_len
    sweep = []
    best = None
    for mode in args.modes:
        for B in args.batch_sizes if mode == "compiled" else args.batch_sizes[:1]:
            t0 = time.perf_counter()
            cfg, model, _, step = torch_step(mode, "cuda", args.preset, B, T)
            model.train()
            for _ in range(3):  # compile and warm up
                step()
            sync()
            compile_s = time.perf_counter() - t0
            torch.cuda.reset_peak_memory_stats()
            s = median_time(step, args.repeats, 0, sync)
            row = {
                "mode": mode,
                "B": B,
                "T": T,
                "step_s": s,
                "tok_s": B * T / s,
                "mfu_bf16": flops_per_token(cfg, T, True) * B * T / s / ceiling["bf16_matmul_flops"],
                "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
                "warmup_s": compile_s,
            }
            sweep.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if best is None or row["tok_s"] > best[0]["tok_s"]:
                best = (row, step)
            del model, step
            torch.cuda.empty_cache()

    row, step = best
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.profile_steps):
            step()
        sync()
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    total_us = sum(e.self_device_time_total for e in kernels) / args.profile_steps
    by_kind: dict[str, float] = {}
    for e in kernels:
        by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + e.self_device_time_total / args.profile_steps
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:15]
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "ceiling": ceiling,
        "sweep": sweep,
        "profiled": {k: row[k] for k in ("mode", "B", "T")},
        "step_ms": row["step_s"] * 1e3,
        "kernel_ms_per_step": total_us / 1e3,
        "by_kind_ms": {k: v / 1e3 for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_kernels": [
            {
                "kernel": e.key[:120],
                "ms_per_step": e.self_device_time_total / 1e3 / args.profile_steps,
                "calls": e.count,
            }
            for e in top
        ],
    }
    name = result["device"].replace(" ", "-")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"gpu-{name}-profile"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    md = [
        f"# GPT-2 {args.preset} train step on {result['device']}, T={T} (torch {torch.__version__}, {result['date']})",
        "",
        f"Measured bf16 matmul ceiling: {ceiling['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s. MFU = on-paper FLOPs per "
        "second over that ceiling.",
        "",
        "| mode | B×T | step ms | tokens/s | MFU (bf16) | peak GB | compile + warm-up s |",
        "|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['mode']} | {r['B']}×{r['T']} | {r['step_s'] * 1e3:.1f} | {r['tok_s']:,.0f} | {100 * r['mfu_bf16']:.0f}% "
        f"| {r['peak_gb']:.1f} | {r['warmup_s']:.0f} |"
        for r in sweep
    ]
    md += [
        "",
        f"## torch.profiler: {row['mode']}, B={row['B']} ({args.profile_steps} steps)",
        "",
        f"Step {result['step_ms']:.1f} ms wall; CUDA kernels {result['kernel_ms_per_step']:.1f} ms "
        f"({100 * result['kernel_ms_per_step'] / result['step_ms']:.0f}% of the step: the rest is the GPU waiting).",
        "",
        "| kernel kind | ms per step | share of kernel time |",
        "|---|---|---|",
    ]
    md += [
        f"| {k} | {v:.2f} | {100 * v / result['kernel_ms_per_step']:.0f}% |" for k, v in result["by_kind_ms"].items()
    ]
    md += ["", "| top kernels | ms per step | calls |", "|---|---|---|"]
    md += [f"| `{k['kernel'][:90]}` | {k['ms_per_step']:.2f} | {k['calls']} |" for k in result["top_kernels"]]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {stem}.json, .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
