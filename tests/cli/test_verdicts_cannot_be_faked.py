"""A checker must never exit 0 without having compared: the code under test ending the run itself
(sys.exit(), exit(), a KeyboardInterrupt it raises, GeneratorExit) is that code's failure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from parity.cli import main
from parity.tolerances import COMPARED

BOOK_FILE = (Path(__file__).resolve().parents[1] / "parity" / "reader_code" / "book_chapters.py").read_text()
LAYER_NORM_RETURN = "return self.scale * norm_x + self.shift"


def run(capsys, *args) -> tuple[int, str]:
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    "escape",
    ["import sys; sys.exit(0)", "exit()", "raise KeyboardInterrupt", "raise GeneratorExit", "raise SystemExit"],
)
def test_check_book_reports_a_name_that_ends_the_run_as_its_failure(capsys, tmp_path, escape):
    assert BOOK_FILE.count(LAYER_NORM_RETURN) == 1
    source = BOOK_FILE.replace(LAYER_NORM_RETURN, f"{escape}\n        {LAYER_NORM_RETURN}")
    (tmp_path / "exits.py").write_text(source)
    code, text = run(capsys, "check-book", tmp_path / "exits.py", "--only", "LayerNorm", "--examples", "3")
    assert code == 1 and re.search(
        r"^LayerNorm\s+FAIL  raised (SystemExit|KeyboardInterrupt|GeneratorExit)", text, re.M
    )


def test_check_impl_reports_sys_exit_in_forward_as_a_crash_row(capsys, tmp_path):
    user = tmp_path / "exit_impl.py"
    user.write_text(BOOK_FILE.replace(LAYER_NORM_RETURN, f"import sys; sys.exit(0)\n        {LAYER_NORM_RETURN}"))
    code, text = run(capsys, "check", "--config", "tiny", "--steps", "1", "--impl", f"{user}:GPTModel")
    assert code == 3 and "raised SystemExit while running the eval forward" in text, text


def test_sys_exit_while_building_the_model_is_bad_input_not_a_pass(capsys, tmp_path):
    user = tmp_path / "exit_init.py"
    user.write_text(
        "import sys\nimport torch\n\n\nclass GPTModel(torch.nn.Module):\n"
        "    def __init__(self, cfg):\n        sys.exit(0)\n"
    )
    code, text = run(capsys, "check", "--config", "tiny", "--steps", "1", "--impl", f"{user}:GPTModel")
    assert code == 2 and "failed with SystemExit" in text, text


def test_a_verdict_with_no_comparison_is_never_a_pass(capsys, monkeypatch):
    """The guard at the one place every command returns: a check whose runner compared nothing."""
    import parity.cli.check as check_cli

    monkeypatch.setattr(check_cli, "run", lambda args: 0)
    before = COMPARED[0]
    code, text = run(capsys, "check", "--config", "tiny")
    assert code == 3 and "nothing was compared" in text and COMPARED[0] == before


def test_the_report_ends_with_its_summary_by_component_and_the_verdict(capsys):
    code, text = run(capsys, "check", "--config", "tiny", "--steps", "1")
    lines = [line for line in text.splitlines() if not line.startswith("  [")]  # progress lines are stderr
    summary = lines.index("-- float64 by component")
    assert code == 0 and summary > len(lines) - 20, lines[-20:]
    assert lines[summary + 1].startswith("data pipeline") and lines[-2].startswith("float64: PASS, all ")


def test_the_progress_lines_estimate_the_time_left(monkeypatch):
    import parity.cli.check as check_cli

    clock = iter([10.0, 12.0, 13.0, 30.0, 40.0, 41.0])  # reference: setup 2 s, then 1 s a step
    monkeypatch.setattr(check_cli.time, "perf_counter", lambda: next(clock))
    left = check_cli.TimeLeft(0.0)
    assert left.after("npgpt: running the reference") == ""
    assert left.after("npgpt: step 1/3") == ""  # no rate yet
    assert left.after("npgpt: step 2/3") == " (~15 s left)"  # 1 step here + the other side: 12 s setup + 2 steps
    assert left.after("torchgpt: running and comparing") == ""
    assert left.after("torchgpt: step 1/3") == ""
    assert left.after("torchgpt: step 2/3") == " (~1 s left)"  # its own rate, one step to go
