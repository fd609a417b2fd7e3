"""Each device's measured limits, taken in the same run as the rows they judge: float32 (and on
GPUs TF32 and bf16) matmul FLOP/s, and memory bandwidth. Never a datasheet peak."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks.measure import median_time


def numpy_ceiling() -> dict[str, float]:
    rng = np.random.default_rng(0)
    n = 2048
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    src = np.ones(1 << 26, dtype=np.float32)  # 256 MiB
    dst = np.empty_like(src)
    return {
        "float32_matmul_flops": 2 * n**3 / median_time(lambda: a @ b, 7, 2),
        "memory_bytes_per_s": 2 * src.nbytes / median_time(lambda: np.copyto(dst, src), 5, 1),  # read + write
    }


def torch_ceiling(device: str, sync: Callable[[], None]) -> dict[str, float]:
    import torch

    cuda = device == "cuda"
    n = 8192 if cuda else 2048
    ceiling: dict[str, float] = {}
    kinds = (("float32", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False))
    for label, dtype, tf32 in kinds if cuda else kinds[:1]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        ceiling[f"{label}_matmul_flops"] = 2 * n**3 / median_time(lambda a=a, b=b: a @ b, 10, 3, sync)
    src = torch.ones(1 << 26, device=device)
    dst = torch.empty_like(src)
    ceiling["memory_bytes_per_s"] = 2 * src.numel() * 4 / median_time(lambda: dst.copy_(src), 10, 2, sync)
    return ceiling
