"""Root pytest configuration: modules whose optional dependency is missing are not collected.

``pytest`` collects doctests from ``gpucorr/``; the LiberTEM UDF needs
LiberTEM, which a minimal install lacks. ``pytest bench/`` collects the GPU
scripts as modules too; they need CuPy.
"""
import importlib.util

collect_ignore = []
if importlib.util.find_spec("libertem") is None:
    collect_ignore.append("gpucorr/libertem.py")
if importlib.util.find_spec("dask") is None:
    collect_ignore.append("gpucorr/dask.py")
if importlib.util.find_spec("cupy") is None:
    collect_ignore += ["bench/gpu_bench.py", "bench/gpu_smoke.py", "bench/gpu_profile.py"]
