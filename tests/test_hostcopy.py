"""The staging copy with non-temporal stores (gpucorr._hostcopy)."""
import re

import numba
import numpy as np
import pytest

from gpucorr import _hostcopy, api

needs_x86 = pytest.mark.skipif(not _hostcopy.streaming_supported(),
                               reason="non-temporal stores are used on x86-64 only")


@needs_x86
@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 95, 1000, 4099])
def test_stream_copy_is_exact_at_every_alignment(rng, size):
    src_all = rng.integers(0, 256, size + 80, dtype=np.uint8)
    for offset in range(40):  # destination alignments 0..39 within a 32-byte line
        dst_all = np.zeros(size + 80, np.uint8)
        src = src_all[7:7 + size]
        before = src_all.copy()
        _hostcopy._stream_copy(dst_all[offset:offset + size], src)
        np.testing.assert_array_equal(dst_all[offset:offset + size], src)
        assert not dst_all[:offset].any() and not dst_all[offset + size:].any()
        np.testing.assert_array_equal(src_all, before)


@needs_x86
def test_stream_copy_compiles_to_non_temporal_stores_and_a_fence():
    fresh = numba.njit(nogil=True)(_hostcopy._stream_copy.py_func)  # cached code hides its asm
    fresh(np.zeros(64, np.uint8), np.ones(64, np.uint8))
    asm = "\n".join(fresh.inspect_asm().values())
    assert re.search(r"\bv?movntdq\b", asm), "no non-temporal store in the compiled copy"
    assert re.search(r"\bsfence\b", asm), "no sfence after the non-temporal stores"


@needs_x86
@pytest.mark.parametrize("case", ["int64", "strided", "2-D"])
def test_stream_copy_refuses_anything_but_contiguous_bytes(case):
    a = np.zeros(256, np.uint8)
    dst, src = {"int64": (a.view(np.int64), a.view(np.int64)),
                "strided": (a[::2], a[1::2]),
                "2-D": (a.reshape(16, 16), a.reshape(16, 16))}[case]
    with pytest.raises(numba.core.errors.TypingError, match="contiguous 1-D uint8"):
        numba.njit(_hostcopy._stream_copy.py_func)(dst, src)


def _spy(monkeypatch):
    calls = []
    real = _hostcopy._stream_copy
    monkeypatch.setattr(_hostcopy, "_stream_copy", lambda d, s: (calls.append(d.size), real(d, s)))
    monkeypatch.setattr(_hostcopy, "STREAMING_MIN_BYTES", 64)
    return calls


@needs_x86
@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int64, np.complex64])
def test_copy_into_streams_plain_byte_copies(rng, monkeypatch, dtype):
    calls = _spy(monkeypatch)
    src = (rng.random((5, 33, 17)) * 1000).astype(dtype)
    dst = np.zeros_like(src)
    _hostcopy.copy_into(dst, src)
    np.testing.assert_array_equal(dst, src)
    assert calls == [src.nbytes]


@pytest.mark.parametrize("case", ["strided", "byteswap", "cast", "small", "overlap", "off",
                                  "object"])
def test_copy_into_falls_back_to_numpy_where_bytes_would_be_wrong(rng, monkeypatch, case):
    calls = _spy(monkeypatch)
    base = rng.integers(0, 4000, (8, 32, 32)).astype(np.uint16)
    dst = np.zeros((4, 32, 32), np.uint16)
    src = base[:4]
    if case == "strided":
        src = base[::2]
    elif case == "byteswap":
        src = base[:4].astype(">u2")
    elif case == "cast":
        dst = np.zeros((4, 32, 32), np.float32)
    elif case == "small":
        monkeypatch.setattr(_hostcopy, "STREAMING_MIN_BYTES", dst.nbytes + 1)
    elif case == "overlap":
        dst, src = base[2:6], base[:4]
    elif case == "off":
        monkeypatch.setattr(_hostcopy, "USE_STREAMING_STORES", False)
    elif case == "object":
        src = np.empty((4, 32, 32), object)
        src[...] = 1
        dst = np.zeros((4, 32, 32), object)
    expected = np.array(src, dtype=dst.dtype)
    _hostcopy.copy_into(dst, src)
    np.testing.assert_array_equal(dst, expected)
    assert calls == []


def test_copy_into_keeps_numpys_casting_rules():
    with pytest.raises(TypeError, match="same_kind"):
        _hostcopy.copy_into(np.zeros(4, np.int32), np.ones(4, np.float64))


@pytest.mark.parametrize("why", ["aarch64", "NUMBA_DISABLE_JIT"])
def test_copy_into_uses_numpy_where_the_machine_is_not_x86_or_numba_does_not_compile(
        monkeypatch, why):
    calls = _spy(monkeypatch)
    if why == "aarch64":
        monkeypatch.setattr(_hostcopy.platform, "machine", lambda: "aarch64")
    else:
        monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    src = np.arange(4096, dtype=np.uint16)
    dst = np.zeros_like(src)
    _hostcopy.copy_into(dst, src)
    np.testing.assert_array_equal(dst, src)
    assert calls == []


@needs_x86
def test_staging_reads_numpy_and_memmap_frames_by_streaming_stores(rng, tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    frames = rng.integers(0, 4000, (2, 3, 40, 48)).astype(np.uint16)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.uint16, frames.shape)
    mm[...] = frames
    mm.flush()
    readonly = np.load(tmp_path / "f.npy", mmap_mode="r")
    for source in (frames.reshape(6, 40, 48), readonly.reshape(6, 40, 48)):
        out = np.zeros((4, 40, 48), np.uint16)
        api._read_into(source, 1, 5, out)
        np.testing.assert_array_equal(out, frames.reshape(6, 40, 48)[1:5])
    assert calls == [4 * 40 * 48 * 2] * 2
