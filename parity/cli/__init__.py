"""The ``npgpt`` command: the one command-line package, at the top of the import graph.

One module per command family, each adding its subcommands and returning their runners:

- ``training``: train, demo, generate (``--impl numpy|torch``; ``numpy_runs`` and ``torch_runs``
  hold the two implementations' runners, ``torch_flags`` the opt-in torch speed-ups);
- ``check``: the main job, npgpt against torchgpt tensor by tensor (``reports`` prints and writes the
  verdict commands' reports);
- ``check_book``: a reader's own code from the book, class by class (parity/book);
- ``golden``: write and verify golden bundles (implementations in any language);
- ``weights``: download and convert;
- ``bugs``: the catalog of classic mistakes (``check --inject-bug``, ``check-book``'s diagnoses).

``runs`` is what they share: help format, exit codes (docs/conventions.md), signals, the end of
a training run. npgpt and torchgpt are libraries and know nothing of this package; torch is
imported only by the commands that need it, so a NumPy-only install runs train, demo and
generate. The benchmark suite is not a subcommand: it needs a checkout (``make bench``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from parity.cli import bugs, check, check_book, golden, training, weights
from parity.cli.runs import Runner, add_debug_flag, parse, run_command


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction, dict[str, Runner]]:
    parser = argparse.ArgumentParser(prog="npgpt", description="GPT-2 in NumPy and PyTorch: train, generate, check.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True)
    runners: dict[str, Runner] = {}
    for family in (training, check, check_book, golden, weights, bugs):
        runners.update(family.add_parsers(sub))
    add_debug_flag(sub)
    return parser, sub, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, sub, runners = build_parser()
    args = parse(parser, sub, argv)
    return run_command(args, runners)
