#!/usr/bin/env bash
# Everything that needs a GPU, in one command (see ../shared/GPU.md):
#   1. the GPU parity suite: pytest --gpu (fails instead of skipping without a GPU);
#   2. compute-sanitizer --tool memcheck over a small run of every kernel;
#   3. the GPU benchmark, JSON written to $OUT (or bench/results/).
# Run from the repository root with the test extra and CuPy installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-bench/results}
mkdir -p "$out"
python -c "import cupy; print('CuPy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python -m pytest --gpu -q -m gpu 2>&1 | tee "$out/gpu-pytest.log"
if command -v compute-sanitizer >/dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/gpu_smoke.py 2>&1 \
        | tee "$out/gpu-memcheck.log"
else
    echo "compute-sanitizer not found: memcheck skipped" | tee "$out/gpu-memcheck.log"
fi
python bench/gpu_bench.py --out "$out/gpu-bench.json" 2>&1 | tee "$out/gpu-bench.log"
