"""The ``npgpt`` console script: train, generate and demo with ``--impl numpy|torch``.

It lives here, at the top of the dependency graph, because it reaches both implementations;
torch is imported only when ``--impl torch`` asks for it, so a core install (NumPy only) runs
every NumPy command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from npgpt import cli as np_cli
from npgpt.errors import NpgptError


def _add_impl_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", choices=["numpy", "torch"], default="numpy", help="implementation (default numpy)")
    p.add_argument("--device", default="auto", help="torch only: auto|cpu|cuda|mps (default auto)")


TORCH_TRAIN_DEFAULTS = {"attention": "book", "amp": "none", "compile": False, "fused_adamw": False, "tf32": False,
                        "grad_accum": 1}  # fmt: skip


def _add_torch_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("torch speed-ups (opt-in, same weights and math; --impl torch only)")
    g.add_argument("--attention", choices=["book", "sdpa"], default="book", help="sdpa: flash attention on GPUs")
    g.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--fused-adamw", action="store_true", help="single-kernel AdamW (CUDA)")
    g.add_argument("--tf32", action="store_true", help="TF32 tensor cores for float32 matmuls")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")


def _torch_cli():
    try:
        from torchgpt import cli as torch_cli
    except ImportError as exc:
        if exc.name == "torch":
            raise NpgptError("--impl torch needs PyTorch; pip install 'npgpt[torch]'") from None
        raise
    return torch_cli


def _dispatch(name: str):
    def run(args: argparse.Namespace) -> int:
        used = [k for k, v in TORCH_TRAIN_DEFAULTS.items() if getattr(args, k, v) != v]
        if args.impl == "numpy" and used:
            flags = ", ".join("--" + k.replace("_", "-") for k in used)
            raise NpgptError(f"{flags}: torch options; add --impl torch")
        if args.impl == "numpy":
            return getattr(np_cli, f"run_{name}")(args)
        return getattr(_torch_cli(), f"run_{name}")(args)

    return run


def _demo(args: argparse.Namespace) -> int:
    if args.impl == "numpy" and any(getattr(args, k) != v for k, v in TORCH_TRAIN_DEFAULTS.items()):
        raise NpgptError("torch speed-up options need --impl torch")
    if args.impl == "numpy":
        return np_cli.run_demo(args)
    torch_cli = _torch_cli()
    return np_cli.run_demo(args, torch_cli.run_train, torch_cli.run_generate, torch_cli.CHECKPOINT)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="load the same weights into npgpt and torchgpt and compare every tensor (the main job)",
        description="Compare npgpt against torchgpt: every block output, logits, loss, all gradients, and "
        "loss/params/AdamW moments over k steps with dropout on (shared masks). Exits 1 if anything fails.",
    )
    p.add_argument("--weights", help="OpenAI checkpoint dir, .safetensors, .npz or .pth (default: random weights)")
    p.add_argument("--config", default="gpt2-small", help="shape of the random weights (default %(default)s)")
    p.add_argument("--dtype", choices=["float64", "float32", "both"], default="float64")
    p.add_argument("--steps", type=int, default=10, help="AdamW steps to compare (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device of the torch reference: cpu or cuda")
    p.add_argument("--json", help="also write every row to this JSON file")
    p.add_argument("--quiet", action="store_true", help="print failing rows and the summary only")


def _add_weights_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download OpenAI's GPT-2 weights (resumable, size- and hash-checked)")
    p.add_argument("model_size", choices=["124M", "355M", "774M", "1558M"])
    p.add_argument(
        "--source", choices=["openai", "hf"], default="openai", help="openai TF checkpoint or HF safetensors"
    )
    p.add_argument("--models-dir", default="models")
    p.add_argument("--base-url", default=None, help="a mirror serving the same paths (default: the book's URLs)")
    c = sub.add_parser("convert", help="convert weights between OpenAI dir, .safetensors, .npz and .pth")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--format", choices=["openai", "safetensors", "npz", "pth"], default=None, help="default: from DST")
    c.add_argument("--force", action="store_true", help="replace an existing DST file (never a directory)")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="NumPy CPU vs torch CPU vs torch CUDA against each device's measured limits")
    p.add_argument("--quick", action="store_true", help="tiny config only: a smoke run in seconds")
    p.add_argument("--impl", default="numpy-cpu,torch-cpu,torch-cuda", help="comma-separated subset")
    p.add_argument("--out", default="benchmarks/results")


def run_bench(args: argparse.Namespace) -> int:
    from parity import bench

    return bench.main([*(["--quick"] if args.quick else []), "--impl", args.impl, "--out", args.out])


def run_download(args: argparse.Namespace) -> int:
    from parity.download import download

    folder = download(args.model_size, args.models_dir, args.source, args.base_url)
    print(f"{folder}: ready (npgpt check --weights {folder})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from parity.weights import check_destination, load_weights, save_weights

    src, dst = Path(args.src).resolve(), Path(args.dst).resolve()
    if src == dst or dst in src.parents:
        raise NpgptError(f"DST {args.dst} is SRC or contains it; write the converted weights somewhere else")
    check_destination(dst, args.force)  # before the (possibly slow) load
    cfg, params = load_weights(args.src)
    out = save_weights(args.dst, cfg, params, args.format, overwrite=args.force)
    n = sum(v.size for v in params.values())
    print(f"{args.src} -> {out}: {len(params)} tensors, {n:,} numbers ({cfg.n_layers} layers, emb {cfg.emb_dim})")
    return 0


def run_check_command(args: argparse.Namespace) -> int:
    from parity.check import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser, sub = np_cli.build_parser(_add_impl_args)
    for name in ("train", "demo"):
        _add_torch_train_args(sub.choices[name])
    _add_check(sub)
    _add_weights_commands(sub)
    _add_bench(sub)
    np_cli.add_debug_flag(sub)
    args = np_cli.parse(parser, sub, argv)
    runners = {
        "train": _dispatch("train"),
        "generate": _dispatch("generate"),
        "demo": _demo,
        "check": run_check_command,
        "download": run_download,
        "convert": run_convert,
        "bench": run_bench,
    }
    return np_cli.run_command(args, runners)


if __name__ == "__main__":
    sys.exit(main())
