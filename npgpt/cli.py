"""The ``npgpt`` command: ``train``, ``generate`` and ``demo``.

Every NpgptError becomes one line on stderr and exit status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from npgpt.checkpoint import check_output_dir, load_checkpoint
from npgpt.config import GPTConfig
from npgpt.data import create_dataloader_v1, train_val_split
from npgpt.errors import NpgptError
from npgpt.generate import generate
from npgpt.model import GPTModel
from npgpt.optim import AdamW
from npgpt.plot import plot_losses
from npgpt.tokenizer import EOT_ID, get_tokenizer, read_text, text_to_token_ids, token_ids_to_text
from npgpt.train import TrainState, load_training, train_model
from npgpt.validate import check_values

CHECKPOINT = "checkpoint.npz"
DEMO_MARKER = ".npgpt-demo"
Runner = Callable[[argparse.Namespace], int]
# Flags whose values define a run; a resumed run takes them from its checkpoint.
RUN_FLAGS = [
    "config",
    "context_length",
    "drop_rate",
    "dtype",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "eval_freq",
    "eval_iter",
    "start_context",
    "seed",
    "schedule",
    "warmup_steps",
    "initial_lr",
    "min_lr",
    "grad_clip",
    "sample_tokens",
]


def embedded_text() -> str:
    """A short original story shipped with the package: the default training text."""
    return (resources.files("npgpt") / "data" / "sample.txt").read_text(encoding="utf-8")


def _add_train_args(
    p: argparse.ArgumentParser, *, config: str, context_length: int, epochs: int, lr: float, start_context: str
) -> None:
    p.add_argument("--text", help="UTF-8 training text (default: a short story embedded in npgpt)")
    p.add_argument(
        "--config", default=config, help="gpt2-small|gpt2-medium|gpt2-large|gpt2-xl|tiny (default %(default)s)"
    )
    p.add_argument(
        "--context-length",
        type=int,
        default=context_length,
        help="tokens per training sequence (default %(default)s; the book's chapter 5 uses 256)",
    )
    p.add_argument("--drop-rate", type=float, default=0.1, help="dropout probability, in [0, 1)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter dtype")
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the training text")
    p.add_argument("--batch-size", type=int, default=2, help="sequences per optimizer step")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
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
    p.add_argument("--out", default="runs/npgpt", help="directory for checkpoint.npz, losses.png, history.json")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps this call (resume later)")


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser(
    add_run_args: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The train/demo/generate parser; ``add_run_args`` adds options to all three (e.g. --impl).

    Returns the parser and its subparsers so a higher layer can add commands.
    """
    parser = argparse.ArgumentParser(prog="npgpt", description="GPT-2 in NumPy and PyTorch: train, generate, check.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = {"formatter_class": DefaultsHelp}
    train = sub.add_parser("train", help="train with the book's chapter 5 / appendix D loop", **fmt)
    _add_train_args(
        train, config="gpt2-small", context_length=256, epochs=10, lr=4e-4, start_context="Every effort moves you"
    )
    demo = sub.add_parser(
        "demo", help="train a tiny model on the embedded story (about 20 s on two CPU cores), then generate", **fmt
    )
    _add_train_args(demo, config="tiny", context_length=32, epochs=40, lr=2e-3, start_context="The lighthouse keeper")

    gen = sub.add_parser("generate", help="continue a prompt with a trained checkpoint", **fmt)
    gen.add_argument("--checkpoint", required=True, help="checkpoint.npz written by npgpt train")
    gen.add_argument("--prompt", default="Every effort moves you")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None, help="sampling seed (default: fresh randomness)")
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole context every token")
    gen.add_argument("--no-eos", action="store_true", help="do not stop at <|endoftext|>")
    if add_run_args is not None:
        for p in (train, demo, gen):
            add_run_args(p)
    return parser, sub


def parse(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction, argv: Sequence[str] | None):
    """Parse, and remember the subcommand's defaults (to tell flags given on the command line)."""
    args = parser.parse_args(argv)
    own = sub.choices[args.command]
    args.run_defaults = {a.dest: own.get_default(a.dest) for a in own._actions}
    return args


class StopRequest:
    """Set by SIGINT (Ctrl-C) or SIGTERM (schedulers, ``timeout``) while training: the trainer
    saves after the current step and stops; the command then exits with 128 + the signal number
    (130, 143), as a shell expects of an interrupted program."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 0 if self.signum is None else 128 + self.signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While training: the first SIGINT or SIGTERM asks for a stop after the current step; a
    second one aborts at once."""
    stop = StopRequest()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.signum is not None:
            raise KeyboardInterrupt
        stop.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: stopping after this step and saving a checkpoint (send it again to abort)", file=sys.stderr)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def apply_saved_run_flags(args: argparse.Namespace, saved: dict[str, Any], ckpt: Path) -> None:
    """A resumed run keeps the hyperparameters it was started with. A flag given on this command
    line with another value is refused, by name, rather than silently ignored."""
    defaults = getattr(args, "run_defaults", {})
    conflicts = [
        f"--{k.replace('_', '-')} {getattr(args, k)} (the run has {v})"
        for k, v in saved.items()
        if k in defaults and getattr(args, k, None) not in (defaults[k], v)
    ]
    if conflicts:
        raise NpgptError(
            f"{', '.join(conflicts)}: a resumed run keeps the settings saved in {ckpt}; drop these flags, "
            "or start a new run in another --out"
        )
    for name, value in saved.items():
        setattr(args, name, value)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_train(args: argparse.Namespace) -> int:
    check_values(vars(args))
    out = Path(args.out)
    ckpt = out / CHECKPOINT
    text = read_text(args.text) if args.text else embedded_text()
    tokenizer = get_tokenizer()
    if args.resume:
        model, optimizer, state, meta = load_training(ckpt)
        if meta.get("text_sha256") != text_sha256(text):
            raise NpgptError(f"{ckpt} was trained on a different text; pass the same --text to resume")
        apply_saved_run_flags(args, meta["args"], ckpt)  # the run's own hyperparameters
        print(f"resuming {ckpt} at step {state.global_step + 2} (epoch {state.epoch + 1})")
    else:
        if ckpt.exists():
            raise NpgptError(f"{ckpt} exists; pass --resume to continue it or a new --out directory")
        cfg = GPTConfig.preset(args.config, context_length=args.context_length, drop_rate=args.drop_rate)
        model = GPTModel(cfg, seed=args.seed, dtype=np.dtype(args.dtype))
        optimizer = AdamW(model.params, lr=args.lr, weight_decay=args.weight_decay)
        state = TrainState()
    cfg = model.cfg
    check_output_dir(out, 3 * model.num_params() * model.dtype.itemsize)  # params, AdamW m and v
    train_text, val_text = train_val_split(text)
    T = cfg.context_length
    train_loader = create_dataloader_v1(
        train_text, args.batch_size, T, T, True, True, seed=args.seed, tokenizer=tokenizer
    )
    val_loader = create_dataloader_v1(
        val_text, args.batch_size, T, T, False, False, seed=args.seed, tokenizer=tokenizer
    )
    if len(train_loader) == 0:
        raise NpgptError(
            f"the text is too short for context_length={T} and batch_size={args.batch_size}; "
            "lower --context-length or --batch-size"
        )
    print(
        f"{cfg.n_layers} layers, {model.num_params():,} parameters ({model.dtype}); "
        f"{len(train_loader)} train / {len(val_loader)} val batches of {args.batch_size}x{T} tokens"
    )
    with stop_on_signals() as should_stop:
        state = train_model(
            model,
            train_loader,
            val_loader,
            optimizer,
            args.epochs,
            args.eval_freq,
            args.eval_iter,
            args.start_context,
            tokenizer,
            args.warmup_steps,
            args.initial_lr,
            args.min_lr,
            peak_lr=args.lr,
            schedule=args.schedule,
            grad_clip=args.grad_clip,
            state=state,
            checkpoint_path=ckpt,
            max_steps=args.max_steps,
            should_stop=should_stop,
            sample_tokens=args.sample_tokens,
            meta={"args": {k: getattr(args, k) for k in RUN_FLAGS}, "text_sha256": text_sha256(text)},
            save_on_eval=getattr(args, "save_on_eval", True),
        )
    history = {
        "train_losses": state.train_losses,
        "val_losses": state.val_losses,
        "tokens_seen": state.track_tokens_seen,
        "lrs": state.track_lrs,
    }
    finish_run(args, history, len(train_loader), state.global_step + 1, ckpt)
    return should_stop.exit_code


def finish_run(args: argparse.Namespace, history: dict, steps_per_epoch: int, steps_done: int, ckpt: Path) -> None:
    """Shared end of ``train`` for both implementations: history.json, the loss plot, and how to
    continue a paused run."""
    out = Path(args.out)
    (out / "history.json").write_text(json.dumps(history))
    epochs_seen = [i * args.eval_freq / steps_per_epoch for i in range(len(history["train_losses"]))]
    plot = plot_losses(
        epochs_seen, history["tokens_seen"], history["train_losses"], history["val_losses"], out / "losses.png"
    )
    done = steps_done >= steps_per_epoch * args.epochs
    print(f"{'finished' if done else 'paused'} at step {steps_done}: checkpoint {ckpt}")
    print(f"loss plot {plot}" if plot else "loss plot skipped: pip install matplotlib (the plot extra)")
    if not done:
        impl = " --impl torch" if getattr(args, "impl", "numpy") == "torch" else ""
        text = f" --text {args.text}" if args.text else ""
        print(f"continue with: npgpt {args.command}{impl} --out {out} --resume{text}")


def check_generate_args(args: argparse.Namespace) -> None:
    check_values(vars(args))
    if not args.prompt:
        raise NpgptError("--prompt is empty; give at least one token of text to continue")


def run_generate(args: argparse.Namespace) -> int:
    check_generate_args(args)
    cfg, params, _, _ = load_checkpoint(args.checkpoint)
    bad = sum(int(np.count_nonzero(~np.isfinite(v))) for v in params.values())
    if bad:
        raise NpgptError(f"{args.checkpoint} holds {bad:,} non-finite weights (nan/inf); use an earlier checkpoint")
    model = GPTModel(cfg, params=params).eval()
    tokenizer = get_tokenizer()
    ids = text_to_token_ids(args.prompt, tokenizer)
    out = generate(
        model,
        ids,
        args.max_new_tokens,
        cfg.context_length,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_id=None if args.no_eos else EOT_ID,
        rng=np.random.default_rng(args.seed),
        use_cache=not args.no_cache,
    )
    print(token_ids_to_text(out, tokenizer))
    return 0


def run_demo(
    args: argparse.Namespace, train: Runner | None = None, generate: Runner | None = None, checkpoint: str = CHECKPOINT
) -> int:
    """Train on the embedded story, then print a greedy continuation of the start context.

    The demo owns its output directory: a marker file says so, and a second demo replaces the
    first's files (never a directory the demo did not make). It saves one checkpoint, at the end."""
    out = Path(args.out)
    marker = out / DEMO_MARKER
    if (out / checkpoint).exists() and not args.resume:
        if not marker.is_file():
            raise NpgptError(f"{out} holds a training run that is not a demo; pass another --out")
        for name in (checkpoint, "history.json", "losses.png"):
            (out / name).unlink(missing_ok=True)  # the earlier demo's own files
        print(f"replacing the earlier demo run in {out}")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by `npgpt demo`; a later demo replaces this directory's demo files\n")
    args.save_on_eval = False
    code = (train or run_train)(args)
    if code:
        return code
    gen_args = argparse.Namespace(
        checkpoint=str(Path(args.out) / checkpoint),
        prompt=args.start_context,
        max_new_tokens=50,
        temperature=0.0,
        top_k=None,
        top_p=None,
        seed=None,
        no_cache=False,
        no_eos=False,
        **{k: v for k, v in vars(args).items() if k in ("impl", "device")},
    )
    print("\ngreedy continuation with the KV cache:")
    return (generate or run_generate)(gen_args)


def add_debug_flag(sub: argparse._SubParsersAction) -> None:
    """``--debug`` after any subcommand too (``npgpt check --debug``), not only before it."""
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print internal tracebacks")


def run_command(args: argparse.Namespace, runners: dict[str, Runner]) -> int:
    """Run one subcommand with the exit codes of docs/conventions.md: an NpgptError (bad input)
    is one line and 2; any other exception is an internal error, one line naming where its
    traceback was written (printed instead with --debug) and 3."""
    if args.command == "demo" and args.out == "runs/npgpt":
        args.out = "runs/demo"
    try:
        return runners[args.command](args)
    except NpgptError as exc:
        print(f"npgpt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
            where = "above"
        else:
            fd, log = tempfile.mkstemp(prefix="npgpt-crash-", suffix=".log")
            with os.fdopen(fd, "w") as f:
                traceback.print_exc(file=f)
            where = f"in {log} (or rerun with --debug)"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        print(
            f"npgpt {args.command}: internal error: {type(exc).__name__}: {first}; traceback {where}. "
            "This is a bug in npgpt: please report it with that traceback",
            file=sys.stderr,
        )
        return 3


def main(argv: Sequence[str] | None = None) -> int:
    """NumPy only (``python -m npgpt.cli``); the installed ``npgpt`` command is parity.cli."""
    parser, sub = build_parser()
    add_debug_flag(sub)
    args = parse(parser, sub, argv)
    return run_command(args, {"train": run_train, "generate": run_generate, "demo": run_demo})


if __name__ == "__main__":
    sys.exit(main())
