"""Shared fixtures: small configs, randomised float64 parameters, the book's text when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from npgpt import GPTConfig

VERDICT = Path(__file__).resolve().parents[2] / "shared" / "data" / "the-verdict.txt"


@pytest.fixture
def small_cfg() -> GPTConfig:
    return GPTConfig(vocab_size=61, context_length=12, emb_dim=12, n_heads=3, n_layers=2, drop_rate=0.0, qkv_bias=True)


@pytest.fixture
def verdict_text() -> str:
    if not VERDICT.is_file():
        pytest.skip(f"{VERDICT} not present")
    return VERDICT.read_text(encoding="utf-8")


@pytest.fixture
def missing_sqrt_d():
    """The classic attention bug for negative controls, the catalog's own mutant
    (parity/bugs.py, no-attention-scaling): scores not divided by sqrt(head_dim)."""
    from parity.bugs import inject

    with inject("no-attention-scaling"):
        yield


# --- memory per test ---------------------------------------------------------------------------
# Every test runs under a cheap guard: the process's resident peak (Linux's VmHWM, reset before
# each test through /proc/self/clear_refs) must stay under PEAK_LIMIT, so the suite runs on a 16
# GB laptop beside other work. It counts everything resident (torch, TensorFlow, module fixtures),
# so it is stricter than a count of the test's own allocations, and costs two small file writes.
# The tests whose need is a documented figure (the default main job's 6 GB) carry pytest-memray's
# limit_memory marker instead: memray traces those tests' allocations (only those: `make test`
# does not pass --memray, which would trace every test). Subprocesses (the command-line tests) are
# not counted; they run small configs.
PEAK_LIMIT_GB = 4.0
_PEAKS: dict[str, float] = {}


def _peak_gb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024 / 1e9  # kB


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # 5: reset the peak resident set size to the current one
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _resident_peak(request):
    if request.node.get_closest_marker("limit_memory") is not None or not _reset_peak():
        yield
        return
    yield
    peak = _peak_gb()
    if peak is not None:
        _PEAKS[request.node.nodeid] = peak
        if peak > PEAK_LIMIT_GB:
            pytest.fail(f"the process's resident peak during this test was {peak:.2f} GB, over {PEAK_LIMIT_GB} GB")


def pytest_terminal_summary(terminalreporter):
    if _PEAKS:
        top = sorted(_PEAKS.items(), key=lambda kv: -kv[1])[:3]
        shown = "; ".join(f"{gb:.2f} GB {name}" for name, gb in top)
        terminalreporter.write_line(f"largest resident peaks (limit {PEAK_LIMIT_GB} GB): {shown}")
