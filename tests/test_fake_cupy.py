"""The CPU stand-in for CuPy (tests/fake_cupy.py) catches what it is there to catch.

``pytest --fake-gpu`` runs the gpu tests on it; these tests check, without a
GPU, that it would fail where a real GPU run would: implicit host copies,
host arrays given to device code, synchronisation inside
``allow_synchronize(False)``, and copies on another stream used before
anyone waited for them.
"""
import warnings

import numpy as np
import pytest

import fake_cupy


@pytest.fixture
def cupy():
    if "cupy" in __import__("sys").modules and not getattr(
            __import__("sys").modules["cupy"], "__file__", "").endswith("fake_cupy.py"):
        pytest.skip("the real CuPy is loaded in this process")
    module = fake_cupy.install()
    yield module
    fake_cupy.uninstall()


def test_no_implicit_host_copies(cupy):
    x = cupy.asarray(np.arange(4.0))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(x)
    with pytest.raises(TypeError, match="host NumPy array"):
        x + np.arange(4.0)
    with pytest.raises(TypeError, match="host NumPy array"):
        cupy.concatenate([x, np.arange(2.0)])
    np.testing.assert_array_equal((x * 2).get(), [0, 2, 4, 6])
    assert isinstance(x.sum(), cupy.ndarray) and x.sum().ndim == 0  # 0-d, as CuPy


def test_kernels_refuse_host_arrays(cupy):
    from gpucorr import _cuda
    kernel = cupy.RawModule(code=_cuda.kernel_source("evaluate.cu"),
                            name_expressions=_cuda.evaluate_expressions()).get_function(
                                "evaluate<float>")
    with pytest.raises(TypeError, match="argument 0 is a host NumPy array"):
        kernel((1,), (32,), (np.zeros((1, 4, 4), np.float32),))


def test_other_streams_run_only_when_waited_for(cupy):
    host = np.arange(8, dtype=np.float32)
    dev = cupy.zeros(8, dtype=np.float32)
    copy = cupy.cuda.Stream(non_blocking=True)
    done = cupy.cuda.Event()
    dev.data.copy_from_host_async(host.ctypes.data, host.nbytes, stream=copy)
    done.record(copy)
    host[:] = -1                     # overwritten before the copy ran: the copy sends -1
    assert float(dev.sum().item()) == 0.0
    cupy.cuda.get_current_stream().wait_event(done)
    np.testing.assert_array_equal(dev.get(), -1)


def test_allow_synchronize_false_raises_on_every_sync(cupy):
    import cupyx
    x = cupy.asarray(np.ones(3))
    with cupyx.allow_synchronize(False):
        y = x * 2                    # no sync: fine
        for sync in (y.get, y.sum().item, lambda: bool(y[0]),
                     cupy.cuda.get_current_stream().synchronize):
            with pytest.raises(cupyx.DeviceSynchronized):
                sync()
    assert y.get().tolist() == [2, 2, 2]


@pytest.fixture
def small_blocks(monkeypatch):
    import cuda_emulator
    from gpucorr import _cuda
    reason = cuda_emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the CUDA emulator cannot run here: {reason}")
    monkeypatch.setattr(_cuda, "BLOCK", 32)


def test_streaming_needs_its_waits(cupy, small_blocks, monkeypatch):
    """With the copy stream's events ignored, streamed results go wrong on the stand-in:
    so the streaming tests would catch a missing wait in gpucorr.api."""
    import gpucorr
    from gpucorr import api, patterns
    frames, _, true = gpucorr.cbed_frame(48, 48, radius=3, zero=(24.2, 23.7), a=(11.3, 0.4),
                                         b=(-0.4, 11.3))
    rng = np.random.default_rng(5)  # noise: no exact ties for float rounding to decide
    frames = rng.poisson(np.concatenate([frames * 50 * (1 + k) + 3 for k in range(8)]))
    frames = frames.astype(np.float32)
    peaks = np.rint(true).astype(np.int64)
    pattern = patterns.Circular(radius=3)
    monkeypatch.setattr(api, "STAGING_BYTES", 2 * frames[0].nbytes)  # 4 chunks of 2 frames
    expected = gpucorr.refine(frames, peaks, pattern)
    good = gpucorr.refine(frames, peaks, pattern, device="cuda")
    np.testing.assert_array_equal(good.centers, expected.centers)
    np.testing.assert_allclose(good.heights, expected.heights, rtol=1e-4)
    monkeypatch.setattr(fake_cupy.Stream, "wait_event", lambda self, event: None)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the unwaited buffers hold garbage, NaN included
        bad = gpucorr.refine(frames, peaks, pattern, device="cuda")
    assert not np.allclose(bad.heights, expected.heights, rtol=1e-4)
