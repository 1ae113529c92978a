"""Host memory copies for the GPU staging buffers, with non-temporal stores.

Streaming host frames to a GPU (:meth:`gpucorr.api._Job.stream`) first copies
them into pinned staging buffers, and on the machines measured that copy, not
the bus, limits streaming (``docs/benchmarks.md``). NumPy's copy is glibc's
``memcpy``, which below a large threshold (240 MiB on the CPU VM) writes
through the cache: each destination line is read from memory first (a
read-for-ownership), so a copy moves three bytes of memory traffic per byte
and keeps the cache full of data that only the copy engine will read.

:func:`copy_into` writes the destination with non-temporal (streaming) stores
instead, 32 bytes at a time, from a numba function: no read-for-ownership,
two bytes of traffic per byte, and the staging buffer leaves the cache alone.
An ``sfence`` at the end makes the stores visible before the caller hands the
buffer to the copy engine. The stores are x86-64 instructions (``vmovntdq``
under AVX, ``movntdq`` otherwise); elsewhere, and for copies that are not a
plain byte copy (a dtype conversion, a byte swap, strided memory) or are
small, or that overlap, :func:`copy_into` is :func:`numpy.copyto`.
"""
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["copy_into", "streaming_supported"]

#: bytes per non-temporal store (the destination is aligned to it)
_LINE = 32
#: copies smaller than this go through :func:`numpy.copyto`
STREAMING_MIN_BYTES = 1 << 20
#: whether :func:`copy_into` may use non-temporal stores (benchmarks compare both)
USE_STREAMING_STORES = True


def streaming_supported():
    """Whether this machine's copies can use non-temporal stores (x86-64, numba's JIT on:
    ``NUMBA_DISABLE_JIT`` leaves the stores' intrinsic uncompiled)."""
    return platform.machine().lower() in ("x86_64", "amd64") and not numba.config.DISABLE_JIT


@intrinsic
def _store_line(typingctx, dst, src, i):
    """``dst[i:i + 32] = src[i:i + 32]`` (uint8 arrays) as one non-temporal store.

    ``dst[i]`` must be 32-byte aligned; only :func:`_stream_copy` calls it. Typing
    refuses anything but contiguous 1-D uint8 arrays (``i`` counts bytes).
    """
    for a in (dst, src):
        if not (isinstance(a, types.Array) and a.dtype == types.uint8 and a.ndim == 1
                and a.layout == "C"):
            raise TypingError(f"_store_line takes contiguous 1-D uint8 arrays; got {a}")

    def codegen(context, builder, signature, args):
        dst_ary = context.make_array(signature.args[0])(context, builder, args[0])
        src_ary = context.make_array(signature.args[1])(context, builder, args[1])
        line = ir.VectorType(ir.IntType(8), _LINE).as_pointer()
        value = builder.load(builder.bitcast(builder.gep(src_ary.data, [args[2]]), line),
                             align=1)
        store = builder.store(value, builder.bitcast(builder.gep(dst_ary.data, [args[2]]), line),
                              align=_LINE)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(dst, src, i), codegen


@intrinsic
def _sfence(typingctx):
    """x86's ``sfence``: earlier non-temporal stores are visible to everyone after it.

    (LLVM's ``fence seq_cst`` may become a locked instruction, which does not
    order non-temporal stores.)
    """
    def codegen(context, builder, signature, args):
        fence = builder.module.declare_intrinsic("llvm.x86.sse.sfence",
                                                 fnty=ir.FunctionType(ir.VoidType(), []))
        builder.call(fence, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def _stream_copy(dst, src):
    """``dst[:] = src`` for 1-D uint8 arrays of one size, ``dst`` by non-temporal stores."""
    n = dst.size
    head = min(n, (-dst.ctypes.data) % _LINE)
    for i in range(head):
        dst[i] = src[i]
    i = head
    while i + _LINE <= n:
        _store_line(dst, src, i)
        i += _LINE
    _sfence()
    while i < n:
        dst[i] = src[i]
        i += 1


def copy_into(dst, src):
    """``numpy.copyto(dst, src, casting="same_kind")``, with non-temporal stores where it
    is a plain byte copy of at least ``STREAMING_MIN_BYTES`` on x86-64.

    Parameters
    ----------
    dst : numpy.ndarray
        Written; usually a (pinned) staging buffer.
    src : numpy.ndarray
        Read only; of ``dst``'s shape (or broadcastable to it, through NumPy).
    """
    if (USE_STREAMING_STORES and isinstance(src, np.ndarray) and src.shape == dst.shape
            and src.dtype == dst.dtype and dst.dtype.kind in "biufc"
            and dst.nbytes >= STREAMING_MIN_BYTES
            and dst.flags.c_contiguous and src.flags.c_contiguous and dst.flags.writeable
            and streaming_supported() and not np.may_share_memory(dst, src)):
        _stream_copy(dst.reshape(-1).view(np.uint8), src.reshape(-1).view(np.uint8))
    else:
        np.copyto(dst, src, casting="same_kind")
