#!/usr/bin/env bash
# One prepared run for a lent GPU machine (the device tool), from the repository root:
#   bash benchmarks/lent_gpu.sh "$OUT"
# 1. the GPU tests (marker gpu; they skip everywhere else) and the bench suite's plumbing with CUDA;
# 2. issue 24's CPU rows on the host CPU restricted to two cores (taskset -c 0,1, two BLAS/OpenMP
#    threads), written as cpu-<vendor>-2core-targets.{json,md} under OUT.
# The tokenizer's data package travels as a wheel in .whl/ (see the device tool's README).
set -uo pipefail
out=${1:?usage: bash benchmarks/lent_gpu.sh OUT_DIR}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD  # the CLI tests start `python -m parity.cli` in a temp folder
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site:$PWD
fi
{
    lscpu | grep -E 'Model name|^CPU\(s\)'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import sys, numpy, torch; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$out/machine.txt"
gpu_tests=(tests/torchgpt/test_gpu.py tests/cli/test_cli_gpu.py tests/parity/test_gpu_fastpaths.py tests/benchmarks/test_suite.py)
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="-ra" --durations=8 "${gpu_tests[@]}" 2>&1 | tee "$out/gpu-tests.txt"
echo "gpu tests exit: ${PIPESTATUS[0]}" | tee -a "$out/gpu-tests.txt"
taskset -c 0,1 env OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 \
    timeout 330 python3 -m benchmarks --targets --impl numpy-cpu,torch-cpu --out "$out" 2>&1 | tee "$out/bench-log.txt" | tail -30
echo "bench exit: ${PIPESTATUS[0]}"
