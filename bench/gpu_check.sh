#!/usr/bin/env bash
# Everything that needs a GPU (see ../shared/GPU.md), in stages:
#   tests     the GPU tests (-m gpu, failing instead of skipping without a GPU), NVRTC over
#             every kernel instantiation, and tests/cupy_api.json against the installed CuPy
#             (the rest of the suite is CI's: it needs no GPU)
#   memcheck  compute-sanitizer --tool memcheck over a small run of every kernel, then
#             racecheck (shared-memory hazards; its slowed kernels also expose missing
#             stream waits), initcheck and synccheck over a shorter one
#   bench     the GPU benchmark (bench/gpu_bench.py), JSON beside the logs
#   streaming what limits streaming host frames: bench/h2d_paths.py (bus, host fill, page
#             locking) and bench/host_fill.py (non-temporal stores against numpy.copyto)
#   profile   Nsight Compute speed-of-light per kernel of one call per mode (bench/gpu_profile.py)
# Usage: bench/gpu_check.sh [STAGE ...]   (default: tests memcheck bench). Logs and JSON go to
# $OUT (or bench/results/). Run from anywhere; needs CuPy. Where the machine has no
# registry access, bench/gpu_wheels.sh (run on a machine that has) fills .whl/ with
# the missing pure-Python packages, installed here into /tmp/site.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-bench/results}
mkdir -p "$out"
stages=${*:-tests memcheck bench}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import cupy; print('CuPy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())" \
    | tee "$out/gpu-env.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/gpu-env.log" || true
status=0
for stage in $stages; do
    case $stage in
    tests)
        parallel=()  # pytest-xdist, where installed: about 45 s instead of several minutes
        python3 -c "import xdist" 2>/dev/null && parallel=(-n 8)
        python3 -m pytest --gpu -q -p no:cacheprovider -rs --durations=15 -m gpu \
            ${parallel[@]+"${parallel[@]}"} tests > "$out/gpu-pytest.log" 2>&1 || status=1
        tail -n 60 "$out/gpu-pytest.log"
        python3 -m pytest -q -p no:cacheprovider -rs --durations=5 \
            tests/test_gpu.py tests/test_fake_cupy.py \
            -k "nvrtc or nvcc or installed_cupy or names_only" \
            > "$out/gpu-pytest-compile.log" 2>&1 || status=1
        tail -n 20 "$out/gpu-pytest-compile.log" ;;
    memcheck)
        if command -v compute-sanitizer >/dev/null; then
            for tool in memcheck racecheck initcheck synccheck; do
                args=()
                [ "$tool" != memcheck ] && args=(--quick)
                if ! compute-sanitizer --tool "$tool" --error-exitcode 1 \
                        python3 bench/gpu_smoke.py ${args[@]+"${args[@]}"} > "$out/gpu-$tool.log" 2>&1; then
                    if grep -q "Device not supported" "$out/gpu-$tool.log"; then
                        echo "compute-sanitizer does not support this machine's device/runtime:" \
                            "$tool NOT run" | tee -a "$out/gpu-$tool.log"
                    else
                        status=1
                    fi
                fi
                tail -n 12 "$out/gpu-$tool.log"
            done
        else
            echo "compute-sanitizer not found: memcheck skipped" | tee "$out/gpu-memcheck.log"
        fi ;;
    bench)
        python3 bench/gpu_bench.py --out "$out/gpu-bench.json" > "$out/gpu-bench.log" 2>&1 \
            || status=1
        tail -n 30 "$out/gpu-bench.log" ;;
    streaming)
        python3 bench/h2d_paths.py --out "$out/gpu-h2d-paths.json" > "$out/gpu-h2d-paths.log" 2>&1 \
            || status=1
        tail -n 30 "$out/gpu-h2d-paths.log"
        python3 bench/host_fill.py --workers 1 4 8 16 --out "$out/host-fill.json" \
            > "$out/host-fill.log" 2>&1 || status=1
        python3 bench/host_fill.py --scan --workers 1 4 8 16 --out "$out/host-fill-scan.json" \
            >> "$out/host-fill.log" 2>&1 || status=1
        tail -n 8 "$out/host-fill.log" ;;
    profile)
        if command -v ncu >/dev/null; then
            ncu --clock-control none --nvtx --nvtx-include "regex:measure-.*/" --section SpeedOfLight \
                python3 bench/gpu_profile.py > "$out/gpu-profile.log" 2>&1 || status=1
        else
            echo "ncu not found: profile skipped" > "$out/gpu-profile.log"
        fi
        grep -E "^  [a-zA-Z_].*\(|Duration|Memory Throughput|Compute \(SM\) Throughput" \
            "$out/gpu-profile.log" | tail -n 60 || true ;;
    *)
        echo "unknown stage $stage (tests, memcheck, bench, streaming, profile)"; exit 2 ;;
    esac
done
exit $status
