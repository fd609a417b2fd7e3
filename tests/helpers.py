"""Helpers several test modules share (imported from here, never from conftest or another test
module): randomised parameters, the CLI as a subprocess, a short training text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from npgpt import GPTConfig, init_params


def randomized_params(
    cfg: GPTConfig, seed: int, dtype: type = np.float64, spread: float = 0.3
) -> dict[str, np.ndarray]:
    """Every parameter perturbed, including LayerNorm scale/shift and biases, so no gradient
    path is hidden behind a 1 or a 0."""
    rng = np.random.default_rng(seed)
    params = init_params(cfg, seed, dtype=np.float64)
    return {k: (v + spread * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}


TINY = ["--config", "tiny", "--context-length", "16", "--eval-freq", "2", "--sample-tokens", "3"]
STORY = "A small boat crossed the bay in the dark while the light turned and the keeper watched. " * 10


def npgpt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "parity.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m parity.cli ARGS``."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd = [*launch, "-m", "parity.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
