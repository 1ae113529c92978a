"""find_disks on the CPU: frames per CPU-second and position error, for the issue's workload.

Usage::

    python bench/find_disks_bench.py [--frames 64] [--rounds 3]

256 x 256 frames with 49 disks of radius 8 (cbed_frame's default, unequal weights; a
random sub-pixel shift per frame), noise-free and with Poisson noise (1e6 counts per
frame), ``Circular(radius=8)``, ``workers=1``: the calling thread's CPU time per call
(``time.thread_time``), best of ``--rounds``; recall (true disks found within 2 px) and
RMS error of the found disks. Where py4DSTEM's environment exists
(``bench/py4dstem_env.sh``), its ``find_Bragg_disks`` runs on the same frames in the same
run (``bench/py4dstem_run.py``: multicorr with upsample 16, and poly; frames per CPU
second of its process). Writes JSON under ``--out``.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import workload

import gpucorr
from gpucorr.patterns import Circular

HERE = Path(__file__).resolve().parent
PY4DSTEM = Path(os.environ.get("PY4DSTEM_PYTHON", "/work/venvs/py4dstem/bin/python"))


def make_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    frames, truths = [], []
    for _ in range(n):
        zero = np.array([128 + rng.uniform(-0.5, 0.5), 128 + rng.uniform(-0.5, 0.5)])
        frame, _, true = gpucorr.cbed_frame(256, 256, zero=zero, a=np.array([32.0, 0]),
                                            b=np.array([0, 32.0]), radius=8, margin=8)
        frames.append(frame[0])
        truths.append(true)
    clean = np.stack(frames).astype(np.float32)
    noisy = rng.poisson(clean / clean.sum(axis=(1, 2), keepdims=True) * 1e6)
    return {"noise-free": clean, "poisson 1e6": noisy.astype(np.float32)}, truths


def score(res, truths):
    found = total = 0
    squares = []
    for i, true in enumerate(truths):
        pos = res.positions[i, :res.counts[i]]
        nearest = np.linalg.norm(pos[:, None] - true[None], axis=-1).min(axis=0)
        found += int((nearest < 2).sum())
        total += len(true)
        squares += list(nearest[nearest < 2] ** 2)
    return found / total, float(np.sqrt(np.mean(squares)))


def py4dstem(frames, truths, subpixel, rounds):
    """py4DSTEM's find_Bragg_disks on ``frames`` in its own environment: a result row."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/frames.npy", frames)
        subprocess.run([str(PY4DSTEM), str(HERE / "py4dstem_run.py"), "--frames",
                        f"{tmp}/frames.npy", "--radius", "8", "--subpixel", subpixel,
                        "--upsample", "16", "--repeat", str(rounds), "--out",
                        f"{tmp}/out.npz", "--json", f"{tmp}/out.json"],
                       check=True, capture_output=True)
        timing = json.loads(Path(f"{tmp}/out.json").read_text())
        with np.load(f"{tmp}/out.npz") as z:
            yx, offsets, counts = z["yx"], z["offsets"], z["counts"]
    positions = np.full((len(frames), max(int(counts.max()), 1), 2), np.nan)
    for i, (o, c) in enumerate(zip(offsets, counts)):
        positions[i, :c] = yx[o:o + c]

    class Found:  # what score() reads
        pass
    found = Found()
    found.positions, found.counts = positions, counts
    recall, rms = score(found, truths)
    return dict(frames_per_cpu_s=timing["frames_per_cpu_s"], recall=recall, rms_px=rms)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    sets, truths = make_frames(args.frames)
    rows = []
    for name, frames in sets.items():
        for upsample, subpixel in ((False, "com"), (False, "quadratic"), (20, "com")):
            kwargs = dict(max_disks=60, edge=4, upsample=upsample, subpixel=subpixel,
                          workers=1)
            gpucorr.find_disks(frames[:2], Circular(radius=8), **kwargs)
            best = float("inf")
            for _ in range(args.rounds):
                t0 = time.thread_time()
                res = gpucorr.find_disks(frames, Circular(radius=8), **kwargs)
                best = min(best, time.thread_time() - t0)
            recall, rms = score(res, truths)
            rows.append(dict(frames=name, tool="gpucorr", upsample=upsample, subpixel=subpixel,
                             frames_per_cpu_s=len(frames) / best,
                             recall=recall, rms_px=rms))
            label = "gpucorr" + (" quadratic" if subpixel == "quadratic" else "")
            print(f"| {label} | {name} | {upsample or 'off'} | {len(frames) / best:.0f} "
                  f"| {recall:.3f} | {rms:.4f} |")
        for subpixel in ("multicorr", "poly") if PY4DSTEM.exists() else ():
            row = py4dstem(frames, truths, subpixel, args.rounds)
            rows.append(dict(frames=name, tool=f"py4DSTEM {subpixel}", **row))
            print(f"| py4DSTEM {subpixel} | {name} | {16 if subpixel == 'multicorr' else 'off'} "
                  f"| {row['frames_per_cpu_s']:.0f} | {row['recall']:.3f} | {row['rms_px']:.4f} |")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"find-disks-{stamp}-{workload.commit()}.json"
    path.write_text(json.dumps(dict(machine=platform.processor() or platform.machine(),
                                    device=workload.device(), rows=rows), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
