"""Throughput of gpucorr against libertem-blobfinder 0.6.1 on this machine's CPU.

Usage::

    python bench/compare.py [--rounds 7] [--frames 64] [--out bench/results]

Times each case of :mod:`workload` (``gpucorr bench``'s workload) with
``time.perf_counter``, best of ``--rounds`` rounds, interleaving the
implementations round by round so that both see the same machine load. Prints
a markdown table of frames/s and the gpucorr/reference throughput ratios and
writes the numbers, the device, the commit and the library versions as JSON
under ``--out``.

gpucorr runs with its default thread count (one per core) and, for a
per-core comparison, with ``workers=1``; libertem-blobfinder's
``process_frames_*`` is single-threaded.
"""
import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import workload

#: throughput ratio gpucorr / reference asked for by the issue (CPU, default workers)
TARGETS = {"fast": 2.0, "fast-upsample20": 5.0, "full": 1.5}


def measure(w, rounds):
    """Best seconds per call: {group: {"gpucorr": s, "gpucorr-1worker": s, "reference": s}}."""
    calls = {}
    for group, (mode, upsample) in workload.CASES.items():
        calls[group] = {
            "gpucorr": workload.gpucorr_call(w, mode, upsample),
            "gpucorr-1worker": workload.gpucorr_call(w, mode, upsample, workers=1),
            "reference": workload.reference_call(w, mode, upsample),
        }
    for impls in calls.values():  # warm-up: JIT, FFT plans
        for call in impls.values():
            call()
    best = {g: {name: float("inf") for name in impls} for g, impls in calls.items()}
    for _ in range(rounds):
        for group, impls in calls.items():
            for name, call in impls.items():
                t0 = time.perf_counter()
                call()
                best[group][name] = min(best[group][name], time.perf_counter() - t0)
    return best


def table(results):
    """Markdown table of a ``results`` dict as written by :func:`main`."""
    n = results["frames_per_call"]
    lines = [
        "| case | gpucorr frames/s | gpucorr 1 worker frames/s | libertem-blobfinder "
        "frames/s | ratio | ratio, 1 worker | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for group, row in results["cases"].items():
        fps = {k: n / v for k, v in row["seconds"].items()}
        target = TARGETS[group]
        lines.append(
            f"| {group} | {fps['gpucorr']:.0f} | {fps['gpucorr-1worker']:.0f} | "
            f"{fps['reference']:.0f} | {row['ratio']:.2f}x | {row['ratio_1worker']:.2f}x | "
            f">= {target:g}x | {'yes' if row['ratio'] >= target else 'no'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (best is kept)")
    parser.add_argument("--frames", type=int, default=workload.FRAMES_PER_CALL,
                        help="frames per call")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="folder for the JSON result")
    args = parser.parse_args(argv)

    w = workload.make_workload(args.frames)
    best = measure(w, args.rounds)
    now = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "date": now.isoformat(timespec="seconds"),
        "commit": workload.commit(),
        "device": workload.device(),
        "versions": workload.versions(),
        "workload": w.description,
        "frames_per_call": args.frames,
        "rounds": args.rounds,
        "cases": {
            group: {
                "seconds": secs,
                "ratio": secs["reference"] / secs["gpucorr"],
                "ratio_1worker": secs["reference"] / secs["gpucorr-1worker"],
                "target": TARGETS[group],
            } for group, secs in best.items()
        },
    }
    print(f"{results['device']}; commit {results['commit']}; {results['date']}; "
          f"{results['workload']}; best of {args.rounds} rounds")
    print()
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cpu-{now:%Y%m%dT%H%M%SZ}-{results['commit']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
