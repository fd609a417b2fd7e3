"""Code under test that hangs is a FAIL naming what was running, after --timeout, not silence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from parity.cli import main

BOOK_FILE = (Path(__file__).resolve().parents[1] / "parity" / "reader_code" / "book_chapters.py").read_text()
HANG = "import time\n        time.sleep(3600)\n        return self.scale * norm_x + self.shift"


def run(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


def hanging(tmp_path: Path) -> Path:
    path = tmp_path / "hangs.py"
    path.write_text(BOOK_FILE.replace("return self.scale * norm_x + self.shift", HANG))
    return path


def test_check_book_reports_a_hang_as_that_names_failure(capsys, tmp_path):
    code, text = run(capsys, "check-book", hanging(tmp_path), "--only", "LayerNorm,GELU", "--timeout", "1")
    assert code == 1, text
    assert re.search(
        r"^LayerNorm\s+FAIL  LayerNorm on B=\S+ \(float64\) took longer than 1 s \(--timeout\)", text, re.M
    )
    assert re.search(r"^GELU\s+PASS", text, re.M)  # the rest is still checked


def test_check_impl_reports_a_hanging_forward_as_a_crash_row(capsys, tmp_path):
    spec = f"{hanging(tmp_path)}:GPTModel"
    code, text = run(capsys, "check", "--config", "tiny", "--steps", "1", "--impl", spec, "--timeout", "1")
    assert code == 3 and "GPTModel.forward took longer than 1 s (--timeout)" in text, text


def test_a_bad_timeout_is_refused(capsys):
    code, text = run(capsys, "check", "--config", "tiny", "--timeout", "-1")
    assert code == 2 and "--timeout -1" in text
