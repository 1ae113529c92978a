"""The ``cupy.cuda`` half of the CPU stand-in for CuPy (tests/fake_cupy.py): streams and
the work queued on them, events, the device, memory pools, pinned host memory and
``cupy.cuda.runtime``.

Not a stand-in of its own: :mod:`fake_cupy` (the one stand-in for ``cupy``) builds its
``cupy.cuda`` namespace from these and queues its copies and kernel launches on these
streams. Its docstring says what is emulated (when queued work runs, when a download
reaches host memory, what synchronises) and what cannot be.
"""
import collections
import ctypes
import threading
import time
import types
import weakref

FAKE_DEVICE_NAME = "CPU-emulated GPU (tests/fake_cupy.py)"
MEMORY = {"free": 8 * 2**30, "total": 16 * 2**30}

_state = threading.local()
_sync_allowed = [True]


class DeviceSynchronized(RuntimeError):
    """Raised by a synchronising call inside ``cupyx.allow_synchronize(False)``."""


def _sync_point(what):
    if not _sync_allowed[0]:
        raise DeviceSynchronized(f"synchronising call inside allow_synchronize(False): {what}")


def _download(src, dst, size):
    """A queued device-to-host copy: reads the device when the stream runs it; its bytes
    reach ``dst`` at the first host synchronisation that covers it."""
    def op(stream, index):
        data = ctypes.string_at(src, size)
        stream._host.append((index, lambda: ctypes.memmove(dst, data, size)))
    return op


def _address(mem):
    """A host address given as CuPy takes it: ``ctypes.c_void_p`` or int."""
    return mem.value if isinstance(mem, ctypes.c_void_p) else int(mem)


# ------------------------------------------------------------------ streams and events

#: one lock for running queued work: a kernel or copy runs once, whichever thread runs it
_run_lock = threading.RLock()
#: every stream made (weakly), for device-wide synchronisation
_streams = weakref.WeakSet()


class Stream:
    """A CUDA stream: its kernels and copies wait in a queue until something orders them
    (see tests/fake_cupy.py's docstring); the current stream's as well as any other's."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self._queue = collections.deque()  # pending work: callables op(stream, index)
        self._enqueued = 0    # work ever queued (the index of the next)
        self._done = 0        # work ever run
        # what run work still owes the host until a host synchronisation covers it:
        # (index, write) for a download's bytes, (index, (stream, position)) for a wait
        self._host = []
        self.ptr = 0 if null else id(self)
        _streams.add(self)

    def _push(self, op):
        with _run_lock:
            self._queue.append(op)
            self._enqueued += 1

    def _run_until(self, position):
        """Run the queued work before ``position`` (work queued earlier runs first)."""
        with _run_lock:
            while self._done < position:
                op = self._queue.popleft()
                index = self._done
                self._done += 1
                op(self, index)

    def _deliver(self, position):
        """A host synchronisation covering this stream's work before ``position`` (run
        already): the downloads among it reach host memory, and so, through the waits
        among it, does what the streams it waited for had done by then."""
        with _run_lock:
            owed, self._host = self._host, []
            for index, what in owed:
                if index >= position:
                    self._host.append((index, what))
                elif callable(what):
                    what()
                else:
                    stream, until = what
                    stream._deliver(until)

    def _host_sync(self, position=None):
        position = self._enqueued if position is None else position
        self._run_until(position)
        self._deliver(position)

    def synchronize(self):
        _sync_point("Stream.synchronize")
        self._host_sync()

    def wait_event(self, event):
        """Work queued here after this runs after the event's stream reached the event."""
        source, until = event.stream, event.position
        if source is None:  # never recorded: nothing to wait for (as in CUDA)
            return

        def wait(stream, index):
            source._run_until(until)
            stream._host.append((index, (source, until)))
        self._push(wait)

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def use(self):
        _stack().append(self)
        return self

    def __enter__(self):
        _stack().append(self)
        return self

    def __exit__(self, *exc):
        _stack().pop()


class ExternalStream(Stream):
    def __init__(self, ptr, device_id=-1):
        super().__init__()
        self.ptr = ptr


def _stack():
    if not hasattr(_state, "streams"):
        _state.streams = [Stream.null]
    return _state.streams


def get_current_stream(device_id=-1):
    return _stack()[-1]


def _enqueue(stream, op):
    (stream or get_current_stream())._push(op)


def _flush():
    """Before an operation on device arrays: the current stream's queued work runs first
    (the GPU would run the operation after it). Not a host synchronisation: downloads
    stay invisible to the host."""
    stream = get_current_stream()
    if stream._done < stream._enqueued:
        stream._run_until(stream._enqueued)


def _sync_current(what, stream=None):
    """What synchronises the (current) stream on a GPU, e.g. a copy to the host."""
    _sync_point(what)
    (stream or get_current_stream())._host_sync()


def _synchronize_device():
    with _run_lock:
        streams = list(_streams)
        for stream in streams:
            stream._run_until(stream._enqueued)
        for stream in streams:
            stream._deliver(stream._enqueued)


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.stream = None
        self.position = 0
        self.time = None
        self._record = None

    def record(self, stream=None):
        """Queued on ``stream``: the event's time is taken when the stream runs it."""
        stream = stream or get_current_stream()
        token = self._record = object()
        self.time = None

        def mark(s, index):
            if self._record is token:
                self.time = time.perf_counter()
        stream._push(mark)
        self.stream, self.position = stream, stream._enqueued

    def synchronize(self):
        _sync_point("Event.synchronize")
        if self.stream is not None:
            self.stream._host_sync(self.position)


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two events that have run (CPU time of the emulation, not a
    GPU timing)."""
    if start_event.time is None or end_event.time is None:
        raise CUDARuntimeError("cudaErrorNotReady: device not ready (fake_cupy: an event "
                               "has not run yet; synchronize on it first)")
    return (end_event.time - start_event.time) * 1e3


# ------------------------------------------------------------------ devices and memory

class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: fake_cupy has one device, not {self.id}")
        self.attributes = {"MaxSharedMemoryPerBlock": 48 * 1024}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def use(self):
        pass

    def synchronize(self):
        _sync_point("Device.synchronize")
        _synchronize_device()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class OutOfMemoryError(MemoryError):
    def __init__(self, size=0, total=0, limit=0):
        super().__init__(f"Out of memory allocating {size:,} bytes (fake_cupy)")


class _MemoryPool:
    def free_all_blocks(self, stream=None):
        pass

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0


_POOL = _MemoryPool()
_PINNED_POOL = _MemoryPool()


def set_allocator(allocator=None):
    """The stand-in has no memory pool to switch off: every array is its own allocation."""


def set_pinned_memory_allocator(allocator=None):
    """As :func:`set_allocator`, for pinned host memory."""


def _runtime():
    runtime = types.ModuleType("cupy.cuda.runtime")
    runtime.memGetInfo = lambda: (MEMORY["free"], MEMORY["total"])
    runtime.getDeviceCount = lambda: 1
    runtime.getDeviceProperties = lambda device: {"name": FAKE_DEVICE_NAME.encode(),
                                             "totalGlobalMem": MEMORY["total"]}
    runtime.runtimeGetVersion = lambda: 0
    runtime.driverGetVersion = lambda: 0

    def device_synchronize():
        _sync_point("runtime.deviceSynchronize")
        _synchronize_device()
    runtime.deviceSynchronize = device_synchronize
    runtime.CUDARuntimeError = CUDARuntimeError
    (runtime.memoryTypeUnregistered, runtime.memoryTypeHost, runtime.memoryTypeDevice,
     runtime.memoryTypeManaged) = range(4)

    def pointer_get_memory_type(ptr):
        """Host (pinned) inside the stand-in's pinned arrays, unregistered elsewhere."""
        if any(a <= ptr < b for a, b in _PINNED.values()):
            return runtime.memoryTypeHost
        return runtime.memoryTypeUnregistered
    runtime.pointerGetMemoryType = pointer_get_memory_type

    def host_register(ptr, size, flags):
        """Page-lock host memory (cudaHostRegister): it counts as pinned until unregistered."""
        if any(a == ptr for a, _ in _PINNED.values()):
            raise CUDARuntimeError("cudaErrorHostMemoryAlreadyRegistered (fake_cupy)")
        _PINNED[("registered", ptr)] = (ptr, ptr + max(int(size), 1))

    def host_unregister(ptr):
        if _PINNED.pop(("registered", ptr), None) is None:
            raise CUDARuntimeError("cudaErrorHostMemoryNotRegistered (fake_cupy)")
    runtime.hostRegister, runtime.hostUnregister = host_register, host_unregister
    return runtime


class CUDARuntimeError(RuntimeError):
    pass


#: the address ranges of the stand-in's pinned host arrays (cupyx.empty_pinned) alive now
_PINNED = {}


def _pinned(make):
    """``cupyx.empty_pinned`` / ``zeros_pinned``: NumPy arrays whose memory counts as pinned
    (``runtime.pointerGetMemoryType``) while they are alive."""
    def alloc(shape, dtype=float, order="C"):
        a = make(shape, dtype, order)
        key = object()
        _PINNED[key] = (a.ctypes.data, a.ctypes.data + max(a.nbytes, 1))
        weakref.finalize(a, _PINNED.pop, key, None)
        return a
    return alloc


Stream.null = Stream(null=True)
