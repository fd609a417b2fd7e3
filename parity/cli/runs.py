"""What every command shares: the help format, parsing, exit codes, signals, and the end of a
training run (history, loss plot, how to continue). Both implementations' runners use it."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from npgpt import files
from npgpt.data import embedded_text
from npgpt.errors import NpgptError
from npgpt.plot import plot_losses
from npgpt.tokenizer import read_text
from npgpt.validate import check_values

Runner = Callable[[argparse.Namespace], int]
# Flags whose values define a run; a resumed run takes them from its checkpoint.
RUN_FLAGS = [
    "config",
    "vocab_size",
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


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default (also of an option with no help text), except where there
    is none to show (None, False); an epilog that starts with "examples:" keeps its lines as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:  # (not `in`: 0 == False would hide a 0)
            return action.help
        if not action.option_strings or action.default == argparse.SUPPRESS:
            return action.help
        if not action.help:
            return "(default: %(default)s)"
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def examples(*lines: str) -> str:
    """A subcommand's --help epilog: real command lines (tests/cli/test_help_and_pickles.py parses
    each one with the subcommand's own parser)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def parse(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction, argv: Sequence[str] | None):
    """Parse, and remember the subcommand's defaults (to tell flags given on the command line)."""
    args = parser.parse_args(argv)
    own = sub.choices[args.command]
    args.run_defaults = {a.dest: own.get_default(a.dest) for a in own._actions}
    tokens = list(sys.argv[1:] if argv is None else argv)
    args.given = {  # flags typed on the command line, even at their default value
        a.dest
        for a in own._actions
        if any(t == o or t.startswith(o + "=") for o in a.option_strings if o.startswith("--") for t in tokens)
    }
    return args


def add_debug_flag(sub: argparse._SubParsersAction) -> None:
    """``--debug`` after any subcommand too (``npgpt check --debug``), not only before it."""
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print internal tracebacks")


# the machine's answers that are not bugs in npgpt: exit 2, with what to do
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free some space, or write somewhere else",
    errno.EDQUOT: "free some space, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EACCES: "no permission: choose a path you can write",
    errno.EPERM: "no permission: choose a path you can write",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "the path is a directory: name a file",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOENT: "no such file or directory",
}


def run_command(args: argparse.Namespace, runners: dict[str, Runner]) -> int:
    """Run one subcommand with the exit codes of docs/conventions.md: an NpgptError (bad input)
    is one line and 2; any other exception is an internal error, one line naming where its
    traceback was written (printed instead with --debug) and 3. A verdict (check, check-book,
    golden verify) never exits 0 without a comparison, nor when the code under test ended the run
    itself (``sys.exit()``, a KeyboardInterrupt no Ctrl-C sent): that is 3, a crash of that code."""
    from parity.tolerances import COMPARED
    from parity.user_code import user_raised, watch_interrupts

    verdict = args.command in ("check", "check-book") or getattr(args, "verb", None) == "verify"
    watch_interrupts()
    compared = COMPARED[0]
    try:
        code = runners[args.command](args)
    except NpgptError as exc:
        print(f"npgpt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except InterruptedGenerationError:
        return 130  # the tokens so far are printed
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _internal_error(args, exc)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"npgpt {args.command}: error: {where}{exc.strerror} ({ENVIRONMENT_ERRNOS[exc.errno]})", file=sys.stderr)
        return 2
    except Exception as exc:
        return _internal_error(args, exc)
    except BaseException as exc:
        if not (verdict and user_raised(exc)):
            raise
        print(f"npgpt {args.command}: the code under test raised {type(exc).__name__}({exc}); no verdict (exit 3)")
        return 3
    if verdict and code == 0 and COMPARED[0] == compared:
        print(f"npgpt {args.command}: nothing was compared, so nothing passed (exit 3)", file=sys.stderr)
        return 3
    return code


def _internal_error(args: argparse.Namespace, exc: Exception) -> int:
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
            if files.SAVING[0]:  # aborting now would lose the checkpoint being written: finish it, then stop
                print(
                    f"\n{signal.Signals(signum).name}: finishing the checkpoint being saved, then stopping",
                    file=sys.stderr,
                )
                return
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


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """What train and demo change in the preset named by --config."""
    vocab = {} if getattr(args, "vocab_size", None) is None else {"vocab_size": args.vocab_size}
    return {"context_length": args.context_length, "drop_rate": args.drop_rate, **vocab}


OVERRIDABLE = {"lr": float, "grad_clip": float}  # what --resume --override may change mid-run


def parse_overrides(args: argparse.Namespace) -> dict[str, float]:
    """--override KEY=VALUE pairs, checked: only with --resume, only OVERRIDABLE keys, valid values."""
    pairs = getattr(args, "override", None) or []
    if pairs and not args.resume:
        raise NpgptError("--override changes a resumed run; add --resume (a new run takes --lr, --grad-clip directly)")
    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in OVERRIDABLE:
            raise NpgptError(f"--override {pair}: write KEY=VALUE with KEY one of {', '.join(OVERRIDABLE)}")
        try:
            out[key] = OVERRIDABLE[key](value)
        except ValueError:
            raise NpgptError(f"--override {pair}: {value!r} is not a number") from None
    check_values(out)
    return out


def apply_saved_run_flags(args: argparse.Namespace, saved: dict[str, Any], ckpt: Path) -> None:
    """A resumed run keeps the hyperparameters it was started with. A flag given on this command
    line with another value is refused, by name, rather than silently ignored; ``--override
    lr=...`` (OVERRIDABLE) changes one on purpose, and the run records it in ``overridden``."""
    defaults, given = getattr(args, "run_defaults", {}), getattr(args, "given", set())
    conflicts = [
        f"--{k.replace('_', '-')} {getattr(args, k)} (the run has {v})"
        for k, v in saved.items()
        if k in defaults and getattr(args, k, None) != v and (k in given or getattr(args, k, None) != defaults[k])
    ]
    if conflicts:
        raise NpgptError(
            f"{', '.join(conflicts)}: a resumed run keeps the settings saved in {ckpt}; drop these flags, "
            "or start a new run in another --out"
        )
    overrides = parse_overrides(args)
    for name, value in saved.items():
        setattr(args, name, value)
    args.overridden = list(saved.get("overridden", []))
    for name, value in overrides.items():
        print(f"--override: {name} {getattr(args, name)} -> {value} from here on (recorded in the run)")
        args.overridden.append({"flag": name, "from": getattr(args, name), "to": value})
        setattr(args, name, value)


class TokenPrinter:
    """Streams a generation to stdout: the prompt, then each token's text as it comes (bytes
    through an incremental UTF-8 decoder, so a character split across tokens prints whole)."""

    def __init__(self, tokenizer: Any, prompt: str) -> None:
        self.tokenizer, self.count = tokenizer, 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sys.stdout.write(prompt)
        sys.stdout.flush()

    def __call__(self, idx_next: Any) -> None:
        token = int(np.asarray(idx_next.cpu() if hasattr(idx_next, "cpu") else idx_next).reshape(-1)[0])
        sys.stdout.write(self.decoder.decode(self.tokenizer.decode_single_token_bytes(token)))
        sys.stdout.flush()
        self.count += 1

    def close(self) -> None:
        sys.stdout.write(self.decoder.decode(b"", final=True) + "\n")
        sys.stdout.flush()


@contextlib.contextmanager
def streamed(tokenizer: Any, prompt: str) -> Iterator[TokenPrinter]:
    """A TokenPrinter; Ctrl-C ends the generation with what was printed kept (exit 130, raised as
    InterruptedGenerationError for the command to return)."""
    printer = TokenPrinter(tokenizer, prompt)
    try:
        yield printer
    except KeyboardInterrupt:
        printer.close()
        print(f"interrupted after {printer.count} tokens", file=sys.stderr)
        raise InterruptedGenerationError from None
    printer.close()


class InterruptedGenerationError(Exception):
    """Ctrl-C during generate: the tokens so far were printed; the command exits 130."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """What ``train`` needs before either implementation builds its model: the run directory,
    its checkpoint file and the training text (``start_training``)."""

    out: Path
    ckpt: Path
    text: str

    def resume(self, args: argparse.Namespace, saved_meta: dict[str, Any]) -> None:
        """Check a resumed checkpoint against this call: the same text, the run's own flags."""
        if saved_meta.get("text_sha256") != text_sha256(self.text):
            raise NpgptError(f"{self.ckpt} was trained on a different text; pass the same --text to resume")
        apply_saved_run_flags(args, saved_meta["args"], self.ckpt)

    def meta(self, args: argparse.Namespace, names: Sequence[str] = RUN_FLAGS) -> dict[str, Any]:
        """What the checkpoint records of the run: its flags (``names``) and the --override
        history, and the text's hash (a resume on another text is refused)."""
        flags = {k: getattr(args, k) for k in names if hasattr(args, k)}
        return {"args": flags | {"overridden": getattr(args, "overridden", [])}, "text_sha256": text_sha256(self.text)}


def start_training(args: argparse.Namespace, checkpoint_name: str) -> TrainingRun:
    """The shared start of ``train``: values checked, the text read, and an existing checkpoint
    refused unless ``--resume`` continues it."""
    check_values(vars(args))
    out = Path(args.out)
    run = TrainingRun(out, out / checkpoint_name, read_text(args.text) if args.text else embedded_text())
    if not args.resume and run.ckpt.exists():
        raise NpgptError(f"{run.ckpt} exists; pass --resume to continue it or a new --out directory")
    return run


def too_short(context_length: int, batch_size: int) -> NpgptError:
    return NpgptError(
        f"the text is too short for context_length={context_length} and batch_size={batch_size}; "
        "lower --context-length or --batch-size"
    )


def finish_run(args: argparse.Namespace, history: dict, steps_per_epoch: int, steps_done: int, ckpt: Path) -> None:
    """Shared end of ``train`` for both implementations: history.json, the loss plot, and how to
    continue a paused run."""
    out = Path(args.out)
    if getattr(args, "overridden", None):
        history = {**history, "overridden": args.overridden}  # --resume --override, in order
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


def sampling(args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    """``generate``'s keyword arguments from the command line, the same for both implementations."""
    return {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "eos_id": None if args.no_eos else tokenizer.eot_token,
        "use_cache": not args.no_cache,
    }


def refuse_nonfinite(checkpoint: str, bad: int) -> None:
    """A checkpoint to generate from must hold finite weights."""
    if bad:
        raise NpgptError(f"{checkpoint} holds {bad:,} non-finite weights (nan/inf); use an earlier checkpoint")


def check_generate_args(args: argparse.Namespace) -> None:
    check_values(vars(args))
    if not args.prompt:
        raise NpgptError("--prompt is empty; give at least one token of text to continue")
