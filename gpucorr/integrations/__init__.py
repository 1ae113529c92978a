"""Integrations at the edge: :mod:`gpucorr.dask` (Dask arrays and clusters) and
:mod:`gpucorr.libertem` (LiberTEM UDFs). Each is importable as ``gpucorr.dask`` /
``gpucorr.libertem``; neither is imported by ``import gpucorr``."""
