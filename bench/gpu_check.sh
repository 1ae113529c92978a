#!/usr/bin/env bash
# The whole GPU check in one call, under 8 minutes on an H200 (issue 15; ../shared/GPU.md).
#
#   bench/gpu_check.sh [STAGE ...]
#
# Default stages, each time-boxed (GNU timeout on the stage's whole process group); a stage
# that fails or runs out of time is recorded and the rest still run:
#   setup      (always) wheels from .whl/ into $GPU_CHECK_SITE (default /tmp/site), then the
#              device, driver, CuPy/CUDA versions, launch sizes, commit (env.json)
#   tests      pytest --gpu -m gpu tests (xdist -n 8 where installed) at the launch sizes
#              gpucorr ships (BLOCK, FAST_THREADS), then NVRTC over every kernel
#              instantiation and tests/cupy_api.json against the installed CuPy
#   memcheck   compute-sanitizer --tool memcheck over bench/gpu_smoke.py --no-pool (every
#              kernel, each CuPy array its own allocation)
#   racecheck  compute-sanitizer --tool racecheck over bench/gpu_smoke.py --quick
#   bench      bench/gpu_bench.py (GPU-resident fast / fast+upsample 20 / full, the reference's
#              CuPy path, host uint16 streaming against the pinned copy rate of the same run)
# Optional stages (slower; run only when named): extras (gpu_bench.py --extras: stages, crop
# edges, staging variants), streaming (bench/h2d_paths.py), initcheck,
# synccheck (compute-sanitizer over the quick smoke), profile (Nsight Compute).
#
# Consecutive correctness stages (tests, memcheck, racecheck, initcheck, synccheck) run side
# by side (GPU_CHECK_PARALLEL=0: one after the other); timing stages run alone. With the
# default stages no stage runs past GPU_CHECK_DEADLINE (default 440 s) from the start, so the
# run ends within 460 s (summary included);
# each stage's time box is cut to what is left (GPU_CHECK_TIMEOUT_<STAGE> sets a box).
# It prints each stage's elapsed time as it ends, and a summary table last
# (bench/gpu_report.py); it exits 1 if a stage failed or timed out.
#
# Output: $OUT (default bench/results/) gets gpu-check-<UTC stamp>-<commit>.json (device,
# driver, versions, commit, date, every figure, the targets) and the logs in
# gpu-check-<UTC stamp>-<commit>-logs/. Set GPUCORR_COMMIT where the copy has no .git.
# Other knobs: PYTHON (default python3), GPU_CHECK_WHEELS (default .whl), GPU_CHECK_TESTS (pytest selection, default tests),
# GPU_CHECK_XDIST (workers, default 8), GPU_CHECK_SMOKE (extra gpu_smoke.py arguments),
# GPU_CHECK_BENCH (gpu_bench.py arguments, default --rounds 3).
#
# Rehearsal without a GPU: GPUCORR_FAKE_GPU=1 bench/gpu_check.sh runs every stage on the CPU
# stand-in for CuPy (tests/fake_cupy.py; pytest --fake-gpu, reduced launch sizes, tiny
# benchmark sizes), skips compute-sanitizer (with the reason) but runs the smoke, and labels
# everything EMULATED. Its OUT defaults to $TMPDIR/gpucorr-gpu-check-emulated; it refuses to
# write under bench/results/. tests/test_gpu_check.py runs it in CI.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
self="$PWD/bench/gpu_check.sh"

DEFAULT_STAGES="tests memcheck racecheck bench"
OPTIONAL_STAGES="extras streaming initcheck synccheck profile"
PARALLEL_STAGES=" tests memcheck racecheck initcheck synccheck "

time_box() {  # seconds a stage may take at most, before the deadline cuts it
    local name=$1 var
    var="GPU_CHECK_TIMEOUT_$(echo "$name" | tr '[:lower:]' '[:upper:]')"
    if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
    case $name in
    wheels) echo 60 ;; env) echo 45 ;; summary) echo 30 ;;
    tests|memcheck|racecheck|initcheck|synccheck) echo 240 ;;
    bench) echo 150 ;;
    *) echo 300 ;;
    esac
}

py_gpu() {  # a Python script that uses CuPy: on the stand-in in a rehearsal
    if [ "$FAKE" = 1 ]; then "$PY" tests/fake_cupy.py "$@"; else "$PY" "$@"; fi
}

find_sanitizer() {
    local c
    for c in "${GPU_CHECK_SANITIZER:-}" "$(command -v compute-sanitizer 2>/dev/null)" \
             /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer; do
        if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    return 1
}

# ------------------------------------------------------------------ stage bodies
# Each runs in its own process (under timeout); it writes its log(s), a one-line note
# ($logs/NAME.note) and, where it is not "ok"/"FAILED" by its exit status, a status.

note() { printf '%s' "$*" | tr '\t\n' '  ' > "$logs/$STAGE.note"; }
set_status() { printf '%s' "$1" > "$logs/$STAGE.status"; }
last_line() {  # FILE REGEX: the last matching line, without pytest's ==== rules
    grep -E "$2" "$1" 2>/dev/null | tail -n 1 | sed 's/=\{2,\}//g; s/^ *//; s/ *$//'
}

stage_tests() {
    local mode=(--gpu) xd=() sel compile rc=0 rc2=0
    read -r -a sel <<< "${GPU_CHECK_TESTS:-tests}"
    if [ "$FAKE" = 1 ]; then
        mode=(--fake-gpu)
    elif "$PY" -c "import xdist" 2>/dev/null; then
        xd=(-n "${GPU_CHECK_XDIST:-8}")
    fi
    "$PY" -m pytest "${mode[@]}" -m gpu -p no:cacheprovider -rs --durations=15 \
        ${xd[@]+"${xd[@]}"} "${sel[@]}" > "$logs/tests.log" 2>&1 || rc=$?
    grep -E "^gpucorr launch sizes" "$logs/tests.log" | head -n 1
    tail -n 4 "$logs/tests.log"
    compile=(tests/test_gpu.py tests/test_fake_cupy.py
             -k "nvrtc or nvcc or installed_cupy or names_only")
    # a rehearsal only checks that the selection still finds them (CI runs them anyway)
    [ "$FAKE" = 1 ] && compile+=(--collect-only)
    "$PY" -m pytest -q -p no:cacheprovider -rs "${compile[@]}" \
        > "$logs/tests-compile.log" 2>&1 || rc2=$?
    note "$(last_line "$logs/tests.log" " in [0-9.]+s") | compile/API checks" \
         "$(last_line "$logs/tests-compile.log" "passed|failed|error|collected|tests? ")"
    [ $rc -eq 0 ] && [ $rc2 -eq 0 ]
}

stage_sanitizer() {  # memcheck | racecheck | initcheck | synccheck
    local tool=$1 smoke=(bench/gpu_smoke.py) extra cs rc=0 refused log="$logs/$1.log"
    # memcheck: every kernel, CuPy's pools off (each array its own allocation, so an access
    # past its end is seen); the slower tools: the quick run, pools on (as gpucorr runs)
    if [ "$tool" = memcheck ]; then smoke+=(--no-pool); else smoke+=(--quick); fi
    read -r -a extra <<< "${GPU_CHECK_SMOKE:-}"
    smoke+=(${extra[@]+"${extra[@]}"})
    if [ "$FAKE" = 1 ]; then
        py_gpu "${smoke[@]}" > "$log" 2>&1 || rc=$?
        tail -n 3 "$log"
        [ $rc -ne 0 ] && { note "the smoke run failed on the stand-in"; return 1; }
        set_status skipped
        note "emulated: compute-sanitizer needs a GPU (the smoke run passed on the stand-in)"
        return 0
    fi
    if ! cs=$(find_sanitizer); then
        set_status skipped
        note "compute-sanitizer not found (PATH, /usr/local/cuda*/bin): $tool not run"
        echo "compute-sanitizer not found: $tool not run" | tee "$log"
        return 0
    fi
    "$cs" --tool "$tool" --error-exitcode 1 "$PY" "${smoke[@]}" > "$log" 2>&1 || rc=$?
    tail -n 4 "$log"
    if [ $rc -eq 0 ]; then
        note "$(last_line "$log" "SUMMARY") $(last_line "$log" "^gpu smoke run")"
        return 0
    fi
    # the machine refusing the tool (not a finding): no smoke result, no error report
    refused=$(grep -m 1 -E "Device not supported|not supported|Unable to (find|load|initialize)|Target application terminated before first instrumented API call|Could not (find|load)" "$log")
    if [ -n "$refused" ] && ! grep -qE "^gpu smoke run|ERROR SUMMARY: [1-9]|hazards? displayed \([1-9]|Invalid " "$log"; then
        set_status skipped
        note "the machine refused $tool: $refused"
        return 0
    fi
    note "$(last_line "$log" "SUMMARY") $(last_line "$log" "^gpu smoke run") (exit $rc)"
    return 1
}

stage_bench() {  # bench | extras
    local args rc=0 extras=() out=bench
    if [ "$FAKE" = 1 ]; then
        read -r -a args <<< "${GPU_CHECK_BENCH:---frames 8 --stream-frames 8 --cpu-frames 4 --ref-frames 1 --copy-mib 64 --rounds 1}"
    else
        read -r -a args <<< "${GPU_CHECK_BENCH:---rounds 3}"
    fi
    [ "$1" = extras ] && { extras=(--extras); out=bench-extras; }
    py_gpu bench/gpu_bench.py "${args[@]}" ${extras[@]+"${extras[@]}"} --out "$logs/$out.json" \
        > "$logs/$out.log" 2>&1 || rc=$?
    tail -n 6 "$logs/$out.log" | cut -c 1-300
    [ $rc -ne 0 ] && note "$(tail -n 1 "$logs/$out.log")"
    return $rc
}

stage_streaming() {
    local rc=0 size=()
    [ "$FAKE" = 1 ] && size=(--gib 0.25)
    py_gpu bench/h2d_paths.py ${size[@]+"${size[@]}"} --out "$logs/h2d-paths.json" \
        > "$logs/h2d-paths.log" 2>&1 || rc=1
    tail -n 12 "$logs/h2d-paths.log"
    return $rc
}

stage_profile() {
    local rc=0
    if [ "$FAKE" = 1 ]; then
        py_gpu bench/gpu_profile.py --frames 8 > "$logs/profile.log" 2>&1 || return 1
        set_status skipped
        note "emulated: Nsight Compute needs a GPU (bench/gpu_profile.py ran on the stand-in)"
        return 0
    fi
    if ! command -v ncu >/dev/null; then
        set_status skipped; note "ncu not found: profile not run"; return 0
    fi
    ncu --clock-control none --nvtx --nvtx-include "regex:measure-.*/" --section SpeedOfLight \
        "$PY" bench/gpu_profile.py > "$logs/profile.log" 2>&1 || rc=1
    grep -E "^  [a-zA-Z_].*\(|Duration|Memory Throughput|Compute \(SM\) Throughput" \
        "$logs/profile.log" | tail -n 40 || true
    return $rc
}

if [ "${1:-}" = __stage ]; then  # internal: one stage body (the main flow times it)
    STAGE=$2
    case $STAGE in
    tests) stage_tests ;;
    memcheck|racecheck|initcheck|synccheck) stage_sanitizer "$STAGE" ;;
    bench|extras) stage_bench "$STAGE" ;;
    streaming) stage_streaming ;;
    profile) stage_profile ;;
    *) echo "unknown stage body $STAGE"; exit 2 ;;
    esac
    exit $?
fi

# ------------------------------------------------------------------ main flow

t0=$(date +%s)
FAKE=${GPUCORR_FAKE_GPU:-0}
[ "$FAKE" = 1 ] || FAKE=0
if [ "$FAKE" = 1 ]; then
    if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=$PWD/.venv/bin/python; else PY=${PYTHON:-python3}; fi
    OUT=${OUT:-${TMPDIR:-/tmp}/gpucorr-gpu-check-emulated}
    prefix=emulated-gpu-check
else
    PY=${PYTHON:-python3}
    OUT=${OUT:-bench/results}
    prefix=gpu-check
fi
stages=${*:-$DEFAULT_STAGES}
for s in $stages; do
    case " $DEFAULT_STAGES $OPTIONAL_STAGES " in
    *" $s "*) ;;
    *) echo "unknown stage $s (default: $DEFAULT_STAGES; optional: $OPTIONAL_STAGES)"; exit 2 ;;
    esac
done
if [ "$stages" = "$DEFAULT_STAGES" ]; then deadline=${GPU_CHECK_DEADLINE:-440}; else deadline=${GPU_CHECK_DEADLINE:-0}; fi
mkdir -p "$OUT"
if [ "$FAKE" = 1 ]; then
    case "$(cd "$OUT" && pwd -P)/" in
    "$(pwd -P)/bench/results/"*)
        echo "GPUCORR_FAKE_GPU=1: a rehearsal does not write under bench/results/ (OUT=$OUT)"
        exit 2 ;;
    esac
fi
commit=${GPUCORR_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${GPUCORR_COMMIT:-}" ] && [ "$commit" != unknown ] \
        && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit+dirty"
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
name="$prefix-$stamp-${commit//+/-}"
logs="$OUT/$name-logs"
json="$OUT/$name.json"
mkdir -p "$logs"
export FAKE PY OUT logs GPUCORR_COMMIT="$commit"

elapsed() { echo $(( $(date +%s) - t0 )); }
limit_for() {  # a stage's time box, cut to what is left before the deadline (20 s kept back)
    local box=$1 left
    if [ "$deadline" -gt 0 ]; then
        left=$(( deadline - $(elapsed) - 20 ))
        [ "$left" -lt "$box" ] && box=$left
    fi
    echo "$box"
}
record() {  # NAME STATUS RC SECONDS BOX NOTE: the stage's outcome, for the summary
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" \
        "$(printf '%s' "$6" | tr '\t\n' '  ' | cut -c 1-400)" > "$logs/stage-$1.tsv"
    printf '[%4ss] <== %-9s %-8s in %4s s (time box %s s)  %s\n' "$(elapsed)" "$1" "$2" "$4" \
        "$5" "$(printf '%s' "$6" | cut -c 1-160)"
}
run_stage() {  # NAME: its body under its time box
    local name=$1 box limit start rc=0 secs status note
    box=$(time_box "$name")
    limit=$(limit_for "$box")
    if [ "$limit" -lt 10 ]; then
        record "$name" skipped - 0 "$box" "no time left before the ${deadline} s deadline"
        return 0
    fi
    printf '[%4ss] ==> %s (time box %s s)\n' "$(elapsed)" "$name" "$limit"
    start=$(date +%s)
    rm -f "$logs/$name.status" "$logs/$name.note"
    timeout -k 10 "$limit" bash "$self" __stage "$name" > "$logs/$name.out" 2>&1 || rc=$?
    secs=$(( $(date +%s) - start ))
    sed 's/^/    /' "$logs/$name.out" | cut -c 1-240
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        status=timeout
    elif [ -s "$logs/$name.status" ]; then
        status=$(cat "$logs/$name.status")
    elif [ $rc -eq 0 ]; then
        status=ok
    else
        status=FAILED
    fi
    note=$(cat "$logs/$name.note" 2>/dev/null || true)
    [ "$status" = timeout ] && note="stopped after $limit s; $note"
    record "$name" "$status" "$rc" "$secs" "$limit" "$note"
}

if [ "$FAKE" = 1 ]; then
    echo "== EMULATED REHEARSAL on the CPU stand-in (tests/fake_cupy.py): not a GPU run, no GPU results =="
fi
echo "gpu_check: stages [$stages], output $OUT/$name{.json,-logs/}, deadline ${deadline:-0} s (0: none)"

# setup: the carried wheels, then the environment
start=$(date +%s); setup_rc=0; setup_note=""
site=${GPU_CHECK_SITE:-/tmp/site}
wheels=${GPU_CHECK_WHEELS:-.whl}
if ls "$wheels"/*.whl >/dev/null 2>&1; then
    n=$(ls "$wheels"/*.whl | wc -l)
    if [ "$FAKE" = 1 ]; then
        # check that pip takes them (for the GPU machine's Python 3.12), install nothing
        timeout -k 5 "$(time_box wheels)" "$PY" -m pip install -q --dry-run --no-index \
            --no-deps --ignore-installed --only-binary=:all: --python-version 3.12 \
            --ignore-requires-python \
            --target "$logs/site" "$wheels"/*.whl > "$logs/wheels.log" 2>&1 || setup_rc=$?
        setup_note="$n wheels in $wheels/: pip accepts them (dry run)"
    else
        timeout -k 5 "$(time_box wheels)" "$PY" -m pip install -q --no-index --no-deps \
            --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
            > "$logs/wheels.log" 2>&1 || setup_rc=$?
        export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
        setup_note="$n wheels from $wheels/ into $site"
    fi
    [ $setup_rc -ne 0 ] && { setup_note="pip failed on $wheels/ (exit $setup_rc)"; tail -n 5 "$logs/wheels.log"; }
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    setup_note="no $wheels/: nothing to install"
fi
env_rc=0
if [ "$FAKE" = 1 ]; then
    timeout -k 5 "$(time_box env)" "$PY" tests/fake_cupy.py bench/gpu_report.py env \
        --out "$logs/env.json" > "$logs/env.log" 2>&1 || env_rc=$?
else
    timeout -k 5 "$(time_box env)" "$PY" bench/gpu_report.py env --out "$logs/env.json" \
        > "$logs/env.log" 2>&1 || env_rc=$?
fi
grep -v "^\[fake_cupy\]" "$logs/env.log" | tail -n 6
if [ -z "${GPU_CHECK_NO_SMI:-}" ] && [ "$FAKE" = 0 ]; then
    nvidia-smi > "$logs/nvidia-smi.log" 2>&1 || true
fi
if [ $env_rc -ne 0 ]; then
    setup_rc=$env_rc; setup_note="$setup_note; the environment probe failed (exit $env_rc)"
fi
record setup "$([ $setup_rc -eq 0 ] && echo ok || echo FAILED)" "$setup_rc" \
    "$(( $(date +%s) - start ))" "$(( $(time_box wheels) + $(time_box env) ))" "$setup_note"

# the stages: consecutive correctness stages side by side, timing stages alone
pending=()
flush_parallel() {
    local pid
    for pid in ${pending[@]+"${pending[@]}"}; do wait "$pid"; done
    pending=()
}
for s in $stages; do
    if [ "${GPU_CHECK_PARALLEL:-1}" = 1 ] && [[ $PARALLEL_STAGES == *" $s "* ]]; then
        run_stage "$s" &
        pending+=($!)
        sleep 1  # keep the start lines in order
    else
        flush_parallel
        run_stage "$s"
    fi
done
flush_parallel

# the summary, last
args=(--logs "$logs" --out "$json" --stages "setup $stages" --elapsed "$(elapsed)"
      --deadline "$deadline")
[ "$FAKE" = 1 ] && args+=(--emulated)
timeout -k 5 "$(time_box summary)" "$PY" bench/gpu_report.py summary "${args[@]}"
rc=$?
[ $rc -gt 1 ] && echo "the summary failed (exit $rc): see $logs/"
exit $(( rc > 0 ? 1 : 0 ))
