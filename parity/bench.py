"""``npgpt bench``: NumPy CPU vs torch CPU vs torch CUDA, side by side and against each device's
measured limits.

The driver starts one worker process per implementation (``python -m parity.bench --worker
numpy-cpu|torch-cpu|torch-cuda``), so no implementation's threads, allocator or warm caches colour
another's numbers; each worker measures its own ceiling first (float32 — and on GPUs bf16 —
matmul FLOP/s, memory bandwidth), then forward, train step (forward + backward + AdamW) and
generation with and without KV cache. Warm-up, then the median of repeats; CUDA timings are
synchronised. FLOPs per token are counted on paper: 6 * N_matmul + 12 * L * C * T for a train
step, a third of that for a forward (N_matmul = 12 L C^2 + V C, the weights used in matmuls).
MFU is those FLOPs per second over the matmul ceiling measured in the same run at the row's
precision (float32, tf32 or bf16), never a datasheet peak.
Results: benchmarks/results/<machine>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from npgpt.config import GPTConfig

# (name, preset, B, T, repeats); the 2-core CPU budget keeps 355M to T <= 256
PLAN_CPU = [
    ("tiny", "tiny", 2, 128, 5),
    ("tiny", "tiny", 2, 256, 5),
    ("124M", "gpt2-small", 2, 128, 3),
    ("124M", "gpt2-small", 2, 256, 3),
    ("124M", "gpt2-small", 2, 1024, 2),
    ("355M", "gpt2-medium", 2, 128, 2),
    ("355M", "gpt2-medium", 2, 256, 2),
]
# GPU: (name, preset, B, T, repeats, modes); torch.compile only at T = 1024 (each shape is a new
# compile of about a minute), 355M at B=8 so the fp32 eager path's (B, H, T, T) caches fit
GPU_EAGER, GPU_ALL = ("fp32", "tf32", "bf16"), ("fp32", "tf32", "bf16", "compiled")
PLAN_GPU = [
    ("124M", "gpt2-small", 16, 256, 10, GPU_EAGER),
    ("124M", "gpt2-small", 16, 1024, 10, GPU_ALL),
    ("355M", "gpt2-medium", 8, 256, 10, GPU_EAGER),
    ("355M", "gpt2-medium", 8, 1024, 10, GPU_ALL),
]
PLAN_GPU_QUICK = [("tiny", "tiny", 8, 128, 5, GPU_ALL), ("tiny", "tiny", 8, 256, 5, GPU_ALL)]
GEN = [("tiny", "tiny", 200), ("124M", "gpt2-small", 50)]  # new tokens from a 4-token prompt


def flops_per_token(cfg: GPTConfig, T: int, train: bool) -> float:
    n_matmul = 12 * cfg.n_layers * cfg.emb_dim**2 + cfg.vocab_size * cfg.emb_dim
    fwd = 2 * n_matmul + 4 * cfg.n_layers * cfg.emb_dim * T
    return 3 * fwd if train else fwd


def median_time(
    fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def peak_rss() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- workers ----------------------------------------------------------------------------------


def _numpy_ceiling() -> dict[str, float]:
    rng = np.random.default_rng(0)
    n = 2048
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    src = np.ones(1 << 26, dtype=np.float32)  # 256 MiB
    dst = np.empty_like(src)
    return {
        "float32_matmul_flops": 2 * n**3 / median_time(lambda: a @ b, 7, 2),
        "memory_bytes_per_s": 2 * src.nbytes / median_time(lambda: np.copyto(dst, src), 5, 1),  # read + write
    }


def _numpy_row(name: str, preset: str, B: int, T: int, repeats: int, ceiling: float) -> dict:
    from npgpt import AdamW, GPTModel

    cfg = GPTConfig.preset(preset, context_length=max(T, 1024 if preset != "tiny" else T), drop_rate=0.1)
    model = GPTModel(cfg, seed=0)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T))
    opt = AdamW(model.params, lr=4e-4, weight_decay=0.1)

    def step() -> None:
        _, grads = model.loss_and_grads(ids, ids)
        opt.step(grads)

    model.eval()
    fwd = median_time(lambda: model(ids), repeats)
    model.train()
    reset_peak_rss()
    train = median_time(step, repeats)
    return _row("numpy-cpu", "fp32", name, cfg, B, T, fwd, train, peak_rss(), ceiling)


def _numpy_gen(name: str, preset: str, n_new: int) -> dict:
    from npgpt import GPTModel, generate

    model = GPTModel(GPTConfig.preset(preset), seed=0).eval()
    idx = np.arange(4)[None] + 100
    times = {c: median_time(lambda c=c: generate(model, idx, n_new, 1024, use_cache=c), 1, 0) for c in (True, False)}
    return _gen_row("numpy-cpu", name, n_new, times)


def numpy_worker(plan, gen) -> dict:
    ceiling = _numpy_ceiling()
    rows = []
    for name, preset, B, T, repeats in plan:
        rows.append(_numpy_row(name, preset, B, T, repeats, ceiling["float32_matmul_flops"]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"ceiling": ceiling, "rows": rows, "generation": [_numpy_gen(*g) for g in gen]}


def _torch_ceiling(device: str, sync: Callable[[], None]) -> dict[str, float]:
    import torch

    cuda = device == "cuda"
    n = 8192 if cuda else 2048
    ceiling: dict[str, float] = {}
    kinds = (("float32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False))
    for label, dtype, tf32 in kinds if cuda else kinds[:1]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        ceiling[f"{label}_matmul_flops"] = 2 * n**3 / median_time(lambda a=a, b=b: a @ b, 10, 3, sync)
    src = torch.ones(1 << 26, device=device)
    dst = torch.empty_like(src)
    ceiling["memory_bytes_per_s"] = 2 * src.numel() * 4 / median_time(lambda: dst.copy_(src), 10, 2, sync)
    return ceiling


def torch_step(mode: str, device: str, preset: str, B: int, T: int):
    """(cfg, model, forward, step) for one mode. fp32: the book's eager model; tf32: + TF32
    matmuls; bf16: + bf16 autocast, SDPA, fused AdamW; compiled: bf16 + torch.compile of the
    forward and the loss together (the logits' float32 cast and cross-entropy fuse with it
    instead of making extra passes over B*T*V); compiled-model: bf16 + torch.compile of the
    model alone, the loss eager (what ``compile_model`` did before)."""
    import torch

    from torchgpt import GPTModel, set_attention

    cuda = device == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = mode != "fp32"
    cfg = GPTConfig.preset(preset, context_length=max(T, 1024 if preset != "tiny" else T), drop_rate=0.1)
    model = GPTModel(cfg).to(device)
    fast = mode in ("bf16", "compiled", "compiled-model")
    if fast:
        set_attention(model, "sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=True if fast and cuda else None)
    ids = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    if mode.startswith("compiled"):
        torch._dynamo.reset()
    run = torch.compile(model, dynamic=False) if mode == "compiled-model" else model

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=fast):
            return run(x)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits_of(x).flatten(0, 1).float(), x.flatten())

    if mode == "compiled":
        logits_of, loss_of = torch.compile(logits_of, dynamic=False), torch.compile(loss_of, dynamic=False)

    def forward() -> None:
        with torch.no_grad():
            logits_of(ids)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_of(ids).backward()
        opt.step()

    return cfg, model, forward, step


def _torch_row(mode: str, device: str, name: str, preset: str, B: int, T: int, repeats: int, ceiling: dict) -> dict:
    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg, model, forward, step = torch_step(mode, device, preset, B, T)
    warmup = 3 if mode.startswith("compiled") else 1
    model.eval()
    fwd = median_time(forward, repeats, warmup, sync)
    model.train()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()
    train = median_time(step, repeats, warmup, sync)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss()
    key = {"fp32": "float32_matmul_flops", "tf32": "tf32_matmul_flops"}.get(mode, "bf16_matmul_flops")
    return _row(f"torch-{device}", mode, name, cfg, B, T, fwd, train, peak, ceiling[key])


def _torch_gen(device: str, name: str, preset: str, n_new: int) -> dict:
    import torch

    from torchgpt import GPTModel, generate

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = GPTModel(GPTConfig.preset(preset)).to(device).eval()
    idx = (torch.arange(4, device=device) + 100)[None]
    times = {
        c: median_time(lambda c=c: generate(model, idx, n_new, 1024, use_cache=c), 1, 0, sync) for c in (True, False)
    }
    return _gen_row(f"torch-{device}", name, n_new, times)


def torch_worker(plan, gen, device: str) -> dict:
    """``plan`` rows: (name, preset, B, T, repeats, modes)."""
    import torch

    torch.manual_seed(0)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ceiling = _torch_ceiling(device, sync)
    rows = []
    for name, preset, B, T, repeats, modes in plan:
        for mode in modes:
            rows.append(_torch_row(mode, device, name, preset, B, T, repeats, ceiling))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
    return {"ceiling": ceiling, "rows": rows, "generation": [_torch_gen(device, *g) for g in gen]}


def _row(impl, mode, name, cfg, B, T, fwd, train, peak, ceiling) -> dict:
    tokens = B * T
    return {
        "impl": impl,
        "mode": mode,
        "config": name,
        "B": B,
        "T": T,
        "forward_s": fwd,
        "forward_tok_s": tokens / fwd,
        "forward_flops": flops_per_token(cfg, T, False) * tokens / fwd,
        "forward_frac": flops_per_token(cfg, T, False) * tokens / fwd / ceiling,
        "train_s": train,
        "train_tok_s": tokens / train,
        "train_flops": flops_per_token(cfg, T, True) * tokens / train,
        "train_frac": flops_per_token(cfg, T, True) * tokens / train / ceiling,
        "peak_bytes": peak,
    }


def _gen_row(impl, name, n_new, times) -> dict:
    return {
        "impl": impl,
        "config": name,
        "new_tokens": n_new,
        "cached_tok_s": n_new / times[True],
        "uncached_tok_s": n_new / times[False],
        "speedup": times[False] / times[True],
    }


# --- driver -----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__}


def run_all(out_dir: Path, quick: bool, impls: list[str]) -> dict:
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
        cmd = [sys.executable, "-m", "parity.bench", "--worker", impl] + (["--quick"] if quick else [])
        print(f"== {impl}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            results["notes"].append(f"{impl} worker failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        results["workers"][impl] = json.loads(done.stdout)
    _ratios(results)
    slug = (
        "gpu-" + results["machine"]["gpu"].replace(" ", "-") if has_cuda else f"cpu-{results['machine']['cores']}core"
    )
    stem = out_dir / (f"{slug}-quick" if quick else slug)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(to_markdown(results))
    drew = plot(results, stem.with_suffix(".png"))
    print(to_markdown(results))
    print(f"wrote {stem}.json, .md" + (", .png" if drew else " (no plot: pip install matplotlib)"))
    return results


PRESETS = {"tiny": "tiny", "124M": "gpt2-small", "355M": "gpt2-medium"}


def train_bytes_on_paper(cfg: GPTConfig, B: int, T: int) -> int:
    """npgpt's float32 train step counted on paper: params, grads, AdamW m and v, plus what the
    layer caches keep for backward (array by array) and the head's logits/probs/dlogits."""
    from npgpt.params import num_params

    C, H, V, F, L = cfg.emb_dim, cfg.n_heads, cfg.vocab_size, 4 * cfg.emb_dim, cfg.n_layers
    btc, bhtt, btf = B * T * C, B * H * T * T, B * T * F
    # per block: norm1 (norm_x, out), q/k/v, weights before/after dropout, context, residual,
    # norm2 (norm_x, out), ff hidden/tanh/gelu out, block output; bool masks 1 byte each
    floats = 2 * btc + 3 * btc + 2 * bhtt + btc + btc + 2 * btc + 3 * btf + btc
    bools = bhtt + 3 * btc
    return 4 * 4 * num_params(cfg) + L * (4 * floats + bools) + 4 * (2 * btc + 3 * B * T * V)


def _ratios(results: dict) -> None:
    """numpy / torch-cpu time ratio for matching rows (fp32 eager torch), and npgpt's peak
    memory against the on-paper count."""
    np_rows = results["workers"].get("numpy-cpu", {}).get("rows", [])
    for r in np_rows:
        cfg = GPTConfig.preset(
            PRESETS[r["config"]], context_length=max(r["T"], 1024 if r["config"] != "tiny" else r["T"])
        )
        r["paper_bytes"] = train_bytes_on_paper(cfg, r["B"], r["T"])
        if r["peak_bytes"]:
            r["peak_over_paper"] = r["peak_bytes"] / r["paper_bytes"]
    t_rows = results["workers"].get("torch-cpu", {}).get("rows", [])
    index = {(r["config"], r["B"], r["T"]): r for r in t_rows if r["mode"] == "fp32"}
    for r in np_rows:
        t = index.get((r["config"], r["B"], r["T"]))
        if t:
            r["forward_ratio_vs_torch_cpu"] = r["forward_s"] / t["forward_s"]
            r["train_ratio_vs_torch_cpu"] = r["train_s"] / t["train_s"]


def to_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"# npgpt bench — {m['cpu']}, {m['cores']} cores{', ' + m['gpu'] if 'gpu' in m else ''} ({results['date']})",
        "",
    ]
    for impl, w in results["workers"].items():
        ceil = ", ".join(
            f"{k.replace('_matmul_flops', '')} matmul {v / 1e9:.1f} GFLOP/s"
            if "flops" in k
            else f"memory {v / 1e9:.1f} GB/s"
            for k, v in w["ceiling"].items()
        )
        lines.append(f"- **{impl}** ceiling: {ceil}")
    lines += [
        "",
        "| impl | mode | model | B×T | fwd tok/s | fwd % peak | train step s | train tok/s | train MFU | peak mem GB"
        " | peak / on paper | numpy/torch-cpu step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for impl, w in results["workers"].items():
        for r in w["rows"]:
            ratio = r.get("train_ratio_vs_torch_cpu")
            peak = f"{r['peak_bytes'] / 1e9:.2f}" if r["peak_bytes"] else "—"
            paper = f"{r['peak_over_paper']:.2f}×" if "peak_over_paper" in r else "—"
            lines.append(
                f"| {impl} | {r['mode']} | {r['config']} | {r['B']}×{r['T']} | {r['forward_tok_s']:,.0f} | "
                f"{100 * r['forward_frac']:.0f}% | {r['train_s']:.3f} | {r['train_tok_s']:,.0f} | "
                f"{100 * r['train_frac']:.0f}% | {peak} | {paper} | {f'{ratio:.2f}×' if ratio else '—'} |"
            )
    lines += [
        "",
        "| impl | model | new tokens | KV cache tok/s | no cache tok/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for impl, w in results["workers"].items():
        for g in w["generation"]:
            lines.append(
                f"| {impl} | {g['config']} | {g['new_tokens']} | {g['cached_tok_s']:.1f} | {g['uncached_tok_s']:.1f} | "
                f"{g['speedup']:.1f}× |"
            )
    lines += [""] + [f"- {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> bool:
    """Train step time vs T (124M) and vs model size (T=256), numpy vs torch: where T^2 bites.
    A GPU run instead gets train tokens/s per mode at T=1024, labelled with MFU."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    if "torch-cuda" in results["workers"] and len(results["workers"]) == 1:
        _plot_gpu(results, path, plt)
        return True
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for impl, w in results["workers"].items():
        for mode in sorted({r["mode"] for r in w["rows"]}):
            rows = [r for r in w["rows"] if r["mode"] == mode]
            label = impl if mode == "fp32" else f"{impl} {mode}"
            by_t = sorted((r["T"], r["train_s"] / r["B"]) for r in rows if r["config"] == "124M")
            if by_t:
                ax1.plot(*zip(*by_t, strict=True), marker="o", label=label)
            sizes = {"tiny": 0, "124M": 1, "355M": 2}
            by_size = sorted((sizes[r["config"]], r["train_s"] / r["B"]) for r in rows if r["T"] == 256)
            if by_size:
                ax2.plot(*zip(*by_size, strict=True), marker="o", label=label)
    ax1.set(xscale="log", yscale="log", xlabel="T (tokens per sequence)", ylabel="train step s per sequence",
            title="GPT-2 124M: step time vs T")  # fmt: skip
    ax1.set_xticks([128, 256, 1024], ["128", "256", "1024"])
    ax2.set(yscale="log", xlabel="model", title="step time vs size (T=256)")
    ax2.set_xticks([0, 1, 2], ["tiny", "124M", "355M"])
    for axis in (ax1.xaxis, ax1.yaxis, ax2.yaxis):
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    fig.suptitle(f"{results['machine']['cpu']} ({results['machine']['cores']} cores)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_gpu(results: dict, path: Path, plt) -> None:
    rows = [r for r in results["workers"]["torch-cuda"]["rows"] if r["T"] == 1024]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    sizes = list(dict.fromkeys(r["config"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(sizes)
    for j, size in enumerate(sizes):
        for i, mode in enumerate(modes):
            r = next((r for r in rows if r["mode"] == mode and r["config"] == size), None)
            if r is None:
                continue
            x = i + (j - (len(sizes) - 1) / 2) * width
            ax.bar(x, r["train_tok_s"] / 1e3, width, color=f"C{j}", label=size if i == 0 else None)
            ax.annotate(f"{100 * r['train_frac']:.0f}%", (x, r["train_tok_s"] / 1e3), ha="center", va="bottom",
                        fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(modes)), modes)
    ax.set(ylabel="train tokens/s (thousands)", title="GPT-2 train step at T=1024 (label: MFU vs measured ceiling)")
    ax.legend(fontsize=8)
    fig.suptitle(f"{results['machine']['gpu']}, torch {results['machine'].get('torch', '')}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npgpt bench", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["numpy-cpu", "torch-cpu", "torch-cuda"], help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny config only: a smoke run in seconds")
    parser.add_argument(
        "--impl", default="numpy-cpu,torch-cpu,torch-cuda", help="comma-separated subset (default: all present)"
    )
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.worker:
        gen = [g for g in GEN if not quick or g[0] == "tiny"]
        if args.worker == "torch-cuda":
            plan = PLAN_GPU_QUICK if quick else PLAN_GPU
        else:
            plan = [p for p in PLAN_CPU if not quick or p[0] == "tiny"]
        if args.worker == "numpy-cpu":
            out = numpy_worker(plan, gen)
        else:
            if args.worker == "torch-cpu":
                plan = [(*p, ("fp32",)) for p in plan]
            out = torch_worker(plan, gen, args.worker.removeprefix("torch-"))
        print(json.dumps(out))
        return 0
    run_all(Path(args.out), quick, args.impl.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
