"""The environment probe and the final summary of ``bench/gpu_check.sh``.

``python bench/gpu_report.py env --out LOGS/env.json`` records where the check
runs: device, driver, CuPy and CUDA versions, NumPy and numba, the launch sizes
gpucorr ships (``BLOCK``, ``FAST_THREADS``), compute-sanitizer's version, the
commit (``GPUCORR_COMMIT``, else git) and the date. On the CPU stand-in (run
through ``tests/fake_cupy.py``) it says ``"emulated": true``.

``python bench/gpu_report.py summary --logs LOGS --out FILE.json --stages ...``
reads what the stages left in LOGS (``stage-*.tsv`` outcomes, ``env.json``,
``bench.json``, the pytest and compute-sanitizer logs), writes one JSON with
every figure, and prints the stage table and the figures against the targets
of issue 15, last. Its exit status is 1 where a stage failed or ran out of
time, else 0. It needs no GPU (and no CuPy).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys

#: issue 15's targets on the H200: (bench row, what, key, target frames/s)
RESIDENT_TARGETS = (
    ("fast", "GPU-resident float32, fast mode", 3_000_000),
    ("fast-upsample20", "GPU-resident float32, fast mode, upsample=20", 400_000),
    ("full", "GPU-resident float32, full mode", 500_000),
)
#: host-resident uint16 streaming: share of the pinned host-to-device copy rate
STREAMING_TARGET = 0.70
EMULATED_BANNER = ("EMULATED on the CPU stand-in (tests/fake_cupy.py): not a GPU run; the "
                   "figures are CPU times of the emulation and are not compared with the "
                   "targets")


def _run(cmd, timeout=20):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return done.returncode, (done.stdout + done.stderr).strip()


def commit():
    if os.environ.get("GPUCORR_COMMIT"):
        return os.environ["GPUCORR_COMMIT"]
    rc, out = _run(["git", "rev-parse", "--short", "HEAD"])
    return out if rc == 0 else "unknown"


def env(args):
    import numpy as np
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                commit=commit(), python=platform.python_version(), numpy=np.__version__,
                host=platform.node(), cpus=os.cpu_count())
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    import cupy
    info["emulated"] = cupy.__file__.endswith("fake_cupy.py")
    info["cupy"] = cupy.__version__
    runtime = cupy.cuda.runtime
    try:
        info["cuda_runtime"] = runtime.runtimeGetVersion()
        info["cuda_driver_api"] = runtime.driverGetVersion()
        props = runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        info["device"] = name.decode() if isinstance(name, bytes) else str(name)
        info["device_memory_bytes"] = int(props.get("totalGlobalMem", 0))
        cupy.zeros(1)
        info["gpu_usable"] = True
    except Exception as exc:  # no driver, no device: say so (the tests stage then fails)
        info["gpu_usable"] = False
        info["gpu_error"] = f"{type(exc).__name__}: {exc}"[:300]
    from gpucorr.backends import _cuda
    info["launch_sizes"] = dict(BLOCK=_cuda.BLOCK, FAST_THREADS=_cuda.FAST_THREADS)
    info["launch_sizes_as_shipped"] = not info["emulated"]
    if shutil.which("nvidia-smi") and not info["emulated"]:
        rc, out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,pci.bus_id",
                        "--format=csv,noheader"])
        info["nvidia_smi"] = out if rc == 0 else f"nvidia-smi failed: {out[:200]}"
        if rc == 0 and out:
            info["driver"] = out.splitlines()[0].split(",")[1].strip()
    sanitizer = os.environ.get("GPU_CHECK_SANITIZER") or shutil.which("compute-sanitizer")
    if sanitizer:
        rc, out = _run([sanitizer, "--version"])
        info["compute_sanitizer"] = next((line.strip() for line in out.splitlines()
                                          if "Version" in line), out[:200])
    with open(args.out, "w") as f:
        json.dump(info, f, indent=2)
    print(f"device: {info.get('device')} ({'EMULATED' if info['emulated'] else 'GPU'}), "
          f"driver {info.get('driver', '-')}, CuPy {info['cupy']}, CUDA runtime "
          f"{info.get('cuda_runtime')}, Python {info['python']}, NumPy {info['numpy']}, "
          f"numba {info['numba']}")
    print(f"gpucorr launch sizes: BLOCK={_cuda.BLOCK}, FAST_THREADS={_cuda.FAST_THREADS} "
          f"({'as shipped' if info['launch_sizes_as_shipped'] else 'reduced for the stand-in'})"
          f"; commit {info['commit']}; {info['date']}")
    if not info["gpu_usable"]:
        print(f"no usable GPU: {info['gpu_error']}")


# ----------------------------------------------------------------------------- summary

def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _stages(logs, order):
    found = {}
    for path in glob.glob(os.path.join(logs, "stage-*.tsv")):
        with open(path) as f:
            fields = f.read().rstrip("\n").split("\t")
        fields += [""] * (6 - len(fields))
        name, status, rc, seconds, box, note = fields[:6]
        found[name] = dict(stage=name, status=status, rc=int(rc) if rc.lstrip("-").isdigit()
                           else None, seconds=int(seconds or 0), time_box_s=int(box or 0),
                           note=note)
    names = [n for n in order if n in found] + sorted(set(found) - set(order))
    return [found[n] for n in names]


def _pytest_counts(path):
    """Counts from pytest's last summary line, e.g. ``251 passed, 2 skipped in 55.2s``."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        m = re.search(r"((?:\d+ \w+(?:, )?)+) in ([\d.]+)s", line)
        if m and re.search(r"passed|failed|error|skipped|deselected|no tests ran", line):
            counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", m.group(1))}
            counts["seconds"] = float(m.group(2))
            return counts
    return None


def _sanitizer(path):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    m = re.search(r"ERROR SUMMARY: (\d+) error", text)
    if m:
        out["errors"] = int(m.group(1))
    m = re.search(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)",
                  text)
    if m:
        out.update(hazards=int(m.group(1)), errors=int(m.group(2)), warnings=int(m.group(3)))
    out["smoke"] = ("ok" if "gpu smoke run: ok" in text
                    else "failed" if "gpu smoke run:" in text else "did not finish")
    m = re.search(r"^kernels run: (.*)$", text, re.M)
    if m:
        out["kernels_run"] = m.group(1)
    return out


def _fmt(value, unit=""):
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.3g}{unit}"
    return f"{value:,.0f}{unit}"


def _targets(bench, emulated):
    rows = []
    by_case = {r["case"]: r for r in (bench or {}).get("rows", [])}
    for case, what, target in RESIDENT_TARGETS:
        row = by_case.get(case, {})
        value = row.get("gpu_frames_per_s")
        limit = None
        if row.get("gpu_frame_read_fraction_of_copy_bw") is not None:
            limit = (f"reads its frames at {row['gpu_frame_read_fraction_of_copy_bw']:.0%} of the "
                     f"device copy bandwidth ({_fmt(bench.get('copy_bandwidth_gb_s'))} GB/s)")
            if row.get("fused_speedup"):
                limit += f"; fused {row['fused_speedup']:.2f}x the multi-launch pipeline"
        rows.append(dict(case=case, what=what, measured=value, unit="frames/s",
                         target=target, met=None if emulated or value is None
                         else value >= target, limit=limit))
    streaming = (bench or {}).get("streaming") or {}
    value = streaming.get("fraction_of_pinned_h2d")
    limit = None
    if value is not None:
        limit = (f"{streaming['bytes_per_s'] / 1e9:.1f} GB/s streamed against "
                 f"{streaming['pinned_h2d_bytes_per_s'] / 1e9:.1f} GB/s pinned and "
                 f"{streaming['pageable_h2d_bytes_per_s'] / 1e9:.1f} GB/s pageable copies; "
                 f"{streaming.get('host_cpus')} host CPUs")
    rows.append(dict(case="streaming-uint16", what="host-resident uint16 streaming, share "
                     "of the pinned host-to-device copy rate", measured=value, unit="",
                     target=STREAMING_TARGET, met=None if emulated or value is None
                     else value >= STREAMING_TARGET, limit=limit))
    return rows


def _table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def summary(args):
    logs = args.logs
    env_info = _load(os.path.join(logs, "env.json")) or {}
    bench = _load(os.path.join(logs, "bench.json"))
    extras = _load(os.path.join(logs, "bench-extras.json"))
    emulated = bool(args.emulated or env_info.get("emulated") or (bench or {}).get("emulated"))
    stages = _stages(logs, args.stages.split())
    tests = dict(gpu_suite=_pytest_counts(os.path.join(logs, "tests.log")),
                 compile_checks=_pytest_counts(os.path.join(logs, "tests-compile.log")))
    sanitizers = {tool: _sanitizer(os.path.join(logs, f"{tool}.log"))
                  for tool in ("memcheck", "racecheck", "initcheck", "synccheck")
                  if os.path.exists(os.path.join(logs, f"{tool}.log"))}
    targets = _targets(bench or extras, emulated)
    failed = [s["stage"] for s in stages if s["status"] in ("FAILED", "timeout")]
    doc = dict(kind="gpu-check", emulated=emulated,
               device=env_info.get("device") or (bench or {}).get("device"),
               driver=env_info.get("driver"), cuda_driver_api=env_info.get("cuda_driver_api"),
               cupy=env_info.get("cupy"), cuda_runtime=env_info.get("cuda_runtime"),
               python=env_info.get("python"), numpy=env_info.get("numpy"),
               numba=env_info.get("numba"), compute_sanitizer=env_info.get("compute_sanitizer"),
               launch_sizes=env_info.get("launch_sizes"),
               commit=env_info.get("commit") or commit(), date=env_info.get("date"),
               elapsed_s=args.elapsed, deadline_s=args.deadline or None,
               ok=not failed, failed_stages=failed, stages=stages, tests=tests,
               sanitizers=sanitizers, targets=targets, bench=bench, bench_extras=extras,
               env=env_info, logs=os.path.relpath(logs, os.path.dirname(os.path.abspath(args.out))))
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)

    print()
    print("=" * 100)
    if emulated:
        print(EMULATED_BANNER)
    print(f"gpu_check summary: {doc['device']} | driver {doc['driver'] or '-'} | CuPy "
          f"{doc['cupy']} | CUDA runtime {doc['cuda_runtime']} | commit {doc['commit']} | "
          f"{doc['date']}")
    print(f"JSON: {args.out}\nlogs: {logs}")
    if doc["commit"] in (None, "", "unknown"):
        print("commit unknown: set GPUCORR_COMMIT where the copy has no .git")
    suite, compile_ = tests["gpu_suite"], tests["compile_checks"]
    if suite:
        print("GPU tests: " + ", ".join(f"{v} {k}" for k, v in suite.items() if k != "seconds")
              + f" in {suite['seconds']:.0f} s")
    if compile_:
        print("compile/API checks: " + ", ".join(f"{v} {k}" for k, v in compile_.items()
                                                if k != "seconds"))
    for tool, res in sanitizers.items():
        if res:
            print(f"{tool}: " + ", ".join(f"{k} {v}" for k, v in res.items()))
    print()
    print(_table(["stage", "status", "seconds", "time box", "note"],
                 [[s["stage"], s["status"], s["seconds"], s["time_box_s"], s["note"][:90]]
                  for s in stages]))
    print(f"total {args.elapsed} s" + (f" (deadline {args.deadline} s)" if args.deadline else ""))
    print()
    rows = []
    for t in targets:
        measured = (f"{t['measured']:.0%}" if t["unit"] == "" and t["measured"] is not None
                    else _fmt(t["measured"]))
        target = (f">= {t['target']:.0%}" if t["unit"] == "" else f">= {t['target']:,}")
        met = "n/a (emulated)" if emulated else {True: "yes", False: "NO", None: "-"}[t["met"]]
        rows.append([t["case"], measured, target, met, (t["limit"] or "")[:110]])
    by_case = {r["case"]: r for r in (bench or extras or {}).get("rows", [])}
    for case in ("fast", "fast-upsample20", "full"):
        row = by_case.get(case)
        if not row:
            continue
        ref = row.get("reference_cupy_frames_per_s")
        rows.append([f"{case}: reference CuPy",
                     _fmt(ref) if ref else "error",
                     "-", "-", (f"gpucorr GPU {row['gpu_vs_reference_cupy']:,.0f}x" if ref
                                else row.get("reference_cupy_error", "")[:110])])
        rows.append([f"{case}: gpucorr CPU", _fmt(row.get("cpu_frames_per_s")), "-", "-",
                     f"reference NumPy {_fmt(row.get('reference_numpy_frames_per_s'))} frames/s"])
    print(_table(["figure (frames/s unless %)", "measured", "target (issue 15)", "met",
                  "what limits it / beside it"], rows))
    if emulated:
        print(EMULATED_BANNER)
    print("result: " + ("all stages ok" if not failed else f"FAILED: {', '.join(failed)}"))
    return 1 if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("--out", required=True)
    p = sub.add_parser("summary")
    p.add_argument("--logs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stages", default="")
    p.add_argument("--elapsed", type=int, default=0)
    p.add_argument("--deadline", type=int, default=0)
    p.add_argument("--emulated", action="store_true")
    args = parser.parse_args(argv)
    return env(args) if args.command == "env" else summary(args)


if __name__ == "__main__":
    sys.exit(main())
