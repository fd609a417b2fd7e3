"""Shared fixtures: small configs, randomised float64 parameters, the book's text when present."""

from __future__ import annotations

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


# --- memory per test: `pytest --memray` (pytest-memray; `make test` passes it) -----------------
# Every test may allocate at most TEST_MEMORY_LIMIT at its high-water mark, so the suite runs on
# a 16 GB laptop beside other work; a test that needs more says so with its own limit_memory
# marker (only the default main job does: it is the 6 GB figure in the README). Subprocesses
# (the command-line tests) are not tracked; they run small configs.
TEST_MEMORY_LIMIT = "4 GB"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("limit_memory") is None:
            item.add_marker(pytest.mark.limit_memory(TEST_MEMORY_LIMIT))
