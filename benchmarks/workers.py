"""The worker processes: one per implementation (``python -m benchmarks.workers numpy-cpu|
torch-cpu|torch-cuda [--quick]``), so no implementation's threads, allocator or warm caches colour
another's numbers. Each measures its ceilings, then forward, train step (forward + backward +
AdamW) and generation with and without the KV cache, and prints its rows as JSON. npgpt's train
step runs as ``npgpt train`` runs it, each step's gradients written into the last step's arrays
(``GPTModel(reuse_grad_buffers=True)``, npgpt/workspace.py): faster (no fresh memory faulted in
every step), and those buffers stay allocated between steps (the peak-memory column shows it)."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmarks.ceilings import numpy_ceiling, torch_ceiling
from benchmarks.cost_model import flops_per_token
from benchmarks.measure import median_time, peak_rss, reset_peak_rss
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

# npgpt's opt-in block-skipping attention (npgpt/layers/blocked_attention.py), beside the plain rows
PLAN_BLOCKED = [("124M", "gpt2-small", 2, 256, 3), ("124M", "gpt2-small", 2, 1024, 2)]

# --targets: only the rows issue 24's targets name (npgpt/torch at T=256 plain and T=1024 blocked),
# so a lent machine's 2-core run fits in minutes; no generation rows
PLAN_TARGETS_CPU = [("124M", "gpt2-small", 2, 256, 3), ("124M", "gpt2-small", 2, 1024, 2)]
PLAN_TARGETS_BLOCKED = [("124M", "gpt2-small", 2, 1024, 2)]


def _numpy_row(name: str, preset: str, B: int, T: int, repeats: int, ceiling: float, attention: str = "plain") -> dict:
    from npgpt import AdamW, GPTModel

    cfg = GPTConfig.preset(preset, context_length=max(T, 1024 if preset != "tiny" else T), drop_rate=0.1)
    # as `npgpt train` runs it: each step's gradients written into the last step's arrays (npgpt/workspace.py)
    model = GPTModel(cfg, seed=0, attention=attention, reuse_grad_buffers=True)
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
    mode = "fp32" if attention == "plain" else f"fp32 {attention}"
    return _row("numpy-cpu", mode, name, cfg, B, T, fwd, train, peak_rss(), ceiling)


def _numpy_gen(name: str, preset: str, n_new: int) -> dict:
    from npgpt import GPTModel, generate

    model = GPTModel(GPTConfig.preset(preset), seed=0).eval()
    idx = np.arange(4)[None] + 100
    times = {c: median_time(lambda c=c: generate(model, idx, n_new, 1024, use_cache=c), 1, 0) for c in (True, False)}
    return _gen_row("numpy-cpu", name, n_new, times)


def numpy_worker(plan, gen, blocked=PLAN_BLOCKED) -> dict:
    """``plan`` rows run with the plain attention, ``blocked`` rows (when the plan has a 124M row)
    with the blocked one."""
    ceiling = numpy_ceiling()
    rows = []
    for name, preset, B, T, repeats in plan:
        rows.append(_numpy_row(name, preset, B, T, repeats, ceiling["float32_matmul_flops"]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for name, preset, B, T, repeats in blocked if any(p[1] == "gpt2-small" for p in plan) else ():
        rows.append(_numpy_row(name, preset, B, T, repeats, ceiling["float32_matmul_flops"], "blocked"))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"ceiling": ceiling, "rows": rows, "generation": [_numpy_gen(*g) for g in gen]}


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
    ceiling = torch_ceiling(device, sync)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.splitlines()[0])
    parser.add_argument("worker", choices=["numpy-cpu", "torch-cpu", "torch-cuda"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", action="store_true", help="CPU: only the rows issue 24's targets name")
    args = parser.parse_args(argv)
    quick = args.quick
    gen = [] if args.targets else [g for g in GEN if not quick or g[0] == "tiny"]
    if args.worker == "torch-cuda":
        plan = PLAN_GPU_QUICK if quick else PLAN_GPU
    elif args.targets:
        plan = PLAN_TARGETS_CPU[:1] if args.worker == "numpy-cpu" else PLAN_TARGETS_CPU
    else:
        plan = [p for p in PLAN_CPU if not quick or p[0] == "tiny"]
    if args.worker == "numpy-cpu":
        out = numpy_worker(plan, gen, PLAN_TARGETS_BLOCKED if args.targets else PLAN_BLOCKED)
    else:
        if args.worker == "torch-cpu":
            plan = [(*p, ("fp32",)) for p in plan]
        out = torch_worker(plan, gen, args.worker.removeprefix("torch-"))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
