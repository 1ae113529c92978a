"""Where :func:`gpucorr.refine` computes: device names, :func:`use_device`, foreign arrays.

A device is named ``"cpu"``, ``"cuda"`` (CuPy's current GPU), ``"cuda:N"``
or ``"auto"`` (a usable GPU, else the CPU). ``None`` means: the device set
by the innermost :func:`use_device` block, else wherever the frames are
(CuPy frames on their GPU, everything else on the CPU).

Results always come back in the array library of the frames: NumPy input run
on a GPU is copied there chunk by chunk and its results come back as NumPy.

Arrays of other libraries (PyTorch, JAX, ...) are taken zero-copy through
DLPack or ``__cuda_array_interface__`` (:func:`as_native`): on the CPU as a
NumPy view, on a GPU as a CuPy view.
"""
import contextlib
import contextvars
import dataclasses

import array_api_compat
import numpy as np

from gpucorr.backends import is_cupy

__all__ = ["use_device", "get_device", "Target", "resolve", "as_native", "Device", "devices",
           "cuda_available", "cuda_unusable_reason"]

_DEVICE = contextvars.ContextVar("gpucorr_device", default=None)

#: DLPack device types (``__dlpack_device__()[0]``) of memory CuPy can read
_DLPACK_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged
_DLPACK_CPU = (1, 3)    # kDLCPU, kDLCUDAHost (pinned host memory)


@dataclasses.dataclass(frozen=True)
class Target:
    """A resolved device: ``kind`` is ``"cpu"`` or ``"cuda"``; ``index`` the GPU number."""

    kind: str
    index: int = None

    def __str__(self):
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def _parse(device, what="device"):
    """``None``, ``"auto"`` or a :class:`Target` with an unchecked index."""
    if device is None or device == "auto":
        return device
    if isinstance(device, Target):
        return device
    if isinstance(device, str):
        if device == "cpu":
            return Target("cpu")
        if device == "cuda":
            return Target("cuda")
        if device.startswith("cuda:"):
            number = device[5:]
            if number.isdigit():
                return Target("cuda", int(number))
    raise ValueError(f"{what} must be 'cpu', 'cuda', 'cuda:N', 'auto' or None; got {device!r}")


def get_device():
    """The device set by the innermost :func:`use_device` block (``None`` outside any).

    >>> get_device() is None
    True
    """
    return _DEVICE.get()


@contextlib.contextmanager
def use_device(device):
    """Run :func:`gpucorr.refine` calls in this block on ``device`` unless they name one.

    Parameters
    ----------
    device : {"cpu", "cuda", "cuda:N", "auto"} or None
        As the ``device`` argument of :func:`gpucorr.refine`. The setting is
        per thread (and per asyncio task), and blocks nest.

    Examples
    --------
    >>> import numpy as np
    >>> import gpucorr
    >>> from gpucorr.patterns import Circular
    >>> frames, _, peaks = gpucorr.cbed_frame(radius=4)
    >>> with gpucorr.use_device("cpu"):
    ...     res = gpucorr.refine(frames, np.rint(peaks).astype(int), Circular(radius=4))
    >>> type(res.refineds).__module__
    'numpy'
    """
    _parse(device)
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def resolve(device, frames):
    """The :class:`Target` to compute on for ``device`` and ``frames`` (already native).

    Raises ``ValueError`` for a malformed name, a GPU that is not usable or
    does not exist, and CuPy frames on another GPU than the one asked for.
    """
    spec = _parse(device if device is not None else _DEVICE.get())
    on_gpu = is_cupy(frames)
    here = Target("cuda", int(frames.device.id)) if on_gpu else Target("cpu")
    if spec is None:
        return here
    if spec == "auto":
        if on_gpu or cuda_unusable_reason() is not None:
            return here
        import cupy
        return Target("cuda", cupy.cuda.Device().id)
    if spec.kind == "cpu":
        return spec
    reason = None if on_gpu else cuda_unusable_reason()
    if reason is not None:
        raise ValueError(f"device={str(spec)!r} asked for, but no GPU is usable: {reason}")
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    index = spec.index if spec.index is not None else (
        here.index if on_gpu else cupy.cuda.Device().id)
    if index >= count:
        raise ValueError(f"device={str(spec)!r}: there are {count} GPU(s), cuda:0 to "
                         f"cuda:{count - 1}")
    if on_gpu and index != here.index:
        raise ValueError(f"frames are on cuda:{here.index} but device={str(spec)!r}; move "
                         f"them first (under cupy.cuda.Device({index}): cupy.asarray(frames))")
    return Target("cuda", index)


def _foreign(arr):
    """True for arrays that are neither NumPy/CuPy nor a lazy host array we read by slicing."""
    if arr is None or array_api_compat.is_numpy_array(arr) or is_cupy(arr):
        return False
    return hasattr(arr, "__dlpack__") or hasattr(arr, "__cuda_array_interface__")


def as_native(arr, name="array"):
    """``arr`` as NumPy or CuPy, zero-copy, if it comes from another array library.

    GPU arrays (DLPack CUDA device, or ``__cuda_array_interface__``) become CuPy
    views, CPU arrays NumPy views; NumPy, CuPy, memmap, h5py, zarr and sparse
    arrays are returned unchanged. A PyTorch tensor that requires grad must be
    ``detach()``-ed first.

    >>> class Tensorish:  # any DLPack producer, e.g. a torch.Tensor on the CPU
    ...     def __init__(self, a): self.a = a
    ...     def __dlpack__(self, **kwargs): return self.a.__dlpack__(**kwargs)
    ...     def __dlpack_device__(self): return self.a.__dlpack_device__()
    >>> as_native(Tensorish(np.arange(3.)))
    array([0., 1., 2.])
    """
    if not _foreign(arr):
        return arr
    if hasattr(arr, "__dlpack_device__"):
        kind = int(arr.__dlpack_device__()[0])
    elif hasattr(arr, "__cuda_array_interface__"):
        kind = _DLPACK_CUDA[0]
    else:
        kind = None
    try:
        if kind in _DLPACK_CUDA:
            import cupy
            if hasattr(arr, "__dlpack__"):
                return cupy.from_dlpack(arr)
            return cupy.asarray(arr)
        if kind in _DLPACK_CPU:
            return np.from_dlpack(arr)
    except (ImportError, RuntimeError, BufferError, TypeError) as exc:
        raise TypeError(f"{name}: cannot take {type(arr).__module__}."
                        f"{type(arr).__qualname__} zero-copy ({type(exc).__name__}: {exc})"
                        ) from exc
    raise TypeError(f"{name}: {type(arr).__module__}.{type(arr).__qualname__} lives on DLPack "
                    f"device type {kind}; gpucorr reads CPU and CUDA memory only")


def cuda_unusable_reason():
    """None where the CUDA backend can run, else why not (no CuPy, no driver, no GPU).

    Probes by allocating, not by importing: CuPy imports fine without a driver.
    """
    try:
        import cupy
    except Exception as exc:
        return f"CuPy is not installed ({type(exc).__name__}); pip install gpucorr[cuda13]"
    try:
        cupy.zeros(1)
    except Exception as exc:
        return f"CuPy finds no usable GPU ({type(exc).__name__}: {exc})"
    return None


@dataclasses.dataclass(frozen=True)
class Device:
    """A place gpucorr can compute: the CPU or one GPU.

    Attributes
    ----------
    name : str
        ``"cpu"`` or ``"cuda:N"`` (``"cuda"`` for a GPU backend that cannot start).
    usable : bool
        Whether gpucorr can run there now.
    description : str
        The CPU model, or the GPU's name and memory; or why it is not usable.
    """

    name: str
    usable: bool
    description: str


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def devices():
    """The CPU and every GPU, with whether gpucorr can use each and why not.

    >>> devices()[0].name, devices()[0].usable
    ('cpu', True)
    """
    import os
    found = [Device("cpu", True, f"{_cpu_model()}, {os.cpu_count()} cores (numba kernels)")]
    reason = cuda_unusable_reason()
    if reason is not None:
        return found + [Device("cuda", False, reason)]
    import cupy
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(i)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        found.append(Device(f"cuda:{i}", True,
                            f"{name}, {props['totalGlobalMem'] / 2**30:.0f} GiB (CUDA kernels)"))
    return found


def cuda_available():
    """True where CuPy can allocate on a GPU, so CuPy input runs on the CUDA backend."""
    return cuda_unusable_reason() is None
