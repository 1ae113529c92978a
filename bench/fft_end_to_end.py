"""What the CPU FFT costs end to end: ``refine`` with today's FFT against the public ones.

Usage::

    python bench/fft_end_to_end.py [--rounds 5] [--frames 64]

:mod:`fft_paths` times the transforms alone; this swaps the CPU backend's FFT
object (``gpucorr.backends._CPU._fft``) for each candidate of
:mod:`fft_paths` in turn (today's pocketfft binding with ``out=``, NumPy >= 2's
public FFTs kept in float32, ducc0 where installed) and times
:func:`gpucorr.refine` on ``gpucorr bench``'s workload with ``workers=1``:
fast mode, fast mode with ``upsample=20`` and full mode, the candidates
interleaved round by round, best of ``--rounds``. Times are the calling
thread's CPU time (``time.thread_time``; with one worker the numba kernels and
the FFTs run in that thread), which a shared machine's load disturbs less than
wall time. Prints frames/s and the ratio to today, and writes JSON under
``--out``.
"""
import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import fft_paths
import workload

import gpucorr
from gpucorr import backends

HERE = Path(__file__).resolve().parent


def candidates():
    found = {"today": backends._CPU._fft, "numpy": fft_paths.NumpyFFTScaled()}
    try:
        found["ducc0"] = fft_paths.DuccFFT()
    except ImportError:
        pass
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    w = workload.make_workload(args.frames)
    pattern = workload.pattern()
    cases = {"fast": ("fast", False), "fast-upsample20": ("fast", 20), "full": ("full", False)}
    ffts = candidates()
    today = backends._CPU._fft
    best = {}
    try:
        for _ in range(args.rounds):
            for name, fft in ffts.items():
                backends._CPU._fft = fft
                for case, (mode, up) in cases.items():
                    gpucorr.refine(w.frames[:4], w.peaks, pattern, mode=mode, upsample=up,
                                   workers=1)
                    t0 = time.thread_time()
                    gpucorr.refine(w.frames, w.peaks, pattern, mode=mode, upsample=up,
                                   workers=1)
                    seconds = time.thread_time() - t0
                    best[name, case] = min(best.get((name, case), float("inf")), seconds)
    finally:
        backends._CPU._fft = today
    rows = [f"| case | today frames/s | {' | '.join(n + ' / today' for n in ffts if n != 'today')} |",
            "|---|---:|" + "---:|" * (len(ffts) - 1)]
    results = []
    for case in cases:
        t = best["today", case]
        ratios = {n: t / best[n, case] for n in ffts if n != "today"}
        rows.append(f"| {case} | {args.frames / t:.0f} | "
                    + " | ".join(f"{r:.3f}" for r in ratios.values()) + " |")
        results.append(dict(case=case, today_frames_per_s=args.frames / t,
                            throughput_ratio_to_today=ratios))
    print("\n".join(rows))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fft-end-to-end-{stamp}-{workload.commit()}.json"
    path.write_text(json.dumps(dict(machine=platform.processor() or platform.machine(),
                                    device=workload.device(), frames=args.frames,
                                    rounds=args.rounds, timer="thread_time",
                                    results=results), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
