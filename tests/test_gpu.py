"""The CUDA backend: parity with the CPU, GPU residency, and the kernel sources.

GPU tests carry the ``gpu`` marker: they skip (with the reason) where CuPy
cannot allocate on a GPU, and ``pytest --gpu`` refuses to run there. Every GPU
result is compared with the CPU backend's on the same input, to the tolerances
of DESIGN.md (same integer centres, refined positions within 1e-3 px, heights
and elevations within 1e-4 relative).
"""
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import gpucorr
from gpucorr import patterns

from helpers import assert_results_match, jittered_peaks, random_lattice_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))

PATTERNS = [
    patterns.Circular(radius=4),
    patterns.RadialGradient(radius=3.5, search=7),
    patterns.BackgroundSubtraction(radius=4),
    patterns.RadialGradientBackgroundSubtraction(radius=4),
    patterns.UserTemplate(np.arange(35.0).reshape(5, 7) % 4, search=6),
]


HEADERS = sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cuh")))


def test_kernel_sources_exist_and_are_self_contained():
    from gpucorr.backends import _cuda
    assert KERNELS, "no kernels/*.cu"
    for path in KERNELS + HEADERS:
        text = open(path).read()
        assert text.startswith("//"), f"{path}: opens with a prose header"
        for line in text.splitlines():
            if line.lstrip().startswith("#include"):
                # only headers of kernels/ (kernel_source pastes them in): NVRTC has no
                # host headers
                name = line.split('"')[1] if line.count('"') == 2 else line
                assert os.path.join(ROOT, "kernels", name) in HEADERS, (path, line)
    for path in KERNELS:
        # what NVRTC and the emulator get: no include left
        source = _cuda.kernel_source(os.path.basename(path))
        assert not [line for line in source.splitlines()
                    if line.lstrip().startswith("#")
                    and line.lstrip("# \t").startswith("include")], path
    assert "window_centroid" in _cuda.kernel_source("fast.cu")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("path", KERNELS, ids=os.path.basename)
def test_kernels_compile_with_nvcc(path, tmp_path):
    run = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "-cubin", "-o",
                          str(tmp_path / "k.cubin"), path], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.slow
def test_wheel_ships_the_kernel_sources(tmp_path):
    """A built wheel contains kernels/*.cu where the loader looks for them."""
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "-q", "-w", str(tmp_path), ROOT], capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {run.stderr.strip()[-200:]}")
    wheel = glob.glob(str(tmp_path / "gpucorr-*.whl"))[0]
    names = zipfile.ZipFile(wheel).namelist()
    for path in KERNELS + HEADERS:
        assert f"gpucorr/kernels/{os.path.basename(path)}" in names
    # the loader reads them through importlib.resources from the installed package
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import importlib.resources as r; "
            "print(sorted(p.name for p in (r.files('gpucorr') / 'kernels').iterdir())); "
            "from gpucorr.backends import _cuda; print(len(_cuda.kernel_source('fast.cu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(target)), cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    for path in KERNELS + HEADERS:
        assert os.path.basename(path) in out.stdout


@pytest.fixture
def cupy():
    import cupy
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("upsample", [False, 20])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64], ids=str)
@pytest.mark.parametrize("shape", [(96, 80), (75, 91)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: type(p).__name__)
def test_gpu_matches_cpu(cupy, rng, pattern, shape, dtype, upsample, mode):
    frames, true = random_lattice_frames(rng, 5, shape=shape, radius=4, dtype=dtype)
    peaks = jittered_peaks(rng, true, shape)
    expected = gpucorr.refine(frames, peaks, pattern, mode=mode, upsample=upsample)
    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern, mode=mode,
                         upsample=upsample)
    assert all(isinstance(a, cupy.ndarray) for a in got)
    assert_results_match([cupy.asnumpy(a) for a in got], expected)


def _no_synchronize():
    """``cupyx.allow_synchronize(False)`` where CuPy still has it (it warns that it will
    go; without it, test_gpu_returns_before_its_work_is_done checks the same)."""
    import cupyx
    allow = getattr(cupyx, "allow_synchronize", None)
    if allow is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message=".*allow_synchronize will be removed")
    stack.enter_context(allow(False))
    return stack


@pytest.mark.gpu
def test_gpu_is_resident_and_uses_the_current_stream(cupy, rng):
    frames, true = random_lattice_frames(rng, 8, shape=(128, 128), radius=4)
    frames_gpu = cupy.asarray(frames)
    peaks_gpu = cupy.asarray(np.rint(true).astype(np.int64))
    pattern = patterns.RadialGradient(radius=4)
    for mode in ("fast", "full"):
        gpucorr.refine(frames_gpu, peaks_gpu, pattern, mode=mode, upsample=20)  # warm-up
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream, _no_synchronize():
            res = gpucorr.refine(frames_gpu, peaks_gpu, pattern, mode=mode, upsample=20)
        stream.synchronize()
        expected = gpucorr.refine(frames, np.rint(true).astype(np.int64), pattern, mode=mode,
                                  upsample=20)
        assert_results_match([cupy.asnumpy(a) for a in res], expected)


class _DeviceTemplate(patterns.Circular):
    """A user pattern whose template spectrum is a CuPy array."""

    def get_template(self, sig_shape):
        import cupy
        return cupy.asarray(super().get_template(sig_shape))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("dtype", [np.uint16, np.float64], ids=str)
def test_gpu_filter_is_the_cpus_bit_for_bit(cupy, rng, mode, dtype):
    """The correlation filter is built on the host as on the CPU, then copied up; a
    pattern that gives its template on the GPU has it built there."""
    from gpucorr.execution import Job
    frames, true = random_lattice_frames(rng, 3, shape=(96, 80), radius=4, dtype=dtype)
    peaks = np.rint(true).astype(np.int64)
    pattern = patterns.RadialGradient(radius=4)
    size = pattern.get_crop_size()
    cpu = Job(np, frames, peaks, pattern, mode, 1, size, None)
    gpu = Job(cupy, cupy.asarray(frames), cupy.asarray(peaks), pattern, mode, 1, size, None)
    assert isinstance(gpu.filt, cupy.ndarray) and gpu.filt.dtype == cpu.filt.dtype
    np.testing.assert_array_equal(cupy.asnumpy(gpu.filt), cpu.filt)
    device = _DeviceTemplate(radius=4)
    on_gpu = Job(cupy, cupy.asarray(frames), cupy.asarray(peaks), device, mode, 1, size, None)
    host = Job(np, frames, peaks, patterns.Circular(radius=4), mode, 1, size, None).filt
    np.testing.assert_allclose(cupy.asnumpy(on_gpu.filt), host, rtol=1e-6,
                               atol=1e-6 * np.abs(host).max())  # CuPy's exp, not NumPy's
    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), device, mode=mode)
    expected = gpucorr.refine(frames, peaks, patterns.Circular(radius=4), mode=mode)
    assert_results_match([cupy.asnumpy(a) for a in got], expected)


SPIN = r"""
__device__ unsigned long long now() {  // ns, the GPU's global timer
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
extern "C" __global__ void spin(unsigned long long ns) {
    unsigned long long t0 = now();
    while (now() - t0 < ns) { }
}
"""


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "full"])
def test_gpu_returns_before_its_work_is_done(cupy, rng, request, mode):
    """No host synchronisation on GPU-resident frames: with a kernel that spins for about
    two seconds queued first on the caller's stream, ``refine`` returns while the stream
    is still busy (a synchronisation would have waited for the spin)."""
    if request.config.getoption("--fake-gpu"):
        pytest.skip("the CPU stand-in cannot run the spin kernel (inline PTX); it checks "
                    "syncs through allow_synchronize instead")
    frames, true = random_lattice_frames(rng, 8, shape=(128, 128), radius=4)
    frames_gpu = cupy.asarray(frames)
    peaks_gpu = cupy.asarray(np.rint(true).astype(np.int64))
    pattern = patterns.RadialGradient(radius=4)
    gpucorr.refine(frames_gpu, peaks_gpu, pattern, mode=mode, upsample=20)  # warm-up
    spin = cupy.RawKernel(SPIN, "spin")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        spin((1,), (1,), (np.uint64(2_000_000_000),))
        res = gpucorr.refine(frames_gpu, peaks_gpu, pattern, mode=mode, upsample=20)
        busy = not stream.done
    stream.synchronize()
    assert busy, "refine waited for work queued on the caller's stream"
    expected = gpucorr.refine(frames, np.rint(true).astype(np.int64), pattern, mode=mode,
                              upsample=20)
    assert_results_match([cupy.asnumpy(a) for a in res], expected)


@pytest.mark.gpu
@pytest.mark.parametrize("upsample", [False, 20])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32], ids=str)
def test_gpu_fused_and_unfused_fast_mode_match(cupy, rng, dtype, upsample, monkeypatch):
    """Fast mode as the one fused kernel (fast.cu) and as crop.cu -> cuFFT -> evaluate.cu."""
    from gpucorr.backends import _cuda
    pattern = patterns.Circular(radius=4)
    assert _cuda.fast_correlate_applies(pattern.get_crop_size(), np.float32)
    frames, true = random_lattice_frames(rng, 6, shape=(96, 80), radius=4, dtype=dtype)
    peaks = jittered_peaks(rng, true, (96, 80))
    expected = gpucorr.refine(frames, peaks, pattern, upsample=upsample)
    fused = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern, upsample=upsample)
    monkeypatch.setattr(_cuda, "FUSED_FAST", False)
    unfused = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern,
                             upsample=upsample)
    for got in (fused, unfused):
        assert_results_match([cupy.asnumpy(a) for a in got], expected)


@pytest.mark.gpu
@pytest.mark.parametrize("edge", [4, 6, 10, 18, 24, 30, 32, 64])
def test_gpu_fused_fast_mode_every_kind_of_crop_edge(cupy, rng, edge, monkeypatch):
    """fast.cu for powers of two, odd parts alone (2 M) and mixed (M 2^A), up to 64 px."""
    from gpucorr.backends import _cuda
    monkeypatch.setattr(_cuda, "FAST_MAX_SIZE", 64)
    pattern = patterns.Circular(radius=max(1.0, edge / 5), search=edge // 2)
    assert _cuda.fast_correlate_applies(pattern.get_crop_size(), np.float32)
    shape = (max(96, edge + 8), max(80, edge + 4))
    frames, true = random_lattice_frames(rng, 3, shape=shape, radius=max(1.0, edge / 5),
                                         dtype=np.uint16)
    peaks = jittered_peaks(rng, true, shape)
    expected = gpucorr.refine(frames, peaks, pattern, upsample=5)
    got = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern, upsample=5)
    assert_results_match([cupy.asnumpy(a) for a in got], expected)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "full"])
# (the CPU stand-in for CuPy computes its FFTs with NumPy, which warns on NaN and inf)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_gpu_non_finite_frames_give_nan_rows(cupy, rng, mode):
    frames, true = random_lattice_frames(rng, 3, shape=(96, 96), radius=4)
    peaks = np.rint(true).astype(np.int64)
    frames[1, 48, 48] = np.nan
    frames[2, peaks[3, 0], peaks[3, 1]] = np.inf
    pattern = patterns.Circular(radius=4)
    res = gpucorr.refine(cupy.asarray(frames), cupy.asarray(peaks), pattern, mode=mode)
    heights = cupy.asnumpy(res.heights)
    refineds = cupy.asnumpy(res.refineds)
    cs = pattern.get_crop_size()

    def holds(y, x):  # which peaks' crops hold pixel (y, x)
        return ((peaks[:, 0] - cs <= y) & (y < peaks[:, 0] + cs)
                & (peaks[:, 1] - cs <= x) & (x < peaks[:, 1] + cs))

    if mode == "full":      # the whole frame's map
        assert np.isnan(heights[1:]).all()
    else:                   # the crops that hold the pixel
        for frame, (y, x) in ((1, (48, 48)), (2, tuple(peaks[3]))):
            near = holds(y, x)
            assert near.any()
            assert np.isnan(heights[frame, near]).all()
            assert np.isfinite(heights[frame, ~near]).all()
    assert np.isnan(refineds[np.isnan(heights)]).all()
    assert np.isnan(cupy.asnumpy(res.elevations)[np.isnan(heights)]).all()
    assert np.isfinite(heights[0]).all()


@pytest.mark.gpu
def test_gpu_small_memory_budget_gives_the_same(cupy, rng):
    frames, true = random_lattice_frames(rng, 9, shape=(96, 96), radius=4)
    peaks = cupy.asarray(np.rint(true).astype(np.int64))
    pattern = patterns.Circular(radius=4)
    big = gpucorr.refine(cupy.asarray(frames), peaks, pattern)
    small = gpucorr.refine(cupy.asarray(frames), peaks, pattern, memory_limit=1)
    for a, b in zip(big, small):
        cupy.testing.assert_array_equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("dtype", [">u2", ">f4", ">f8"])
def test_gpu_big_endian_host_frames(cupy, rng, dtype, mode):
    """Big-endian host frames (HDF5 can hold them) streamed to the GPU give the results of
    their native dtype on the GPU (and its compute dtype: float64 for '>f8')."""
    frames, true = random_lattice_frames(rng, 4, shape=(64, 72), radius=4, dtype=np.uint16)
    peaks = np.rint(true).astype(np.int64)
    pattern = patterns.RadialGradient(radius=4)
    big = frames.astype(dtype)
    native = gpucorr.refine(big.astype(big.dtype.newbyteorder("=")), peaks, pattern,
                            mode=mode, device="cuda")
    for a, b in zip(gpucorr.refine(big, peaks, pattern, mode=mode, device="cuda"), native):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_gpu_integer_peaks_beyond_the_limit_give_nan_rows(cupy, rng):
    """Integer CuPy peaks are not checked on the host (no sync): those beyond +-2**30, whose
    centres int32 cannot hold, give NaN refineds, heights and elevations (the CPU raises);
    the other rows are the CPU's."""
    frames, true = random_lattice_frames(rng, 3, shape=(64, 72), radius=4, dtype=np.uint16)
    pattern = patterns.RadialGradient(radius=4)
    good = np.rint(true).astype(np.int64)
    peaks = np.concatenate([good, [[2**40, 5], [3, -2**31], [2**30 + 1, 0]]])
    expected = gpucorr.refine(frames, good, pattern, scaling="log")  # process_frame_fast's
    cs = pattern.get_crop_size()
    template = cupy.asarray(pattern.get_template((2 * cs, 2 * cs)))
    unsigned = peaks.astype(np.uint64)  # negative ones become huge: 2**63 + 5
    unsigned[peaks < 0] = np.uint64(2**63 + 5)
    for p in (cupy.asarray(peaks), cupy.asarray(unsigned)):
        got = [cupy.asnumpy(a) for a in gpucorr.refine(cupy.asarray(frames), p, pattern,
                                                        scaling="log")]
        assert np.isnan(got[1][:, len(good):]).all() and np.isnan(got[2][:, len(good):]).all()
        assert np.isnan(got[3][:, len(good):]).all()
        assert_results_match([a[:, :len(good)] for a in got], expected)
        outs = [cupy.zeros((len(peaks), 2), np.int32)] + [
            cupy.zeros((len(peaks),) + s, np.float32) for s in ((2,), (), ())]
        gpucorr.process_frame_fast(template, cs, cupy.asarray(frames[0]), p, *outs,
                                   crop_bufs=gpucorr.allocate_crop_bufs(cs, 4, np.float32,
                                                                        xp=cupy))
        outs = [cupy.asnumpy(a) for a in outs]
        assert np.isnan(outs[1][len(good):]).all() and np.isnan(outs[2][len(good):]).all()
        assert_results_match([a[:len(good)] for a in outs], [a[0] for a in expected])


@pytest.mark.gpu
def test_mixed_numpy_and_cupy_is_a_type_error(cupy, rng):
    frames, true = random_lattice_frames(rng, 2, shape=(64, 64), radius=3)
    with pytest.raises(TypeError, match="arguments mix array libraries"):
        gpucorr.refine(cupy.asarray(frames), np.rint(true).astype(int), patterns.Circular(3))
    with pytest.raises(TypeError, match="arguments mix array libraries"):
        gpucorr.refine([cupy.asarray(frames[0]), frames[1]],
                       cupy.asarray(np.rint(true).astype(int)), patterns.Circular(3))


@pytest.mark.gpu
def test_list_of_cupy_frames_is_stacked_on_the_gpu(cupy, rng):
    frames, true = random_lattice_frames(rng, 3, shape=(64, 64), radius=3)
    peaks = cupy.asarray(np.rint(true).astype(np.int64))
    stacked = gpucorr.refine(cupy.asarray(frames), peaks, patterns.Circular(3))
    listed = gpucorr.refine([cupy.asarray(f) for f in frames], peaks, patterns.Circular(3))
    for a, b in zip(listed, stacked):
        assert isinstance(a, cupy.ndarray)
        cupy.testing.assert_array_equal(a, b)


def _cuda_names():
    from gpucorr.backends import _cuda
    return _cuda.kernel_expressions()


def test_every_kernel_source_has_launchers():
    assert sorted(_cuda_names()) == sorted(os.path.basename(p) for p in KERNELS)


def _find_nvrtc():
    """libnvrtc from the nvidia-cuda-nvrtc wheel or a CUDA toolkit, or None."""
    import ctypes
    import ctypes.util
    candidates = [ctypes.util.find_library("nvrtc")]
    try:
        import nvidia
        for base in nvidia.__path__:
            candidates += glob.glob(os.path.join(base, "*", "lib", "libnvrtc.so*"))
    except ImportError:
        pass
    candidates += glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*")
    for path in candidates:
        if path and "builtins" not in path:
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def _nvrtc_expressions(name):
    """The name expressions to compile for source ``name``: every one the launchers use,
    except for fast.cu (144, over a minute of NVRTC) every crop edge with uint16 frames
    and every frame dtype at edge 8: the frame dtype changes only the load's conversion."""
    from gpucorr.backends import _cuda
    expressions = _cuda.kernel_expressions()[name]
    if name != "fast.cu":
        return expressions
    cover = {f"fast_correlate<unsigned short, {n}>" for n in _cuda.FAST_SIZES}
    cover |= {f"fast_correlate<{_cuda.C_TYPES[d]}, 8>" for d in _cuda.FAST_FRAME_DTYPES}
    assert cover <= set(expressions)
    return sorted(cover)


@pytest.mark.parametrize("name", sorted(_cuda_names()))
def test_kernels_compile_with_nvrtc_for_every_instantiation(name):
    """NVRTC (what CuPy compiles with at run time) accepts the sources, no host headers."""
    import ctypes
    from gpucorr.backends import _cuda
    lib = _find_nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc)")
    expressions = _nvrtc_expressions(name)
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), _cuda.kernel_source(name).encode(),
                                  name.encode(), 0, None, None) == 0
    for expression in expressions:
        assert lib.nvrtcAddNameExpression(prog, expression.encode()) == 0
    options = [b"-std=c++17", b"--gpu-architecture=compute_90"]
    status = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * 2)(*options))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert status == 0, log.value.decode()
