"""The CPU stand-in for CuPy (tests/fake_cupy.py) catches what it is there to catch.

``pytest --fake-gpu`` runs the gpu tests on it; these tests check, without a
GPU, that it would fail where a real GPU run would: implicit host copies,
host arrays given to device code, synchronisation inside
``allow_synchronize(False)``, and work queued on a stream (the current one
included) used before anyone waited for it.
"""
import warnings

import numpy as np
import pytest

import fake_cupy


@pytest.fixture
def cupy():
    with fake_cupy.installed() as module:
        yield module


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
    from gpucorr.backends import _cuda
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


def test_current_stream_work_waits_like_any_other(cupy):
    """Copies queued on the current stream run only when something orders them: a copy
    from the host reads the host buffer then; a copy to the host lands in host memory
    only at a host synchronisation that covers it (an event's, the stream's, or one of a
    stream that waited for it), not when a later operation runs it on the device."""
    stream = cupy.cuda.get_current_stream()
    host = np.arange(4, dtype=np.float32)
    dev = cupy.zeros(4, dtype=np.float32)
    dev.data.copy_from_host_async(host.ctypes.data, host.nbytes)    # current stream
    host[:] = 7                      # before the copy ran: the copy sends 7
    np.testing.assert_array_equal(dev.get(), 7)

    back = np.full(4, -1, dtype=np.float32)
    dev.data.copy_to_host_async(back.ctypes.data, back.nbytes)
    done = stream.record()
    dev *= 2                         # runs the download on the device first ...
    np.testing.assert_array_equal(back, -1)   # ... but the host has not waited for it
    done.synchronize()
    np.testing.assert_array_equal(back, 7)    # the value when the download ran, not 14

    # a host synchronisation of another stream that waited for it delivers it too
    dev.data.copy_to_host_async(back.ctypes.data, back.nbytes)
    other = cupy.cuda.Stream(non_blocking=True)
    other.wait_event(stream.record())
    np.testing.assert_array_equal(back, 7)
    other.synchronize()
    np.testing.assert_array_equal(back, 14)

    # every way CuPy synchronises the stream delivers it
    for sync in (lambda: dev.get(), lambda: cupy.asnumpy(dev), lambda: dev[0].item(),
                 lambda: bool(dev[0]), stream.synchronize,
                 cupy.cuda.runtime.deviceSynchronize, lambda: cupy.cuda.Device().synchronize()):
        back[:] = -1
        dev.data.copy_to_host_async(back.ctypes.data, back.nbytes)
        assert back[0] == -1
        sync()
        np.testing.assert_array_equal(back, 14)


def test_event_times_come_from_the_run_work(cupy):
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    stop.record()
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="NotReady"):
        cupy.cuda.get_elapsed_time(start, stop)
    stop.synchronize()
    assert cupy.cuda.get_elapsed_time(start, stop) >= 0


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
    from gpucorr.backends import _cuda
    reason = cuda_emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the CUDA emulator cannot run here: {reason}")
    monkeypatch.setattr(_cuda, "BLOCK", 32)


def test_streaming_needs_its_waits(cupy, small_blocks, monkeypatch):
    """With the copy stream's events ignored, streamed results go wrong on the stand-in:
    so the streaming tests would catch a missing wait in gpucorr.execution.streaming."""
    import gpucorr
    frames, peaks, pattern, expected = _streaming_case(monkeypatch)
    good = gpucorr.refine(frames, peaks, pattern, device="cuda")
    np.testing.assert_array_equal(good.centers, expected.centers)
    np.testing.assert_allclose(good.heights, expected.heights, rtol=1e-4)
    monkeypatch.setattr(fake_cupy.Stream, "wait_event", lambda self, event: None)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the unwaited buffers hold garbage, NaN included
        bad = gpucorr.refine(frames, peaks, pattern, device="cuda")
    assert not np.allclose(bad.heights, expected.heights, rtol=1e-4)


def test_kernels_on_the_current_stream_wait_too(cupy, small_blocks):
    """A kernel launch is checked at once but runs when its stream does: after the
    launch, the output is unchanged until an operation or a synchronisation orders it."""
    import cuda_emulator
    from gpucorr.backends import _cuda
    maps = cupy.asarray(np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5))
    outs = [cupy.zeros((2, 2), np.int32), cupy.zeros((2, 2), np.float32),
            cupy.zeros(2, np.float32), cupy.zeros(2, np.float32)]
    launched = len(cuda_emulator.launches)
    _cuda.evaluate(maps, cupy.zeros((1, 2), np.int64), 0, cupy.zeros(2), *outs)
    assert len(cuda_emulator.launches) == launched       # queued, not run
    with pytest.raises(TypeError, match="host NumPy array"):   # checked at the launch
        _cuda.evaluate(maps, cupy.zeros((1, 2), np.int64), 0, cupy.zeros(2),
                       np.zeros((2, 2), np.int32), *outs[1:])
    np.testing.assert_array_equal(outs[0].get(), [[4, 4], [4, 4]])   # the argmax, (4, 4)
    assert len(cuda_emulator.launches) == launched + 1


def _streaming_case(monkeypatch):
    """Frames, peaks, pattern and the CPU's results of a streamed call of 4 chunks."""
    import gpucorr
    from gpucorr import patterns
    from gpucorr.execution import streaming
    frames, _, true = gpucorr.cbed_frame(48, 48, radius=3, zero=(24.2, 23.7), a=(11.3, 0.4),
                                         b=(-0.4, 11.3))
    rng = np.random.default_rng(5)  # noise: no exact ties for float rounding to decide
    frames = rng.poisson(np.concatenate([frames * 50 * (1 + k) + 3 for k in range(8)]))
    frames = frames.astype(np.float32)
    peaks = np.rint(true).astype(np.int64)
    pattern = patterns.Circular(radius=3)
    monkeypatch.setattr(streaming, "STAGING_BYTES", 2 * frames[0].nbytes)  # 4 chunks of 2 frames
    return frames, peaks, pattern, gpucorr.refine(frames, peaks, pattern)


class _NoWaitEvent(fake_cupy.Event):
    """An event whose ``synchronize`` does not wait: a removed synchronisation."""

    def synchronize(self):
        pass


@pytest.mark.parametrize("stand_in", ["deferred", "current stream at once"])
def test_streaming_needs_its_download_wait(cupy, small_blocks, monkeypatch, stand_in):
    """Issue 15, item 3: the streaming loop (``gpucorr.execution.streaming``) waits for each
    slot's download (``Slot.downloaded``, on the caller's stream) before it reads the
    pinned results. Without that wait the streamed results are wrong on the stand-in,
    because it defers work on the current stream too; the stand-in that ran the current
    stream's work at once (the "current stream at once" case, restored here) did not
    notice the missing wait."""
    import gpucorr
    from gpucorr.execution import streaming
    frames, peaks, pattern, expected = _streaming_case(monkeypatch)
    if stand_in == "current stream at once":
        def at_once(stream, op):
            stream = stream or fake_cupy.get_current_stream()
            stream._push(op)
            if stream is fake_cupy.get_current_stream():
                stream._host_sync()
        monkeypatch.setattr(fake_cupy, "_enqueue", at_once)
    good = gpucorr.refine(frames, peaks, pattern, device="cuda")
    np.testing.assert_array_equal(good.centers, expected.centers)
    np.testing.assert_allclose(good.heights, expected.heights, rtol=1e-4)

    real_init = streaming.Slot.__init__

    def without_the_wait(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.downloaded = _NoWaitEvent()   # recorded as before; synchronize() returns at once
    monkeypatch.setattr(streaming.Slot, "__init__", without_the_wait)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the unwaited buffers hold garbage, NaN included
        bad = gpucorr.refine(frames, peaks, pattern, device="cuda")
    wrong = ~np.isclose(bad.heights, expected.heights, rtol=1e-4).all(axis=1)
    if stand_in == "deferred":
        assert wrong.all(), f"frames with right results without the wait: {np.flatnonzero(~wrong)}"
    else:
        assert not wrong.any()   # blind to it


def test_streaming_copies_come_after_the_callers_queued_work(cupy, monkeypatch):
    """The copy stream waits for the caller's stream before its first copy.

    Its device buffers may be blocks that the caller's stream still uses (CuPy's
    pool orders reuse on the allocating stream only): on an H100 under
    compute-sanitizer, which slows kernels down, streamed frames were overwritten by
    an earlier call's scratch until this wait was added. The stand-in runs the
    current stream's work at once, so it checks the order of the calls instead.
    """
    import gpucorr
    from gpucorr import patterns
    log = []
    real_wait, real_copy = fake_cupy.Stream.wait_event, fake_cupy._Pointer.copy_from_host_async

    def wait(self, event):
        log.append(("wait", self, event.stream))
        return real_wait(self, event)

    def copy(self, mem, size, stream=None):
        log.append(("copy", stream, None))
        return real_copy(self, mem, size, stream=stream)

    monkeypatch.setattr(fake_cupy.Stream, "wait_event", wait)
    monkeypatch.setattr(fake_cupy._Pointer, "copy_from_host_async", copy)
    frames, _, true = gpucorr.cbed_frame(32, 32, radius=2, zero=(16.2, 15.7), a=(8.3, 0.4),
                                         b=(-0.4, 8.3))
    caller = cupy.cuda.get_current_stream()
    gpucorr.refine(frames.astype(np.uint16), np.rint(true).astype(np.int64),
                   patterns.Circular(radius=2), device="cuda")
    first_copy = next(i for i, (what, _, _) in enumerate(log) if what == "copy")
    copy_stream = log[first_copy][1]
    assert copy_stream is not caller
    assert ("wait", copy_stream, caller) in log[:first_copy]


def test_refuses_what_the_real_cupy_lacks(cupy):
    """NumPy names and keywords that CuPy does not have fail on the stand-in as on a GPU."""
    import cupyx
    x = cupy.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(AttributeError, match="CuPy 14.2"):
        cupy.nanpercentile(x, 50)                # NumPy has it, CuPy does not
    with pytest.raises(TypeError, match="no implementation found"):
        np.nanquantile(x, 0.5)                   # dispatched through __array_function__
    with pytest.raises(TypeError, match="initial"):
        x.max(initial=0.0)                       # ndarray method, NumPy-only keyword
    with pytest.raises(TypeError, match="where"):
        cupy.sum(x, where=x > 1)                 # function, NumPy-only keyword
    with pytest.raises(TypeError, match="where"):
        np.sum(x, where=x > 1)
    with pytest.raises(TypeError, match="where"):
        np.add(x, x, where=x > 1)                # ufunc, NumPy-only keyword
    with pytest.raises(AttributeError, match="CuPy 14.2"):
        x.tofile_compressed                      # no such method
    with pytest.raises(TypeError, match="norm|workers"):
        cupyx.scipy.fft.rfft2(x, workers=2)      # scipy.fft's keyword, not CuPy's
    # what CuPy has goes through
    assert x.max(axis=0).get().tolist() == [3.0, 4.0, 5.0]
    assert float(np.add.reduce(x, axis=None).get()) == 15.0


def test_kernel_launch_as_cupy_takes_it(cupy):
    """CuPy's launcher takes grid and block as tuples, and RawModule's options as a tuple."""
    from gpucorr.backends import _cuda
    source = _cuda.kernel_source("evaluate.cu")
    with pytest.raises(TypeError, match="options as a tuple"):
        cupy.RawModule(code=source, options=["-std=c++17"],
                       name_expressions=_cuda.evaluate_expressions())
    kernel = cupy.RawModule(code=source, name_expressions=_cuda.evaluate_expressions()
                            ).get_function("evaluate<float>")
    maps = cupy.zeros((1, 4, 4), np.float32)
    with pytest.raises(TypeError, match="grid as a tuple"):
        kernel([1], (32,), (maps,))
    with pytest.raises(TypeError, match="block as a tuple"):
        kernel((1,), 32, (maps,))
    with pytest.raises(TypeError, match="refuses this call"):
        kernel((1,), (32,), (maps,), shared_memory=0)


# what each class of the stand-in stands for in the real CuPy
_CLASSES = {"ndarray": "cupy.ndarray", "Stream": "cupy.cuda.Stream",
            "ExternalStream": "cupy.cuda.ExternalStream", "Event": "cupy.cuda.Event",
            "Device": "cupy.cuda.Device", "_Pointer": "cupy.cuda.MemoryPointer",
            "_MemoryPool": "cupy.cuda.MemoryPool"}


def _no_more_permissive(fake, real, what):
    """Every call the stand-in's ``fake`` takes, CuPy's ``real`` takes too."""
    import inspect
    params = [p for p in inspect.signature(fake).parameters.values() if p.name != "self"]
    real_params = list(real.parameters.values())
    by_name = {p.name: p for p in real_params}
    for i, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        assert p.name in by_name, f"{what}: CuPy has no parameter {p.name!r} ({real})"
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            assert i < len(real_params) and real_params[i].name == p.name, \
                f"{what}: positional parameter {i} is {p.name!r} here, not in CuPy {real}"


def test_stand_in_offers_only_cupy_api(cupy):
    """The stand-in's own functions, classes and methods exist in CuPy, and take no call
    that CuPy's would refuse (so that a test passing here cannot fail there for that)."""
    import sys
    import types
    import cupy_api
    checked = 0
    for where in cupy_api.NAMESPACES:
        module = sys.modules.get(where)
        if module is None:
            continue
        for name, value in vars(module).items():
            if name.startswith("_") or isinstance(value, types.ModuleType):
                continue
            assert cupy_api.has(where, name), f"{where}.{name} is not in CuPy"
            sig = cupy_api.signature_of(where, name)
            if isinstance(value, types.FunctionType) and sig is not None:
                _no_more_permissive(value.__wrapped__ if hasattr(value, "__wrapped__") else value,
                                    sig, f"{where}.{name}")
                checked += 1
    for fake_name, where in _CLASSES.items():
        cls = getattr(fake_cupy, fake_name)
        for name, value in vars(cls).items():
            if name.startswith("_") and name not in ("__enter__", "__exit__", "__getitem__",
                                                     "__setitem__", "__len__", "__iter__"):
                continue
            assert cupy_api.has(where, name), f"{where}.{name} is not in CuPy"
            sig = cupy_api.signature_of(where, name)
            if isinstance(value, types.FunctionType) and sig is not None and not name.startswith(
                    "__"):  # operators' parameter names are never given
                _no_more_permissive(value, sig, f"{where}.{name}")
                checked += 1
    for fake_name in ("Stream", "ExternalStream", "Event", "Device"):
        _no_more_permissive(getattr(fake_cupy, fake_name).__init__,
                            cupy_api.signature_of("cupy.cuda", fake_name),
                            f"cupy.cuda.{fake_name}")
        checked += 1
    assert checked > 20


def test_recorded_api_matches_installed_cupy():
    """Where the real CuPy is installed (a GPU machine), tests/cupy_api.json records it."""
    import os
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_api.py")
    probe = subprocess.run([sys.executable, "-c", "import cupy"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the real CuPy is not installed here")
    done = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_gpucorr_names_only_what_cupy_has():
    """Every ``cupy.X.Y`` / ``cupyx.X`` / ``xp.X`` that gpucorr's source names exists in CuPy
    (``xp`` is NumPy or CuPy): a static check of what the stand-in only sees when it runs."""
    import ast
    import glob
    import os
    import cupy_api
    data = cupy_api.load()

    def known(chain):
        if ".".join(chain) in data["namespaces"]:
            return True
        for i in range(len(chain) - 1, 0, -1):
            where = ".".join(chain[:i])
            if where in data["namespaces"]:
                if not cupy_api.has(where, chain[i]):
                    return False
                cls = f"{where}.{chain[i]}"
                return len(chain) == i + 1 or cls not in data["classes"] or cupy_api.has(
                    cls, chain[i + 1])
        return True

    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gpucorr")
    unknown, seen = [], 0
    for path in sorted(glob.glob(os.path.join(package, "**", "*.py"), recursive=True)):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            chain, n = [], node
            while isinstance(n, ast.Attribute):
                chain.append(n.attr)
                n = n.value
            if chain and isinstance(n, ast.Name) and n.id in ("cupy", "xp", "cupyx"):
                chain.append("cupyx" if n.id == "cupyx" else "cupy")
                chain.reverse()
                seen += 1
                if not known(chain):
                    unknown.append(f"{os.path.relpath(path, package)}:{node.lineno}: "
                                   f"{'.'.join(chain)}")
    assert seen > 50
    assert not unknown, "not in CuPy " + data["cupy_version"] + ":\n" + "\n".join(unknown)


def test_there_is_one_stand_in():
    """The kernel tests (tests/test_cuda_*.py) and ``pytest --fake-gpu`` use this stand-in;
    no other test module makes a ``cupy`` of its own (tests/cuda_emulator.py is the
    kernel emulator only, tests/fake_cupy_cuda.py this stand-in's ``cupy.cuda``)."""
    import glob
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    others = []
    for path in sorted(glob.glob(os.path.join(here, "*.py"))):
        if os.path.basename(path) in ("fake_cupy.py", "test_fake_cupy.py"):
            continue
        with open(path) as f:
            text = f.read()
        if 'sys.modules["cupy"] =' in text or "ModuleType(\"cupy\")" in text:
            others.append(os.path.basename(path))
    assert others == []
    import cuda_emulator
    assert not hasattr(cuda_emulator, "fake_cupy")
