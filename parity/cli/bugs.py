"""``npgpt bugs``: the catalog of classic mistakes, one line each (parity/bugs.py)."""

from __future__ import annotations

import argparse

from parity.bugs import CATALOG
from parity.cli.runs import DefaultsHelp, Runner, examples


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Runner]:
    sub.add_parser(
        "bugs",
        formatter_class=DefaultsHelp,
        help="list the classic mistakes that check-book diagnoses and check --inject-bug shows",
        description="Each line: the name (for npgpt check --inject-bug NAME), the book class it lives in, "
        "the mistake and its fix.",
        epilog=examples(
            "npgpt bugs",
            "npgpt check --config tiny --inject-bug mask-one-future   # see where the report points",
        ),
    )
    return {"bugs": run}


def run(args: argparse.Namespace) -> int:
    width = max(map(len, CATALOG))
    for bug in CATALOG.values():
        print(f"{bug.name:<{width}}  {bug.component:<20} {bug.what}. Fix: {bug.fix}")
    return 0
