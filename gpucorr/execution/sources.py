"""Frame sources: what :func:`gpucorr.refine` reads frames from, and how.

:func:`as_source` turns the caller's ``frames`` (any leading scan axes) into
a :class:`Source`, a stack ``(N, H, W)`` that knows how to read frames
``start:stop``, either as a dense chunk the kernels can read
(:meth:`Source.chunk`) or straight into a given buffer, such as a pinned
staging buffer (:meth:`Source.read_into`):

- :class:`Source`: anything sliceable along its first axis (CuPy arrays, zarr
  arrays, scipy.sparse and pydata sparse stacks);
- :class:`ArraySource`: NumPy arrays and memmaps of any strides;
- :class:`HDF5Source`: h5py datasets, read with ``read_direct``;
- :class:`ScanSource`: scans ``(..., H, W)`` that are no view of a stack, read
  as runs along the last scan axis, never whole;
- :class:`HostCopy`: CuPy frames read to the host chunk by chunk, for
  ``device="cpu"``.
"""
import numpy as np
import sparseconverter

from gpucorr import _validate
from gpucorr.backends import array_namespace, is_cupy, is_sparse
from gpucorr.pipeline import native

__all__ = ["Source", "ArraySource", "HDF5Source", "ScanSource", "HostCopy", "as_source",
           "stack_list", "dense_chunk"]


def dense(chunk):
    """``chunk`` as a dense NumPy or CuPy array (sparse chunks are densified)."""
    if is_cupy(chunk):
        return chunk
    if is_sparse(chunk):
        chunk = sparseconverter.for_backend(chunk, sparseconverter.NUMPY)
    return np.asarray(chunk)


def kernel_dtype(chunk):
    """``chunk`` in a dtype the kernels read: native byte order, float16 as float32."""
    if native(chunk.dtype) == np.float16:
        return chunk.astype(np.float32)
    if not chunk.dtype.isnative:
        return chunk.astype(native(chunk.dtype))
    return chunk


def dense_chunk(frames, start, stop):
    """Frames ``start:stop`` of a sliceable stack as a dense array the kernels can read."""
    return kernel_dtype(dense(frames[start:stop]))


class Source:
    """A stack of frames ``(N, H, W)`` read by slices along its first axis."""

    def __init__(self, stack):
        self.stack = stack
        self.shape = (int(stack.shape[0]),) + tuple(int(n) for n in stack.shape[1:])
        self.dtype = stack.dtype

    def __len__(self):
        return self.shape[0]

    def read(self, start, stop):
        """Frames ``start:stop`` as the underlying library gives them."""
        return self.stack[start:stop]

    def chunk(self, start, stop):
        """Frames ``start:stop`` as a dense array the kernels can read (native byte order)."""
        return kernel_dtype(dense(self.read(start, stop)))

    def read_into(self, start, stop, out):
        """Frames ``start:stop`` into ``out[:stop - start]`` (a host buffer of the
        :meth:`chunk` dtype)."""
        np.copyto(out[:stop - start], np.asarray(self.chunk(start, stop)), casting="same_kind")


class ArraySource(Source):
    """NumPy frames (arrays, views, memmaps): copied into buffers with no temporary."""

    def read_into(self, start, stop, out):
        np.copyto(out[:stop - start], self.stack[start:stop], casting="same_kind")


def _is_hdf5(dataset):
    return type(dataset).__module__.startswith("h5py") and hasattr(dataset, "read_direct")


class HDF5Source(Source):
    """An h5py dataset: frames are read straight into C-contiguous buffers of the
    dataset's dtype (``read_direct``: no temporary, one copy less)."""

    def read_into(self, start, stop, out):
        if self.dtype != out.dtype or not out.flags.c_contiguous:
            return super().read_into(start, stop, out)
        self.stack.read_direct(out, np.s_[start:stop], np.s_[:stop - start])


class ScanSource(Source):
    """Frames ``(..., H, W)`` seen as a stack ``(N, H, W)``, read as runs of frames along
    the last scan axis from the underlying array (NumPy, memmap, h5py, zarr, pydata
    sparse, CuPy), so nothing is copied whole."""

    def __init__(self, arr):
        self.arr = arr
        self.lead = tuple(arr.shape[:-2])
        self.shape = (int(np.prod(self.lead)),) + tuple(arr.shape[-2:])
        self.dtype = arr.dtype

    def runs(self, start, stop):
        """``(i, selection)`` for frames ``start:stop``: ``arr[selection]`` holds the
        frames from ``i`` on, a run along the last scan axis."""
        i = start
        while i < stop:
            pos = np.unravel_index(i, self.lead)
            run = min(stop - i, self.lead[-1] - pos[-1])
            yield i, tuple(int(p) for p in pos[:-1]) + (slice(int(pos[-1]), int(pos[-1]) + run),)
            i += run

    def read(self, start, stop):
        parts = [dense(self.arr[selection]) for _, selection in self.runs(start, stop)]
        if not parts:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        if len(parts) == 1:
            return parts[0]
        return array_namespace(parts[0]).concatenate(parts)

    def read_into(self, start, stop, out):
        direct = (_is_hdf5(self.arr) and self.arr.dtype == out.dtype
                  and out.flags.c_contiguous)
        if not (direct or isinstance(self.arr, np.ndarray)):
            return super().read_into(start, stop, out)
        for i, selection in self.runs(start, stop):  # each run straight into ``out``
            a = i - start
            if direct:
                n = selection[-1].stop - selection[-1].start
                self.arr.read_direct(out, selection, np.s_[a:a + n])
            else:
                run = self.arr[selection]
                np.copyto(out[a:a + len(run)], run, casting="same_kind")


class HostCopy(Source):
    """A source of CuPy frames read to the host chunk by chunk, for ``device="cpu"``."""

    def __init__(self, source):
        self.source = source
        self.shape = source.shape
        self.dtype = source.dtype

    def read(self, start, stop):
        chunk = self.source.read(start, stop)
        return chunk.get() if is_cupy(chunk) else chunk


def stack_list(frames):
    """A list or tuple of equally shaped frames as one stack, in the frames' array library
    (CuPy frames stay on their GPU; mixing libraries is a TypeError; frames of different
    shapes a ValueError); anything else is returned as it is."""
    if not isinstance(frames, (list, tuple)):
        return frames
    shapes = []
    for i, frame in enumerate(frames):
        try:
            shapes.append(tuple(getattr(frame, "shape", None) or np.shape(frame)))
        except ValueError:  # NumPy: a ragged nested sequence
            raise ValueError(f"frames[{i}] must be a frame (H, W); got a ragged nested "
                             f"sequence") from None
        if shapes[i] != shapes[0]:
            raise ValueError(f"frames must be a list of equally shaped frames; got shape "
                             f"{shapes[0]} (frames[0]) and {shapes[i]} (frames[{i}])")
    if any(is_cupy(f) for f in frames):
        return array_namespace(*frames).stack(frames)
    return np.asarray(frames)


def _one_frame(frames):
    """A single frame (H, W) as a stack of one."""
    if is_sparse(frames):
        return frames.reshape((1,) + tuple(frames.shape))
    if isinstance(frames, np.ndarray) or is_cupy(frames):
        return frames[np.newaxis]
    # one frame of an h5py dataset, zarr array, ...: read it (they cannot take a new axis)
    return dense(frames[...])[np.newaxis]


def as_source(frames, to_host=False):
    """``frames`` (already native, see :func:`gpucorr.backends.devices.as_native`) as a
    :class:`Source`, and the leading shape to restore on the results.

    ``to_host``: CuPy frames are read to the host chunk by chunk (:class:`HostCopy`).
    """
    if is_sparse(frames) and len(frames.shape) == 2:
        # scipy.sparse matrices are 2-D only: one frame
        frames = sparseconverter.for_backend(frames, sparseconverter.NUMPY)
    shape = _validate.check_frame_stack(frames)
    lead = tuple(shape[:-2])
    if len(shape) == 2:
        frames = _one_frame(frames)
    elif len(shape) > 3 and isinstance(frames, np.ndarray) and frames.flags.c_contiguous:
        # a view (memmaps stay lazy): chunks are slices, read without joining runs
        frames = frames.reshape((-1,) + tuple(shape[-2:]))
    if len(frames.shape) > 3:
        source = ScanSource(frames)
    elif isinstance(frames, np.ndarray):
        source = ArraySource(frames)
    elif _is_hdf5(frames):
        source = HDF5Source(frames)
    else:
        source = Source(frames)
    if to_host and is_cupy(frames):
        source = HostCopy(source)
    return source, lead
