"""CPU benchmarks: gpucorr against libertem-blobfinder 0.6.1, side by side.

Not part of the normal test run (``testpaths`` are ``tests`` and ``gpucorr``).
Run explicitly, with benchmarking switched on (pyproject's addopts disable it)::

    python -m pytest bench/ --benchmark-enable

Each group ("fast", "fast-upsample20", "full") times one call on the same 64
frames (256x256 float32, 49 peaks, RadialGradient radius 8: bench/workload.py,
which is ``gpucorr bench``'s workload) for both libraries. Compare throughputs
within one run only: this is a ratio benchmark, absolute times on a shared VM
mean little. ``bench/compare.py`` prints the same comparison as a table.
"""
import numpy as np
import pytest

import workload

ROUNDS = 5


@pytest.fixture(scope="module")
def work():
    return workload.make_workload()


@pytest.fixture(scope="module")
def device():
    return workload.device()


def _run(benchmark, call, group, backend, device, work):
    call()  # JIT compilation, FFT plans, page faults: not timed
    n_frames = len(work.frames)
    benchmark.group = group
    benchmark.extra_info.update(backend=backend, device=device, frames_per_call=n_frames,
                                frame_shape="x".join(map(str, workload.FRAME_SHAPE)),
                                dtype=str(work.frames.dtype), n_peaks=len(work.peaks),
                                pattern=f"RadialGradient(radius={workload.RADIUS})")
    result = benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["frames_per_s_best"] = round(n_frames / benchmark.stats.stats.min, 1)
    return result


@pytest.mark.parametrize("group", list(workload.CASES))
def test_gpucorr(benchmark, work, device, group):
    mode, upsample = workload.CASES[group]
    res = _run(benchmark, workload.gpucorr_call(work, mode, upsample), group,
               "gpucorr (numba CPU, default workers)", device, work)
    assert res.refineds.shape == (len(work.frames), workload.PEAKS, 2)


@pytest.mark.parametrize("group", list(workload.CASES))
def test_reference(benchmark, work, device, group):
    mode, upsample = workload.CASES[group]
    res = _run(benchmark, workload.reference_call(work, mode, upsample), group,
               workload.REFERENCE, device, work)
    assert res[1].shape == (len(work.frames), workload.PEAKS, 2)


@pytest.mark.parametrize("group", list(workload.CASES))
def test_same_answers(work, group):
    """Both sides of a group compute the same thing (so the timings are comparable)."""
    mode, upsample = workload.CASES[group]
    frames = workload.Workload(work.frames[:4], work.peaks, work.true_centers)
    ours = workload.gpucorr_call(frames, mode, upsample)()
    ref = workload.reference_call(frames, mode, upsample)()
    np.testing.assert_array_equal(ours.centers, ref[0])
    # libertem-blobfinder's upsampling is biased in x (half-spectrum DFT); compare loosely
    atol = 0.5 if upsample else 1e-3
    np.testing.assert_allclose(ours.refineds, ref[1], atol=atol)
