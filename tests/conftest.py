"""Shared fixtures: small configs, randomised float64 parameters, the book's text when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from npgpt import GPTConfig, init_params

VERDICT = Path(__file__).resolve().parents[2] / "shared" / "data" / "the-verdict.txt"


def randomized_params(
    cfg: GPTConfig, seed: int, dtype: type = np.float64, spread: float = 0.3
) -> dict[str, np.ndarray]:
    """Every parameter perturbed, including LayerNorm scale/shift and biases, so no gradient
    path is hidden behind a 1 or a 0."""
    rng = np.random.default_rng(seed)
    params = init_params(cfg, seed, dtype=np.float64)
    return {k: (v + spread * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}


@pytest.fixture
def small_cfg() -> GPTConfig:
    return GPTConfig(vocab_size=61, context_length=12, emb_dim=12, n_heads=3, n_layers=2, drop_rate=0.0, qkv_bias=True)


@pytest.fixture
def verdict_text() -> str:
    if not VERDICT.is_file():
        pytest.skip(f"{VERDICT} not present")
    return VERDICT.read_text(encoding="utf-8")


@pytest.fixture
def missing_sqrt_d(monkeypatch):
    """Inject the classic attention bug for negative controls: scores not divided by sqrt(head_dim)."""
    from npgpt.layers import multi_head_attention

    class NoSqrt:
        @staticmethod
        def sqrt(x: float) -> float:
            return 1.0

    monkeypatch.setattr(multi_head_attention, "math", NoSqrt)


# --- memory per test, opt-in: NPGPT_TEST_MEMORY=report.json pytest ---------------------------
# ru_maxrss only grows, so a test is charged when it raises the process's peak (or a child's,
# for the command-line tests that run subprocesses): the report lists the tests that set a new
# high-water mark and the mark they set, which is what "no single test above N GB" is about.
# A forked child starts out sharing its parent's resident pages, so a subprocess's figure can
# repeat the pytest process's own peak; read those rows with that in mind.

_MEMORY: list[dict] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import resource

    if not os.environ.get("NPGPT_TEST_MEMORY"):
        yield
        return
    before = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    yield
    after = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    for where, b, a in zip(("pytest process", "a subprocess"), before, after, strict=True):
        if a > b:
            _MEMORY.append({"test": item.nodeid, "where": where, "peak_gb": a * 1024 / 1e9})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("NPGPT_TEST_MEMORY")
    if path and _MEMORY:
        Path(path).write_text(json.dumps(sorted(_MEMORY, key=lambda r: -r["peak_gb"]), indent=1))
