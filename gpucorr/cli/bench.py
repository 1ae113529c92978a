"""``gpucorr bench``: frames/s of the benchmark workload on this machine.

Times each case of :mod:`gpucorr.cli.workload` (fast, fast with upsample 20,
full) with gpucorr on the CPU, with libertem-blobfinder where it is installed
(the throughput ratio), and with gpucorr on a usable GPU (CuPy input), best of
``--rounds`` after an untimed warm-up, and prints a markdown table.
"""
import time

import gpucorr
from gpucorr.cli import workload
from gpucorr.cli.common import cpu_name, cuda_status

__all__ = ["cmd_bench"]


def cmd_bench(args):
    w = workload.make_workload(args.frames)
    print(f"gpucorr {gpucorr.__version__} bench: {w.description}, best of {args.rounds} rounds")
    print(f"CPU: {cpu_name()}")
    usable, reason = cuda_status()
    gpu = next(d for d in gpucorr.devices() if d.name.startswith("cuda")) if usable else None
    print(f"GPU: {gpu.name + ', ' + gpu.description if gpu else 'not used: ' + reason}")
    try:
        import libertem_blobfinder  # noqa: F401
        reference = True
    except ImportError:
        reference = False
        print("libertem-blobfinder: not installed (pip install libertem-blobfinder)")
    if gpu:
        import cupy
        on_gpu = workload.Workload(cupy.asarray(w.frames), cupy.asarray(w.peaks), w.true_centers)
    print()
    print("| case | gpucorr CPU frames/s | libertem-blobfinder frames/s | ratio |"
          + (" gpucorr GPU frames/s (CuPy input) |" if gpu else ""))
    print("|---|---:|---:|---:|" + ("---:|" if gpu else ""))
    for name, (mode, up) in workload.CASES.items():
        ours = _best_seconds(workload.gpucorr_call(w, mode, up), args.rounds)
        row = f"| {name} | {args.frames / ours:.0f} |"
        if reference:
            ref = _best_seconds(workload.reference_call(w, mode, up), args.rounds)
            row += f" {args.frames / ref:.0f} | {ref / ours:.2f}x |"
        else:
            row += " - | - |"
        if gpu:
            call = _synchronised(workload.gpucorr_call(on_gpu, mode, up))
            row += f" {args.frames / _best_seconds(call, args.rounds):.0f} |"
        print(row)
    return 0


def _best_seconds(call, rounds):
    """Best time of ``call()`` over ``rounds`` runs, after an untimed warm-up (JIT, FFT plans)."""
    call()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def _synchronised(call):
    """``call`` followed by a synchronise of the current CUDA stream (GPU work is queued)."""
    import cupy

    def run():
        call()
        cupy.cuda.get_current_stream().synchronize()
    return run
