"""Root pytest configuration: modules whose optional dependency is missing are not collected.

``pytest`` collects doctests from ``gpucorr/``; the LiberTEM UDF needs
LiberTEM, which a minimal install lacks. ``pytest bench/`` collects the GPU
scripts as modules too; they need CuPy. The public-path aliases
(``gpucorr/dask.py`` and the like, which are their target modules) are
collected as those modules, under ``gpucorr/integrations`` and ``gpucorr/cli``.
"""
import importlib.util

collect_ignore = ["gpucorr/dask.py", "gpucorr/libertem.py", "gpucorr/io.py", "gpucorr/demo.py"]
if importlib.util.find_spec("libertem") is None:
    collect_ignore.append("gpucorr/integrations/libertem")
if importlib.util.find_spec("dask") is None:
    collect_ignore.append("gpucorr/integrations/dask.py")
if importlib.util.find_spec("cupy") is None:
    collect_ignore += ["bench/gpu_bench.py", "bench/gpu_smoke.py", "bench/gpu_profile.py",
                       "bench/h2d_paths.py"]
