"""The gpu tests on the CPU stand-in for CuPy (``pytest --fake-gpu -m gpu``), as part of the
ordinary run, so that CI (no GPU) exercises gpucorr's GPU-side code and the real kernel
sources (compiled as host C++ by tests/cuda_emulator.py).

This is emulation, not a GPU run: see tests/fake_cupy.py for what it can and cannot show.
It runs in a subprocess, because the stand-in replaces ``cupy`` in ``sys.modules``.
"""
import os
import subprocess
import sys

import pytest

import cuda_emulator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.mark.slow
def test_gpu_suite_on_the_fake_gpu():
    reason = cuda_emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the CUDA emulator cannot run here: {reason}")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: the gpu tests run on the real CuPy (pytest --gpu)")
    except ImportError:
        pass
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--fake-gpu", "-m", "gpu", "-q", "-p", "no:cacheprovider",
         "-p", "no:randomly", "tests", "gpucorr"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and " failed" not in run.stdout, tail
