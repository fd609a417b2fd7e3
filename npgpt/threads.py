"""Elementwise work on every core: one large NumPy pass split into contiguous ranges, one per
thread. NumPy releases the GIL inside its ufunc loops, so the ranges run at once; every element
goes through the same ufuncs with the same operands as in one pass, so the result is
bit-identical (tests/npgpt/test_threads.py asserts equality).

Used where a benchmark showed a gain: AdamW's update (GPT-2 small, float32, 2-core AMD EPYC:
0.62 s -> 0.51 s a step, ``python -m benchmarks.threads``, benchmarks/results/threads-*.md).
GELU's forward and backward run here too (each pass a chunk function, scratch for its two
temporaries): on the 2-core Intel Xeon, GPT-2 small float32 B=2, a train step paired with the
single-pass layer in one process, medians of 4: T=256 2.65 -> 2.58 s, T=1024 blocked 10.34 ->
9.95 s (on the 2-core AMD EPYC it had measured 2-3% of a step and was left as one pass).
``over_parts`` splits a loop of many small matmuls instead (the blocked attention's, a group of
heads per thread) and holds BLAS to one thread meanwhile (threadpoolctl): side by side on
single-threaded BLAS they ran 1.8x faster than one after the other on two-threaded BLAS (GPT-2
small's attention core at T=1024, 2-core Intel Xeon, 0.078 -> 0.043 s a layer's forward alone; a
whole train step, where memory traffic is shared, 14.0 -> 13.1 s).
``NPGPT_THREADS=1`` turns both off; the default is the machine's core count (at most 8).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

MIN_SIZE = 1 << 18  # elements; below this a thread hand-off costs more than it saves (measured)
# elements per call of fn inside a range, unless the caller gives its own (AdamW does, by bytes:
# npgpt/optim.py). Each call costs fixed Python and dispatch time (~7-14 ufunc calls), so the chunk is
# as large as the cache allows. GELU's forward and backward at GPT-2 small, T=1024, float32, twelve
# layers, 2-core Intel Xeon: 2^15 0.42 s, 2^16 0.32 s, 2^17 0.49 s. The scratch a call works in is
# given to it, allocated once per range: never an allocation per chunk (npgpt check lowers glibc's
# mmap threshold, under which a 512 KB temporary would be mapped and faulted in every call).
CHUNK = 1 << 16
_pool: ThreadPoolExecutor | None = None
_blas: ThreadpoolController | None = None


def workers() -> int:
    wanted = os.environ.get("NPGPT_THREADS")
    return max(1, int(wanted)) if wanted else min(8, os.cpu_count() or 1)


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers != n:
        _pool = ThreadPoolExecutor(n, thread_name_prefix="npgpt")
    return _pool


def _in_chunks(fn: Callable[..., object], *flat: np.ndarray, scratches: int, chunk: int) -> None:
    """``fn(*slices, *scratch)`` on consecutive ``chunk``-element slices: a pass over 163M floats that
    allocates its temporaries at full size faults in fresh memory and streams every intermediate
    through RAM; a chunk's scratch arrays are allocated once and reused from cache."""
    n = min(chunk, flat[0].size)
    scratch = [np.empty(n, dtype=flat[0].dtype) for _ in range(scratches)]
    for start in range(0, flat[0].size, chunk):
        part = [f[start : start + chunk] for f in flat]
        fn(*part, *(t[: part[0].size] for t in scratch))


def in_ranges(fn: Callable[..., object], *arrays: np.ndarray, scratches: int = 1, chunk: int | None = None) -> None:
    """Call ``fn(*ranges, *scratch)`` on matching ranges of ``arrays`` (same size, C-contiguous,
    flattened), one range per thread, each range in cache-sized chunks; ``fn`` works in place,
    element by element, and may use the ``scratches`` scratch arrays (the chunk's size, the first
    array's dtype) as its temporaries; ``chunk`` elements a call (default CHUNK). Small or
    non-contiguous arrays: one call on the whole arrays."""
    n = workers()
    chunk = chunk or CHUNK
    size = arrays[0].size
    if size < MIN_SIZE or not all(a.flags.c_contiguous and a.size == size for a in arrays):
        fn(*arrays, *(np.empty(arrays[0].shape, dtype=arrays[0].dtype) for _ in range(scratches)))
        return
    flat = [a.reshape(-1) for a in arrays]  # views: contiguous arrays flatten without a copy
    if n == 1:
        _in_chunks(fn, *flat, scratches=scratches, chunk=chunk)
        return
    bounds = np.linspace(0, size, n + 1).astype(np.int64)
    ranges = [[f[bounds[i] : bounds[i + 1]] for f in flat] for i in range(n)]
    pool = _executor(n)
    for future in [pool.submit(_in_chunks, fn, *r, scratches=scratches, chunk=chunk) for r in ranges]:
        future.result()  # re-raises a worker's exception here


def over_parts(fn: Callable[[int, int], object], n: int) -> None:
    """Call ``fn(lo, hi)`` on contiguous parts of ``range(n)``, one per thread, with BLAS held to
    one thread while they run (each part's matmuls are small: threaded BLAS would make the threads
    wait on each other). ``fn`` writes its results for ``lo .. hi - 1`` only."""
    k = min(workers(), n)
    if k <= 1:
        fn(0, n)
        return
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()  # finds the BLAS NumPy loaded, once
    bounds = np.linspace(0, n, k + 1).astype(np.int64)
    with _blas.limit(limits=1, user_api="blas"):
        futures = [_executor(workers()).submit(fn, int(bounds[i]), int(bounds[i + 1])) for i in range(k)]
        for future in futures:
            future.result()  # re-raises a worker's exception here
