"""The import boundaries in pyproject.toml (checked by lint-imports in `make test`) say what they
mean, and can fail."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import npgpt

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("npgpt", "torchgpt", "parity", "benchmarks")
TORCHGPT_MAY_BORROW = {"npgpt.config", "npgpt.tokenizer", "npgpt.errors", "npgpt.files"}


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_torchgpt_may_borrow_only_the_listed_npgpt_modules():
    """A new npgpt module is forbidden to torchgpt until someone argues otherwise."""
    (borrow,) = [c for c in contracts() if c.get("source_modules") == ["torchgpt"]]
    every = {f"npgpt.{m.name}" for m in pkgutil.iter_modules(npgpt.__path__)}
    assert set(borrow["forbidden_modules"]) == every - TORCHGPT_MAY_BORROW


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (the test extra)")
    return subprocess.run(
        [exe, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PYTHONPATH": str(cwd)},
    )


@pytest.mark.parametrize(
    "module, planted",
    [
        ("torchgpt/model.py", "import npgpt.layers.linear"),  # torchgpt borrowing model math
        ("npgpt/layers/linear.py", "import npgpt.model"),  # a layer importing from above it
        ("npgpt/config.py", "import torch"),  # npgpt needing torch
        ("parity/engine.py", "import parity.cli"),  # the library importing the command line
    ],
)
def test_the_contracts_hold_and_fail_on_a_planted_import(tmp_path, module, planted):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("results", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0
    with (tmp_path / module).open("a") as f:
        f.write(f"\n{planted}  # planted\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout, broken.stdout + broken.stderr
