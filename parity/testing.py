"""Check your own book code in your own CI: a pytest plugin (registered as ``npgpt`` through the
``pytest11`` entry point, so installing npgpt is enough) and the same checks as plain functions.

    def test_my_layer_norm(book_check):
        from my_gpt import LayerNorm
        book_check(LayerNorm)                 # the book name from the class's own name

    def test_my_chapters(book_check):
        book_check.path("my_gpt/")            # every book name found there, like npgpt check-book

    # without pytest fixtures
    from parity.testing import assert_matches_reference
    assert_matches_reference(MyNorm, "layer_norm")

The checks are ``npgpt check-book``'s (parity/book): Hypothesis cases, float64 then float32,
outputs and gradients against npgpt, a shrunk counterexample and the catalogued mistake it
matches in the assertion message. (It lives in ``parity``, not ``npgpt``: npgpt is the NumPy
reference and imports no torch; the checks need torch to run your code.)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

DTYPES = ("float64", "float32")


def book_name(name: str) -> str:
    """The book's name for ``name``, which may be written in snake case ("layer_norm",
    "multi_head_attention", "self_attention_v1")."""
    from parity.book.targets import TARGETS

    key = name.replace("_", "").lower()
    for known in TARGETS:
        if known.replace("_", "").lower() == key:
            return known
    raise ValueError(f"{name!r} is not a name of the book that can be checked; one of {', '.join(TARGETS)}")


def assert_matches_reference(
    obj: Any, name: str | None = None, *, dtypes: Iterable[str] = DTYPES, examples: int = 30
) -> None:
    """Raise AssertionError, with check-book's report lines, unless ``obj`` (your class or
    function) matches the reference for the book name ``name`` (default: ``obj.__name__``)."""
    from parity.book.check import check_target
    from parity.book.targets import TARGETS

    target = TARGETS[book_name(name or obj.__name__)]
    source = getattr(obj, "__module__", "your module")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        finding = check_target(target, obj, source, list(dtypes), examples, None)
    if finding.failed:
        raise AssertionError("\n".join(finding.lines()))


def check_path(path: str | Path, only: Iterable[str] | None = None, *, examples: int = 30) -> None:
    """Raise AssertionError unless every book name found in ``path`` (a file or a folder) passes."""
    from parity.book.check import check_book

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        findings, reader = check_book(path, None if only is None else [book_name(n) for n in only], DTYPES, examples)
    problems = reader.problems
    failed = [f for f in findings if f.failed]
    if problems or failed or all(f.status == "not found" for f in findings):
        lines = [*problems, *(line for f in failed for line in f.lines())] or [f"no book names found in {path}"]
        raise AssertionError("\n".join(lines))


class BookCheck:
    """The ``book_check`` fixture: ``book_check(obj[, name])`` and ``book_check.path(path)``."""

    def __init__(self, examples: int = 30) -> None:
        self.examples = examples

    def __call__(self, obj: Any, name: str | None = None, **kwargs: Any) -> None:
        assert_matches_reference(obj, name, examples=kwargs.pop("examples", self.examples), **kwargs)

    def path(self, path: str | Path, only: Iterable[str] | None = None) -> None:
        check_path(path, only, examples=self.examples)


@pytest.fixture
def book_check() -> BookCheck:
    """Check your book classes and functions against npgpt's reference (parity.testing)."""
    pytest.importorskip("torch")
    pytest.importorskip("hypothesis")
    return BookCheck()


def cases(name: str, dtype: str = "float64") -> Any:
    """The Hypothesis strategy check-book draws its cases from, for your own property tests."""
    from parity.book.check import cases as drawn
    from parity.book.targets import TARGETS

    return drawn(TARGETS[book_name(name)], dtype)
