"""parity.testing, the pytest plugin readers put in their CI: the ``book_check`` fixture comes
with the installed package (the ``pytest11`` entry point), passes correct code, and fails wrong
code with check-book's report in the assertion message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from parity.book.check import load_reader
from parity.testing import assert_matches_reference, book_name, cases

CORRECT = Path(__file__).parent / "reader_code" / "book_chapters.py"
READER_TEST = f"""
import sys
sys.path.insert(0, {str(CORRECT.parent)!r})


def test_my_layer_norm(book_check):
    from book_chapters import LayerNorm
    book_check(LayerNorm)


def test_my_chapters(book_check):
    book_check.path({str(CORRECT)!r}, only=["GELU", "feed_forward"])


def test_a_wrong_layer_norm_fails(book_check):
    import pytest
    import torch
    from book_chapters import LayerNorm

    class Unbiased(LayerNorm):
        def forward(self, x):
            mean = x.mean(dim=-1, keepdim=True)
            return self.scale * (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + self.eps) + self.shift

    with pytest.raises(AssertionError, match="unbiased-variance"):
        book_check(Unbiased, "LayerNorm")
"""


def test_a_readers_repository_gets_the_fixture_from_the_installed_plugin(tmp_path):
    (tmp_path / "test_mine.py").write_text(READER_TEST)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_mine.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout + run.stderr


def test_the_plain_function_takes_snake_case_names_and_says_why_it_fails():
    found = load_reader(CORRECT).found
    assert_matches_reference(found["MultiHeadAttention"], "multi_head_attention", examples=5)
    with pytest.raises(AssertionError, match=r"LayerNorm\s+could not construct  LayerNorm\(6\) raised TypeError"):
        assert_matches_reference(found["GELU"], "layer_norm", examples=5)  # the wrong class for the name
    assert book_name("self_attention_v1") == "SelfAttention_v1"
    with pytest.raises(ValueError, match="not a name of the book"):
        book_name("attention_is_all_you_need")


def test_the_strategies_are_exposed_for_readers_property_tests():
    from hypothesis import given, settings

    @settings(max_examples=5, database=None)
    @given(cases("layer_norm", "float32"))
    def widths(case):
        assert case.C >= 4  # float32 cases keep LayerNorm's width above round-off

    widths()
