"""A stand-in for CuPy on the CPU, to run gpucorr's GPU code paths where there is no GPU.

This is emulation, not GPU verification: it checks gpucorr's own GPU-side
Python (dispatch, launch arguments, shapes, chunking, the staging pipeline)
and, through ``tests/cuda_emulator.py``, the real kernel sources compiled as
host C++. What only a GPU shows (NVRTC, timing, real concurrency) it cannot.

What it mimics, to catch the mistakes that matter on a real GPU:

- ``cupy.ndarray`` wraps a NumPy array but is *not* one: gpucorr's
  dispatch sees a CuPy array; ``numpy.asarray(x)`` raises ``TypeError`` like
  CuPy's (no silent device-to-host copies), and CuPy functions, ufuncs and
  kernels given a NumPy array raise ``TypeError`` (no silent host-to-device
  copies, no kernel reading host memory).
- ``RawModule`` kernels run in the CPU emulator of the real ``kernels/*.cu``
  (``tests/cuda_emulator.py``; this module is the one CuPy stand-in, for the
  kernel tests as for ``pytest --fake-gpu``).
- Streams (``cupy.cuda``, in ``tests/fake_cupy_cuda.py``, which is part of this
  stand-in, not another): kernel launches and asynchronous copies are *queued*
  on their stream, the current one included, and run only when something
  orders them:

  * an operation on device arrays (a ufunc, a CuPy function, indexing, a
    copy to the device) runs the current stream's queue first, as the GPU
    would run it after the work queued before it;
  * ``Stream.wait_event`` queues a wait: when the waiting stream runs it,
    the event's stream runs up to the event;
  * a host synchronisation runs a stream up to a point: ``Stream.synchronize``,
    ``Event.synchronize``, ``Device.synchronize``, ``runtime.deviceSynchronize``
    and what synchronises on a GPU (``ndarray.get``, ``asnumpy``, ``item``,
    ``bool``, ``int``, ``float``, ``tolist``, the blocking ``copy_to_host``).

  A copy *to the host* reads the device when it runs, but its bytes reach host
  memory only at a host synchronisation that covers it (of its stream, or of
  a stream that waited for it): host code that reads a pinned buffer without
  waiting for the download reads what was there before. A copy *from the
  host* reads host memory only when it runs: a buffer overwritten before
  then sends the new data. A missing wait or synchronisation thus shows up
  as wrong results, on the current stream as on any other.
- Event times are taken when the stream runs the event, so
  ``get_elapsed_time`` spans the emulated work between two events (an event
  that has not run yet raises, as CUDA's ``cudaErrorNotReady``); they are CPU
  times of the emulation, never GPU timings.
- ``cupyx.allow_synchronize(False)`` makes every synchronising call raise
  (``get``, ``item``, ``bool``, stream and event synchronisation, ...).
- Only what the real CuPy has: every function, ufunc and ``ndarray`` method
  it serves (NumPy's underneath) must exist in CuPy under that name, and every
  call must bind to CuPy's signature (``tests/cupy_api.py``, recorded from
  CuPy 14.2); NumPy-only names and keywords raise as they would on a GPU.

The order is deterministic: queued work runs as late as the program lets it,
which shows a missing wait or synchronisation, not every race a GPU could have
(compute-sanitizer on a GPU looks for those).

Install with :func:`install` (returns the module); :func:`uninstall` restores
``sys.modules``; :func:`installed` is both as a context manager, and
:func:`run_on_device` calls a launcher with host arrays moved to the device
and back (the kernel tests). ``python tests/fake_cupy.py SCRIPT [ARGS]`` runs a
script on it.
"""
import contextlib
import ctypes
import functools
import os
import runpy
import sys
import types

import numpy as np

import cupy_api
# the stand-in's cupy.cuda: streams and their queued work, events, the device, memory
from fake_cupy_cuda import (  # noqa: F401  (names the tests use as fake_cupy.X)
    FAKE_DEVICE_NAME, MEMORY, CUDARuntimeError, Device, DeviceSynchronized, Event,
    ExternalStream, OutOfMemoryError, Stream, _MemoryPool, _PINNED_POOL, _POOL, _address,
    _download, _enqueue, _flush, _pinned, _runtime, _sync_allowed, _sync_current,
    get_current_stream, get_elapsed_time, set_allocator, set_pinned_memory_allocator,
)


def _is_host_array(a):
    return isinstance(a, np.ndarray) and a.ndim > 0


def _unwrap(obj, allow_host=False, what="argument"):
    """Fake arrays -> their NumPy storage, recursively through tuples, lists and dicts."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, (tuple, list)):
        return type(obj)(_unwrap(o, allow_host, what) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, allow_host, what) for k, v in obj.items()}
    if not allow_host and _is_host_array(obj):
        raise TypeError(f"Unsupported type {type(obj)} for a CuPy {what} (a host NumPy array; "
                        "move it with cupy.asarray first)")
    return obj


def _wrap(obj):
    if isinstance(obj, np.ndarray):
        return ndarray(obj)
    if isinstance(obj, np.generic):
        # CuPy gives 0-d device arrays where NumPy gives scalars
        return ndarray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class _Pointer:
    """``ndarray.data``: a device pointer with CuPy's async copy methods."""

    def __init__(self, arr):
        self._arr = arr
        self.ptr = arr._a.ctypes.data

    def copy_from_host_async(self, mem, size, stream=None):
        dst, src = self.ptr, _address(mem)
        # host memory is read when the stream runs the copy, not now
        _enqueue(stream, lambda s, i: ctypes.memmove(dst, src, size))

    def copy_to_host_async(self, mem, size, stream=None):
        _enqueue(stream, _download(self.ptr, _address(mem), size))

    def copy_from_host(self, mem, size):
        _sync_current("copy_from_host")
        ctypes.memmove(self.ptr, _address(mem), size)

    def copy_to_host(self, mem, size):
        _sync_current("copy_to_host")
        ctypes.memmove(_address(mem), self.ptr, size)


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    """A device array: NumPy storage that gpucorr must treat as CuPy's."""

    __array_priority__ = 100

    def __init__(self, a):
        assert isinstance(a, np.ndarray), type(a)
        self._a = a

    # --- what CuPy forbids: implicit host conversion
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        cupy_api.check_ufunc(ufunc.__name__, method, inputs, kwargs)
        _flush()
        inputs = _unwrap(inputs, what=f"ufunc {ufunc.__name__} input")
        outs = kwargs.get("out")
        if outs is not None:
            kwargs["out"] = _unwrap(outs, what="ufunc out")
        result = getattr(ufunc, method)(*inputs, **kwargs)
        if outs is not None:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        # CuPy runs its namesake of a NumPy function, and has none for some
        where = "cupy" + (func.__module__ or "numpy").removeprefix("numpy")
        if not cupy_api.has(where, func.__name__):
            raise TypeError(f"no implementation found for '{func.__module__}.{func.__name__}' "
                            f"on types that implement __array_function__: {where} has no "
                            f"{func.__name__} in CuPy {cupy_api.load()['cupy_version']}")
        cupy_api.check_call(where, func.__name__, args, kwargs)
        _flush()
        return _wrap(func(*_unwrap(args, what=func.__name__), **_unwrap(kwargs, what=func.__name__)))

    # --- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))
    imag = property(lambda self: ndarray(self._a.imag))
    data = property(lambda self: _Pointer(self))

    @property
    def device(self):
        return Device(0)

    # --- interop: reported as CUDA memory (DLPack device type 2)
    def __dlpack__(self, stream=None, **kwargs):
        _flush()
        return self._a.__dlpack__()

    def __dlpack_device__(self):
        return (2, 0)

    @property
    def __cuda_array_interface__(self):
        _flush()
        interface = dict(self._a.__array_interface__)
        interface["version"] = 3
        interface["stream"] = None
        return interface

    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__, __array_struct__, ...
            raise AttributeError(name)
        cupy_api.check_name("cupy.ndarray", name)
        attr = getattr(self._a, name)
        if callable(attr):
            def method(*args, **kwargs):
                cupy_api.check_call("cupy.ndarray", name, args, kwargs)
                _flush()
                return _wrap(attr(*_unwrap(args, allow_host=True), **_unwrap(kwargs, True)))
            return method
        return _wrap(attr)

    def __getitem__(self, index):
        _flush()
        return _wrap(self._a[_unwrap(index, allow_host=True)])

    def __setitem__(self, index, value):
        _flush()
        self._a[_unwrap(index, allow_host=True)] = _unwrap(value, what="__setitem__ value")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        _flush()
        return (ndarray(row) if isinstance(row, np.ndarray) else row for row in self._a)

    # --- synchronising conversions
    def get(self, stream=None, order="C", out=None, blocking=True):
        if not blocking:
            # queued on the stream like copy_to_host_async: ``out`` is written at a later
            # synchronisation (CuPy requires it to be pinned then)
            if out is None or not self.flags.c_contiguous or not out.flags.c_contiguous:
                raise ValueError("fake_cupy: get(blocking=False) needs C-contiguous self "
                                 "and out")
            _enqueue(stream, _download(self._a.ctypes.data, out.ctypes.data, self.nbytes))
            return out
        _sync_current("ndarray.get", stream)
        if out is not None:
            out[...] = self._a
            return out
        return self._a.copy()

    def item(self):
        _sync_current("ndarray.item")
        return self._a.item()

    def tolist(self):
        _sync_current("ndarray.tolist")
        return self._a.tolist()

    def __bool__(self):
        _sync_current("ndarray.__bool__")
        return bool(self._a)

    def __int__(self):
        _sync_current("ndarray.__int__")
        return int(self._a)

    def __float__(self):
        _sync_current("ndarray.__float__")
        return float(self._a)

    def __index__(self):
        _sync_current("ndarray.__index__")
        return self._a.__index__()

    def __repr__(self):
        _flush()
        return "fake_cupy." + repr(self._a)


# ------------------------------------------------------------------ creation functions

def asarray(a, dtype=None, order=None):
    _flush()
    if isinstance(a, ndarray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        return ndarray(a._a.astype(dtype))
    if hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray):
        # zero-copy view of "device" memory, as CuPy does
        # the view keeps the owner alive, as CuPy's UnownedMemory does
        view = np.asarray(_Interface(dict(a.__cuda_array_interface__), owner=a))
        return ndarray(view) if dtype is None else ndarray(view.astype(dtype))
    return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))


class _Interface:
    def __init__(self, interface, owner):
        self.__array_interface__ = interface
        self.owner = owner


class _Capsule:
    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)


def array(obj, dtype=None, copy=True, order="K"):
    _flush()
    if not copy:
        return asarray(obj, dtype=dtype)
    if isinstance(obj, ndarray):
        return ndarray(np.array(obj._a, dtype=dtype, order=order, copy=True))
    return asarray(np.array(obj, dtype=dtype, order=order, copy=True))


def ascontiguousarray(a, dtype=None):
    _flush()
    if isinstance(a, ndarray):
        if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        return ndarray(np.ascontiguousarray(a._a, dtype=dtype))
    return ndarray(np.ascontiguousarray(np.array(a, copy=True), dtype=dtype))


def asnumpy(a, stream=None):
    if isinstance(a, ndarray):
        return a.get(stream=stream)
    return np.asarray(a)


def from_dlpack(array):
    if int(array.__dlpack_device__()[0]) != 2:
        raise RuntimeError("fake_cupy.from_dlpack: not CUDA memory")
    return ndarray(np.from_dlpack(_Capsule(array.__dlpack__())))


def _function(where, name, func):
    """NumPy's ``func`` served as CuPy's ``where.name``, which must exist and take the call."""
    cupy_api.check_name(where, name)

    def call(*args, **kwargs):
        cupy_api.check_call(where, name, args, kwargs)
        _flush()
        return _wrap(func(*_unwrap(args, what=name), **_unwrap(kwargs, what=name)))
    call.__name__ = name
    return call


# ------------------------------------------------------------------ kernels

class _RawModule:
    """``cupy.RawModule``: its kernels run in the CPU emulator of tests/cuda_emulator.py."""

    def __init__(self, code, options=(), name_expressions=None, **kwargs):
        self.code = code
        self.options = tuple(options)
        self.name_expressions = list(name_expressions or [])
        from gpucorr.backends import _cuda
        self.label = next((n for n in _cuda.kernel_expressions()
                           if _cuda.kernel_source(n) == code), "kernel.cu")

    def get_function(self, expression):
        if expression not in self.name_expressions:
            raise KeyError(f"{expression!r} is not among the module's name_expressions "
                           f"{self.name_expressions} (NVRTC would not have instantiated it)")
        return _DeviceKernel(self, expression)


class _DeviceKernel:
    """A kernel of the CPU emulator that takes device (fake) arrays only.

    A launch is checked at once (arguments against the kernel's parameters, launch
    configuration) and queued on its stream; the kernel runs when the stream does.
    """

    def __init__(self, module, expression):
        self.module = module
        self.expression = expression

    def __call__(self, grid, block, args, **kwargs):
        import cuda_emulator
        cupy_api.check_call("cupy.RawKernel", "__call__", (grid, block, args), kwargs)
        shared_mem, stream = kwargs.get("shared_mem", 0), kwargs.get("stream")
        host = []
        for i, a in enumerate(args):
            if isinstance(a, ndarray):
                host.append(a._a)
            elif _is_host_array(a):
                raise TypeError(f"kernel {self.expression} argument {i} is a host NumPy array: a "
                                "GPU kernel cannot read host memory")
            else:
                host.append(a)
        host = tuple(host)
        module = self.module
        cuda_emulator.check_launch(module.code, self.expression, grid, block, host, shared_mem,
                                   module.label)

        def run(s, index):
            cuda_emulator.launch_source(module.code, self.expression, grid, block, host,
                                        shared_mem, expressions=module.name_expressions,
                                        label=module.label)
        _enqueue(stream, run)


def _raw_module(code=None, *, options=(), name_expressions=None, **kwargs):
    return _RawModule(code, options, name_expressions, **kwargs)


# ------------------------------------------------------------------ the modules

_EXPLICIT = {"ndarray", "asarray", "array", "ascontiguousarray", "asnumpy", "from_dlpack"}


def _make_modules():
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "0.0-fake"
    cupy.__file__ = __file__
    g = globals()
    for name in _EXPLICIT:
        setattr(cupy, name, g[name])
    cupy.RawModule = _raw_module
    for name in ("float16", "float32", "float64", "complex64", "complex128", "int8", "int16",
                 "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool_", "newaxis",
                 "pi", "inf", "nan", "dtype", "result_type", "finfo", "iinfo", "issubdtype",
                 "floating", "integer", "complexfloating"):
        setattr(cupy, name, getattr(np, name))

    def module_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        func = getattr(np, name)
        if callable(func):
            return _function("cupy", name, func)
        raise AttributeError(name)
    cupy.__getattr__ = module_getattr
    cupy.get_default_memory_pool = lambda: _POOL
    cupy.get_default_pinned_memory_pool = lambda: _PINNED_POOL

    testing = types.ModuleType("cupy.testing")

    def _host(a):
        if isinstance(a, ndarray):
            _sync_current("cupy.testing")
            return a._a
        return np.asarray(a)
    testing.assert_array_equal = lambda actual, desired, **kw: np.testing.assert_array_equal(
        _host(actual), _host(desired), **kw)
    testing.assert_allclose = lambda actual, desired, **kw: np.testing.assert_allclose(
        _host(actual), _host(desired), **kw)
    cupy.testing = testing

    fft = types.ModuleType("cupy.fft")
    def fft_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _function("cupy.fft", name, getattr(np.fft, name))
    fft.__getattr__ = fft_getattr
    cupy.fft = fft

    cuda = types.ModuleType("cupy.cuda")
    for name, value in (("Device", Device), ("Stream", Stream), ("ExternalStream", ExternalStream),
                        ("Event", Event), ("get_current_stream", get_current_stream),
                        ("get_elapsed_time", get_elapsed_time), ("set_allocator", set_allocator),
                        ("set_pinned_memory_allocator", set_pinned_memory_allocator)):
        setattr(cuda, name, value)
    cuda.runtime = _runtime()
    memory = types.ModuleType("cupy.cuda.memory")
    memory.OutOfMemoryError = OutOfMemoryError
    cuda.memory = memory
    nvtx = types.ModuleType("cupy.cuda.nvtx")
    nvtx.RangePush = nvtx.RangePop = nvtx.Mark = lambda *args, **kwargs: None
    cuda.nvtx = nvtx
    cupy.cuda = cuda

    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = _pinned(np.empty)
    cupyx.zeros_pinned = _pinned(np.zeros)

    @contextlib.contextmanager
    def allow_synchronize(allow):
        old = _sync_allowed[0]
        _sync_allowed[0] = bool(allow)
        try:
            yield
        finally:
            _sync_allowed[0] = old
    cupyx.allow_synchronize = allow_synchronize
    cupyx.DeviceSynchronized = DeviceSynchronized
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    cupyx_fft = types.ModuleType("cupyx.scipy.fft")

    def rfft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, plan=None):
        _flush()
        return ndarray(np.fft.rfft2(_unwrap(x, what="rfft2"), s=s, axes=axes, norm=norm))

    def irfft2(x, s=None, axes=(-2, -1), norm=None, overwrite_x=False, plan=None):
        _flush()
        result = ndarray(np.fft.irfft2(_unwrap(x, what="irfft2"), s=s, axes=axes, norm=norm))
        if overwrite_x:
            x._a[...] = np.nan  # cuFFT's complex-to-real transform destroys its input
        return result
    cupyx_fft.rfft2, cupyx_fft.irfft2 = rfft2, irfft2
    cupyx_scipy.fft = cupyx_fft
    # sparse matrix types, for type checks (sparseconverter); gpucorr makes none
    cupyx_sparse = types.ModuleType("cupyx.scipy.sparse")
    for name in ("coo_matrix", "csr_matrix", "csc_matrix", "spmatrix"):
        setattr(cupyx_sparse, name, type(name, (), {}))
    cupyx_scipy.sparse = cupyx_sparse
    cupyx.scipy = cupyx_scipy
    for module in (fft, testing, cuda, cuda.runtime, memory, nvtx, cupyx, cupyx_scipy,
                   cupyx_fft, cupyx_sparse):
        module.__file__ = __file__
    modules = {"cupy": cupy, "cupy.fft": fft, "cupy.testing": testing, "cupy.cuda": cuda,
               "cupy.cuda.runtime": cuda.runtime, "cupy.cuda.memory": memory,
               "cupy.cuda.nvtx": nvtx, "cupyx": cupyx, "cupyx.scipy": cupyx_scipy,
               "cupyx.scipy.fft": cupyx_fft, "cupyx.scipy.sparse": cupyx_sparse}
    for where, module in modules.items():
        for name, value in list(vars(module).items()):
            if isinstance(value, types.FunctionType) and not name.startswith("_"):
                setattr(module, name, _checked(where, name, value))
    return modules


def _checked(where, name, func):
    """The stand-in's own ``func`` for CuPy's ``where.name``: the call must suit CuPy too."""
    @functools.wraps(func)
    def call(*args, **kwargs):
        cupy_api.check_call(where, name, args, kwargs)
        return func(*args, **kwargs)
    return call


_saved = {}
#: gpucorr.backends.host's cached device constants from before install() (real CuPy arrays,
#: say): kept apart from the stand-in's, which have the same device id 0
_saved_constants = {}


def install():
    """Put the fake modules into ``sys.modules``; returns the fake ``cupy``."""
    from gpucorr import backends as _backend
    from gpucorr.backends import _cuda, host
    if not _saved:
        _saved_constants.clear()
        _saved_constants.update(host._device_arrays)
        host._device_arrays.clear()
    modules = _make_modules()
    for name, module in modules.items():
        _saved.setdefault(name, sys.modules.get(name))
        sys.modules[name] = module
    _backend._CUDA = None
    _cuda._module.cache_clear()
    return modules["cupy"]


def uninstall():
    from gpucorr import backends as _backend
    from gpucorr.backends import _cuda, host
    for name, module in _saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    _saved.clear()
    host._device_arrays.clear()
    host._device_arrays.update(_saved_constants)
    _saved_constants.clear()
    _backend._CUDA = None
    _cuda._module.cache_clear()


def is_installed():
    """Whether ``import cupy`` gives this stand-in now."""
    return getattr(sys.modules.get("cupy"), "__file__", None) == __file__


@contextlib.contextmanager
def installed():
    """The stand-in as ``cupy`` within the block; one installed already (``pytest
    --fake-gpu``) stays installed after it."""
    if is_installed():
        yield sys.modules["cupy"]
        return
    cupy = install()
    try:
        yield cupy
    finally:
        uninstall()


def run_on_device(func, *args, **kwargs):
    """``func(*args, **kwargs)`` on the stand-in with NumPy array arguments on its device.

    For the kernel tests, which give the launchers of :mod:`gpucorr.backends._cuda` host arrays in
    and out: each NumPy array argument (ndim >= 1) is copied to the device, ``func`` runs,
    the current stream is synchronised, and each writeable array argument receives its
    device copy's values (the kernels' outputs). Returns what ``func`` returned.
    """
    with installed() as cupy:
        moved = [cupy.asarray(a) if _is_host_array(a) else a for a in args]
        result = func(*moved, **kwargs)
        cupy.cuda.get_current_stream().synchronize()
        for a, d in zip(args, moved):
            if d is not a and a.flags.writeable:
                a[...] = d.get()
    return result


if __name__ == "__main__":
    # python tests/fake_cupy.py SCRIPT [ARGS]: run a script (e.g. bench/gpu_smoke.py) on the
    # stand-in, to check its code paths without a GPU; its timings mean nothing
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fake_cupy  # the stand-in is that module, not this __main__ copy of it
    fake_cupy.install()
    from gpucorr.backends import _cuda
    _cuda.BLOCK = 32
    _cuda.FAST_THREADS = 32
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    print(f"[fake_cupy] {script} runs on the CPU stand-in for CuPy (BLOCK = FAST_THREADS = 32):"
          " emulated, not a GPU run; its timings mean nothing", file=sys.stderr, flush=True)
    runpy.run_path(script, run_name="__main__")
