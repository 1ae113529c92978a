"""gpucorr against an earlier gpucorr, side by side in one run (CPU).

Usage::

    git worktree add /tmp/before <commit>
    python bench/before_after.py --before /tmp/before [--rounds 5] [--repeats 3]

Each side runs in its own subprocess with its own source tree first on
``sys.path`` (``--before`` for the earlier code, this checkout for the
current one) and times :func:`gpucorr.refine` on the same workload
(``gpucorr bench``'s: 256x256 uint16-valued frames with Poisson noise, a
lattice of disks of radius 8, ``RadialGradient(radius=8)``), for fast mode,
fast mode with ``upsample=20`` and full mode, with the default thread count
and with ``workers=1``. The subprocesses alternate ``--repeats`` times; the
best time of each side is kept, so both see the same machine load. The
result of each case is compared bit for bit between the two sides as well.

Prints a markdown table (frames/s, after / before) and writes JSON under
``--out``.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: (mode, upsample) per case
CASES = {"fast": ("fast", False), "fast-upsample20": ("fast", 20), "full": ("full", False)}

CHILD = r"""
import hashlib, json, sys, time
import numpy as np
import gpucorr
from gpucorr.patterns import RadialGradient
assert gpucorr.__file__.startswith(sys.argv[1]), gpucorr.__file__
cases, frames_n, rounds = json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
frame, _, peaks = gpucorr.cbed_frame(256, 256, radius=8, all_equal=True, margin=12)
rng = np.random.default_rng(0)
frames = rng.poisson(np.repeat(frame, frames_n, axis=0) * 200).astype(np.float32)
peaks = np.rint(peaks).astype(np.int64)
pattern = RadialGradient(radius=8)
out = {}
for name, (mode, up) in cases.items():
    for workers in (None, 1):
        call = lambda: gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=up,
                                      workers=workers)
        res = call()
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in res))
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
        out[f"{name}/{'default' if workers is None else 1}"] = dict(
            seconds=best, digest=digest.hexdigest())
print(json.dumps(out))
"""


def run_side(tree, frames, rounds):
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), json.dumps(CASES), str(frames), str(rounds)],
        env=env, cwd=str(tree), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{tree}: the timing subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="earlier source tree")
    parser.add_argument("--frames", type=int, default=64, help="frames per call")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per subprocess")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the sides")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": ROOT}
    best, digests = {}, {}
    for _ in range(args.repeats):
        for side, tree in trees.items():
            for key, r in run_side(tree, args.frames, args.rounds).items():
                best[side, key] = min(best.get((side, key), float("inf")), r["seconds"])
                digests[side, key] = r["digest"]
    keys = sorted({k for _, k in best})
    rows = ["| case / workers | before frames/s | after frames/s | after / before | "
            "same bits |", "|---|---:|---:|---:|---|"]
    results = []
    for key in keys:
        b, a = args.frames / best["before", key], args.frames / best["after", key]
        same = digests["before", key] == digests["after", key]
        rows.append(f"| {key} | {b:.0f} | {a:.0f} | {a / b:.2f} | {'yes' if same else 'no'} |")
        results.append(dict(case=key, before_frames_per_s=b, after_frames_per_s=a,
                            ratio=a / b, same_bits=same))
    print("\n".join(rows))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "gpucorr"],
                      capture_output=True, text=True).stdout.strip():
        commit += "+dirty"
    before = subprocess.run(["git", "-C", str(args.before), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"before-after-{stamp}-{before}-{commit}.json"
    path.write_text(json.dumps(dict(
        before=before, after=commit, frames_per_call=args.frames, rounds=args.rounds,
        repeats=args.repeats, machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(), results=results), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
