"""npgpt speed and memory on this machine, measured against the machine's own matmul ceiling.

    python benchmarks/bench_npgpt.py [--quick]

Writes benchmarks/results/npgpt-<host>.json and .md. Every ratio in the output is between
numbers measured in this one run. FLOPs are counted on paper: a forward pass costs
2 * N_matmul + 4 * L * C * T per token (N_matmul = weights used in matmuls, 12 L C^2 + V C;
the attention term counts the full T x T score matrix the book computes), a train step three
times that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from npgpt import AdamW, GPTConfig, GPTModel, generate

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeats: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def matmul_ceiling(n: int = 2048, repeats: int = 7) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    t = timed(lambda: a @ b, repeats, warmup=2)
    return 2 * n**3 / t["median_s"]


def flops_per_token(cfg: GPTConfig, T: int) -> float:
    """Forward FLOPs per token; a train step is 3x (backward = 2x forward)."""
    n_matmul = 12 * cfg.n_layers * cfg.emb_dim**2 + cfg.vocab_size * cfg.emb_dim
    return 2 * n_matmul + 4 * cfg.n_layers * cfg.emb_dim * T


def activation_bytes_on_paper(cfg: GPTConfig, B: int, T: int, itemsize: int = 4) -> int:
    """What backward must keep, counted array by array from the layer caches (train mode)."""
    C, H, V, F, L = cfg.emb_dim, cfg.n_heads, cfg.vocab_size, 4 * cfg.emb_dim, cfg.n_layers
    btc, bhtt, btf = B * T * C, B * H * T * T, B * T * F
    per_block_floats = (
        btc  # norm1 norm_x
        + btc  # norm1 out = input of q, k, v projections
        + 3 * btc  # queries, keys, values
        + 2 * bhtt  # attention weights before and after dropout
        + btc  # context_vec (out_proj input)
        + btc  # residual after attention
        + 2 * btc  # norm2 norm_x and out (ff input)
        + 3 * btf  # ff hidden, tanh, gelu output
        + btc  # block output
    )
    per_block_bools = bhtt + 2 * btc  # dropout keep masks
    head = 3 * B * T * V  # logits, softmax probabilities, dlogits
    return L * (per_block_floats * itemsize + per_block_bools) + (2 * btc + head) * itemsize


def bench_config(name: str, cfg: GPTConfig, B: int, T: int, repeats: int, ceiling: float) -> dict:
    model = GPTModel(cfg, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (B, T))
    targets = rng.integers(0, cfg.vocab_size, (B, T))
    optimizer = AdamW(model.params, lr=4e-4, weight_decay=0.1)

    def train_step() -> None:
        _, grads = model.loss_and_grads(ids, targets)
        optimizer.step(grads)

    model.eval()
    fwd = timed(lambda: model(ids), repeats)
    model.train()
    step = timed(train_step, repeats)
    fpt = flops_per_token(cfg, T)
    tokens = B * T
    row = {
        "config": name,
        "B": B,
        "T": T,
        "params": model.num_params(),
        "forward_s": fwd["median_s"],
        "forward_tok_s": tokens / fwd["median_s"],
        "forward_gflops": fpt * tokens / fwd["median_s"] / 1e9,
        "forward_frac_of_matmul": fpt * tokens / fwd["median_s"] / ceiling,
        "train_step_s": step["median_s"],
        "train_tok_s": tokens / step["median_s"],
        "train_gflops": 3 * fpt * tokens / step["median_s"] / 1e9,
        "train_frac_of_matmul": 3 * fpt * tokens / step["median_s"] / ceiling,
        "repeats": repeats,
    }
    # peak memory of one train step, NumPy allocations only (tracemalloc sees them)
    tracemalloc.start()
    train_step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = model.num_params() * 4
    state = 2 * n  # params live outside the traced window; grads are allocated inside it
    on_paper = n + n + state + activation_bytes_on_paper(cfg, B, T)
    row["peak_mem_bytes"] = peak + n + state  # traced (grads + activations + temporaries) + params, m, v
    row["paper_mem_bytes"] = on_paper
    row["peak_over_paper"] = row["peak_mem_bytes"] / on_paper
    return row


def bench_generation(name: str, cfg: GPTConfig, n_new: int, prompt_len: int = 4) -> dict:
    model = GPTModel(cfg, seed=0).eval()
    idx = np.arange(prompt_len)[None] + 100
    out = {}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        generate(model, idx, n_new, cfg.context_length, use_cache=use_cache)
        out["cached_s" if use_cache else "uncached_s"] = time.perf_counter() - t0
    return {
        "config": name,
        "new_tokens": n_new,
        "prompt_tokens": prompt_len,
        **out,
        "cached_tok_s": n_new / out["cached_s"],
        "uncached_tok_s": n_new / out["uncached_s"],
        "speedup": out["uncached_s"] / out["cached_s"],
    }


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def to_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# npgpt benchmark — {m['cpu']}, {m['cores']} cores, NumPy {m['numpy']}",
        "",
        f"NumPy float32 matmul ceiling (2048³, median): **{res['matmul_gflops']:.1f} GFLOP/s**",
        "",
        "| config | B×T | forward s | fwd tok/s | fwd % of matmul | train step s | train tok/s | train % of matmul"
        " | peak mem GB | peak / on paper |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["models"]:
        lines.append(
            f"| {r['config']} | {r['B']}×{r['T']} | {r['forward_s']:.3f} | {r['forward_tok_s']:,.0f} | "
            f"{100 * r['forward_frac_of_matmul']:.0f}% | {r['train_step_s']:.3f} | {r['train_tok_s']:,.0f} | "
            f"{100 * r['train_frac_of_matmul']:.0f}% | {r['peak_mem_bytes'] / 1e9:.2f} | {r['peak_over_paper']:.2f}× |"
        )
    lines += ["", "| generation | new tokens | KV cache tok/s | no cache tok/s | speed-up |", "|---|---|---|---|---|"]
    for g in res["generation"]:
        lines.append(
            f"| {g['config']} | {g['new_tokens']} from {g['prompt_tokens']} | {g['cached_tok_s']:.1f} | "
            f"{g['uncached_tok_s']:.1f} | {g['speedup']:.1f}× |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny config only (seconds)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ceiling = matmul_ceiling()
    print(f"matmul ceiling: {ceiling / 1e9:.1f} GFLOP/s", flush=True)
    tiny = GPTConfig.preset("tiny", drop_rate=0.1)
    small = GPTConfig.preset("gpt2-small", context_length=256)
    models = [bench_config("tiny", tiny, 2, 64, 10, ceiling)]
    generation = [bench_generation("tiny", tiny, 60)]
    if not args.quick:
        models.append(bench_config("gpt2-small (124M)", small, 2, 256, args.repeats, ceiling))
        generation.append(bench_generation("gpt2-small (124M)", small, 200))
    for row in models + generation:
        print(json.dumps(row), flush=True)
    res = {
        "machine": machine(),
        "matmul_gflops": ceiling / 1e9,
        "models": models,
        "generation": generation,
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / ("npgpt-cpu-quick" if args.quick else "npgpt-cpu")
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(res))
    print(to_markdown(res))
    assert math.isfinite(ceiling)


if __name__ == "__main__":
    main()
