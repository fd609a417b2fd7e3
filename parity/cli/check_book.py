"""``npgpt check-book``: a reader's own chapter 2-5 code checked name by name (parity/book)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings

import numpy as np

from npgpt.errors import NpgptError
from npgpt.files import atomic_write
from parity.cli.reports import check_report_path
from parity.cli.runs import DefaultsHelp, Runner, examples


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Runner]:
    p = sub.add_parser(
        "check-book",
        formatter_class=DefaultsHelp,
        help="check your own code from the book, class by class, against the NumPy reference",
        description="Finds the book's classes and functions (GPTDatasetV1 ... LayerNorm, MultiHeadAttention, "
        "GPTModel, generate) in your file or folder, checks each one's outputs and gradients against npgpt on "
        "cases drawn by Hypothesis (float64, then float32), shrinks a failure to the smallest case, and names "
        "the classic mistake it matches (npgpt bugs). Exits 1 if any check fails.",
        epilog=examples(
            "npgpt check-book my_chapter4.py",
            "npgpt check-book ch04.ipynb --json findings.json",
            "npgpt check-book LLMs-from-scratch/ch05/          # a folder: every .py and notebook in it",
        ),
    )
    p.add_argument(
        "path",
        help="your .py file or .ipynb notebook, or a folder of them; only imports, definitions and constants run",
    )
    p.add_argument(
        "--only",
        help="comma-separated book names, e.g. LayerNorm,MultiHeadAttention (chapter 3's equalities are checked when "
        "both their classes are named)",
    )
    p.add_argument("--dtype", choices=["float64", "float32", "both"], default="both", help="float64, then float32")
    p.add_argument("--examples", type=int, default=30, help="cases Hypothesis draws per name and dtype")
    p.add_argument("--example", help="check one case only, e.g. B=1,T=2,H=1,D=2,seed=0 (from a report)")
    p.add_argument("--json", help="also write the findings to this JSON file")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one call into your code may take (0: no limit)"
    )
    return {"check-book": run}


def run(args: argparse.Namespace) -> int:
    if args.examples < 1:
        raise NpgptError(f"--examples {args.examples}: give at least 1")
    if not args.timeout >= 0:
        raise NpgptError(f"--timeout {args.timeout}: give seconds, 0 or more (0: no limit)")
    from parity import user_code

    user_code.TIMEOUT[0] = args.timeout
    check_report_path(args.json, key="findings", what="npgpt check-book")
    try:
        import torch  # noqa: F401

        from parity.book.cases import Example
        from parity.book.check import check_book
        from parity.book.targets import TARGETS
    except ImportError as exc:
        if exc.name in ("torch", "hypothesis"):
            raise NpgptError(f"check-book needs {exc.name}; pip install 'npgpt[torch,test]'") from None
        raise
    example = None
    if args.example:
        try:
            example = Example.parse(args.example)
        except (ValueError, KeyError, TypeError):
            raise NpgptError(f"--example {args.example}: write it as B=1,T=2,H=1,D=2,seed=0") from None
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the reader's degenerate cases (C = 1) warn; the report says it
        findings, reader = check_book(
            args.path, only, dtypes, args.examples, example, lambda m: print(f"  {m}", file=sys.stderr, flush=True)
        )
    for line in reader.notes:
        print(line)
    for line in reader.problems:
        print(f"not loaded: {line}")
    checked = [f for f in findings if f.status != "not found"]
    if not checked:
        asked = f" ({args.only})" if only else ""
        if reader.problems:
            raise NpgptError(
                f"{args.path}: nothing checked: none of the book's names{asked} was defined by what loaded "
                "(see the lines above for what did not)"
            )
        raise NpgptError(
            f"{args.path}: none of the book's names{asked} found; check-book looks for the classes and functions "
            f"the book defines, by its names ({', '.join(TARGETS)}) or one typo from them"
        )
    for finding in findings:
        print("\n".join(finding.lines()))
    failed = [f.name for f in findings if f.failed]
    passed = sum(f.status == "PASS" for f in findings)
    unread = f", {len(reader.problems)} statements or files not loaded" if reader.problems else ""
    missing = sum(f.status == "not found" for f in findings)
    print(f"\n{passed} passed, {len(failed)} failed, {missing} not found{unread}")
    if args.json:
        payload = {
            "source": args.path,
            "findings": [dataclasses.asdict(f) for f in findings],
            "problems": reader.problems,
            "not_run": reader.notes,
        }
        text = json.dumps(payload, indent=1, default=str).encode()
        atomic_write(args.json, lambda f: f.write(text))
    return 1 if failed or reader.problems else 0
