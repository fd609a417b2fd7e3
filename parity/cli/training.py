"""``npgpt train``, ``npgpt demo`` and ``npgpt generate`` for either implementation
(``--impl numpy|torch``). torch is imported only when ``--impl torch`` asks for it, so a NumPy-only
install runs all three."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from npgpt.errors import NpgptError
from npgpt.files import run_lock
from npgpt.validate import check_values
from parity.cli import torch_flags
from parity.cli.runs import DefaultsHelp, Runner, examples, parse_overrides

DEMO_MARKER = ".npgpt-demo"
DEFAULT_OUT = "runs/npgpt"
DEMO_OUT = "runs/demo"


def _add_train_args(
    p: argparse.ArgumentParser,
    *,
    config: str,
    context_length: int,
    epochs: int,
    lr: float,
    start_context: str,
    out: str = DEFAULT_OUT,
) -> None:
    p.add_argument("--text", help="UTF-8 training text (default: a short story embedded in npgpt)")
    p.add_argument("--config", default=config, help="gpt2-small|gpt2-medium|gpt2-large|gpt2-xl|tiny")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="vocabulary: GPT-2's BPE cut to its first merges below 50257 (default: the config's; tiny: 512)",
    )
    p.add_argument(
        "--context-length",
        type=int,
        default=context_length,
        help="tokens per training sequence (the book's chapter 5 uses 256)",
    )
    p.add_argument("--drop-rate", type=float, default=0.1, help="dropout probability, in [0, 1)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter dtype")
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the training text")
    p.add_argument("--batch-size", type=int, default=2, help="sequences per optimizer step")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW's decoupled weight decay")
    p.add_argument("--eval-freq", type=int, default=5, help="evaluate every N steps")
    p.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    p.add_argument("--start-context", default=start_context, help="prompt of the sample printed each epoch")
    p.add_argument("--sample-tokens", type=int, default=50, help="tokens of the sample printed each epoch")
    p.add_argument("--seed", type=int, default=123, help="weights, data order and dropout")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant", help="appendix D: cosine")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warmup steps (appendix D: 20%% of them)")
    p.add_argument("--initial-lr", type=float, default=3e-5, help="lr at the start of the warmup")
    p.add_argument("--min-lr", type=float, default=1e-6, help="lr at the end of the cosine decay")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the global gradient norm (appendix D: 1.0)")
    p.add_argument("--out", default=out, help="directory for the checkpoint, losses.png, history.json")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument(
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="with --resume: change lr or grad_clip from here on (after a divergence); recorded in the run",
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps this call (resume later)")


def _add_impl_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", choices=["numpy", "torch"], default="numpy", help="implementation")
    p.add_argument("--device", default="auto", help="torch only: auto|cpu|cuda|mps")


def _add_generate_args(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--checkpoint", required=True, help="checkpoint.npz (or .pth with --impl torch) from train")
    gen.add_argument("--prompt", default="Every effort moves you", help="the text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (fewer at <|endoftext|>)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None, help="sampling seed (default: fresh randomness)")
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole context every token")
    gen.add_argument("--no-eos", action="store_true", help="do not stop at <|endoftext|>")
    _add_impl_args(gen)


def generate_args(argv: list[str]) -> argparse.Namespace:
    """``npgpt generate``'s arguments parsed from ``argv``, every other flag at its default (how
    ``demo`` calls it: a new generate flag needs no edit there)."""
    parser = argparse.ArgumentParser(prog="npgpt generate")
    _add_generate_args(parser)
    return parser.parse_args(argv)


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Runner]:
    fmt = {"formatter_class": DefaultsHelp}
    train = sub.add_parser(
        "train",
        help="train with the book's chapter 5 / appendix D loop",
        epilog=examples(
            "npgpt train --config tiny --epochs 2                # the embedded story, into runs/npgpt",
            "npgpt train --text my_story.txt --schedule cosine --warmup-steps 20 --grad-clip 1.0 --out runs/mine",
            "npgpt train --out runs/mine --resume --text my_story.txt",
        ),
        **fmt,
    )
    _add_train_args(
        train, config="gpt2-small", context_length=256, epochs=10, lr=4e-4, start_context="Every effort moves you"
    )
    demo = sub.add_parser(
        "demo",
        help="train a tiny model on the embedded story (a few seconds on two CPU cores), then generate",
        epilog=examples("npgpt demo", "npgpt demo --impl torch", "npgpt demo --epochs 10 --out runs/quick-demo"),
        **fmt,
    )
    # tiny's 512-token vocabulary spends about two characters a token: its whole context of 64
    _add_train_args(
        demo, config="tiny", context_length=64, epochs=40, lr=2e-3, start_context="The lighthouse keeper", out=DEMO_OUT
    )
    gen = sub.add_parser(
        "generate",
        help="continue a prompt with a trained checkpoint",
        epilog=examples(
            'npgpt generate --checkpoint runs/demo/checkpoint.npz --prompt "The lighthouse keeper"',
            "npgpt generate --checkpoint runs/npgpt/checkpoint.npz --temperature 1.4 --top-k 25 --seed 1",
            "npgpt generate --impl torch --checkpoint runs/npgpt/checkpoint.pth --max-new-tokens 100",
        ),
        **fmt,
    )
    _add_generate_args(gen)
    for p in (train, demo):
        _add_impl_args(p)
    for p in (train, demo):
        torch_flags.add_speed_flags(p)
    return {"train": _runner("train"), "generate": _runner("generate"), "demo": run_demo}


def _runners(args: argparse.Namespace):
    """The module with ``run_train``, ``run_generate`` and ``CHECKPOINT`` for ``--impl``."""
    used = torch_flags.used(args)
    if args.impl == "numpy":
        if used:
            raise NpgptError(f"{', '.join(used)}: torch options; add --impl torch")
    elif getattr(args, "attention", None) == torch_flags.NUMPY_ATTENTION:
        raise NpgptError("--attention blocked is npgpt's (--impl numpy); torch's long-context attention is sdpa")
    if args.impl == "numpy":
        from parity.cli import numpy_runs

        return numpy_runs
    try:
        from parity.cli import torch_runs
    except ImportError as exc:
        if exc.name == "torch":
            raise NpgptError("--impl torch needs PyTorch; pip install 'npgpt[torch]'") from None
        raise
    return torch_runs


def _runner(name: str) -> Runner:
    def run(args: argparse.Namespace) -> int:
        if name != "train":
            return getattr(_runners(args), f"run_{name}")(args)
        parse_overrides(args)  # --override without --resume, or a key it cannot change: refused first
        with _locked(args.out):
            return _runners(args).run_train(args)

    return run


def _locked(out: str) -> contextlib.AbstractContextManager[None]:
    """The run directory's lock (npgpt.files.run_lock), taken by one process: under torchrun the
    rank-0 process holds it for all ranks."""
    return run_lock(out) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()


def run_demo(args: argparse.Namespace) -> int:
    """Train on the embedded story, then print a greedy continuation of the start context.

    The demo owns its output directory: a marker file says so, and a second demo replaces the
    first's files (never a directory the demo did not make). It saves one checkpoint, at the end."""
    check_values(vars(args))  # a bad value is refused before the earlier demo's files are replaced
    runners = _runners(args)
    out = Path(args.out)
    with _locked(args.out):
        return _demo(args, runners, out)


def _demo(args: argparse.Namespace, runners: Any, out: Path) -> int:
    marker = out / DEMO_MARKER
    if (out / runners.CHECKPOINT).exists() and not args.resume:
        if not marker.is_file():
            raise NpgptError(f"{out} holds a training run that is not a demo; pass another --out")
        for name in (runners.CHECKPOINT, "history.json", "losses.png"):
            (out / name).unlink(missing_ok=True)  # the earlier demo's own files
        print(f"replacing the earlier demo run in {out}")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by `npgpt demo`; a later demo replaces this directory's demo files\n")
    code = runners.run_train(args, save_on_eval=False)
    if code:
        return code
    gen_args = generate_args(
        [
            f"--checkpoint={out / runners.CHECKPOINT}",
            f"--prompt={args.start_context}",  # '=': a prompt may start with '-'
            f"--max-new-tokens={args.sample_tokens}",
            f"--impl={args.impl}",
            f"--device={args.device}",
        ]
    )
    print("\ngreedy continuation with the KV cache:")
    return runners.run_generate(gen_args)
