"""Shared fixtures (``xp``, ``any_cupy``, ``rng``), the ``gpu`` marker and ``--gpu``.

Without a usable GPU the ``gpu`` tests skip with the reason shown; with
``pytest --gpu`` a missing GPU is a usage error, so a GPU run cannot pass by
skipping.
"""
import functools

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False,
                     help="require a usable CUDA GPU: fail instead of skipping gpu tests")
    parser.addoption("--fake-gpu", action="store_true", default=False,
                     help="run the gpu tests on tests/fake_cupy.py: CPU emulation of CuPy and "
                          "of kernels/*.cu (no GPU needed; not a GPU verification)")


@functools.lru_cache(maxsize=1)
def gpu_unusable_reason():
    """None if CuPy can allocate on a GPU, else why not (probe by allocating)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        cupy.zeros(1)
    except Exception as exc:
        return f"CuPy cannot allocate on a GPU ({type(exc).__name__}: {exc})"
    return None


def pytest_configure(config):
    if config.getoption("--fake-gpu"):
        import os
        import sys
        sys.path.insert(0, os.path.dirname(__file__))
        import fake_cupy
        from gpucorr.backends import _cuda
        fake_cupy.install()
        # the emulator runs one OS thread per CUDA thread: small blocks keep it quick
        _cuda.BLOCK = 32
        _cuda.FAST_THREADS = 32
    if config.getoption("--gpu"):
        reason = gpu_unusable_reason()
        if reason is not None:
            raise pytest.UsageError(f"--gpu was given but no GPU is usable: {reason}")


def pytest_report_header(config):
    """The launch sizes the GPU tests run at (the stand-in's are reduced)."""
    from gpucorr.backends import _cuda
    how = ("reduced for the CPU stand-in: emulated, not a GPU run"
           if config.getoption("--fake-gpu") else "as shipped")
    return f"gpucorr launch sizes: BLOCK={_cuda.BLOCK}, FAST_THREADS={_cuda.FAST_THREADS} ({how})"


def pytest_collection_modifyitems(config, items):
    reason = gpu_unusable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test skipped: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=[
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
])
def xp(request):
    """The array module a test runs on."""
    if request.param == "numpy":
        return np
    import cupy
    return cupy


@pytest.fixture
def any_cupy():
    """CuPy where a GPU is usable, else the CPU stand-in (tests/fake_cupy.py) as ``cupy``
    for the test: for what gpucorr does with CuPy arrays before any GPU work (dispatch,
    argument checks), which is then tested everywhere."""
    if gpu_unusable_reason() is None:
        import cupy
        yield cupy
        return
    import fake_cupy
    with fake_cupy.installed() as cupy:
        yield cupy


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)
