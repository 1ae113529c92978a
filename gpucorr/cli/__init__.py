"""The command line at the edge: ``gpucorr demo | refine | bench | info``.

- :mod:`~gpucorr.cli.commands`: the parser, :func:`main`, ``demo`` and ``info``;
- :mod:`~gpucorr.cli.refine`: ``refine``, step by step;
- :mod:`~gpucorr.cli.options`: reading and checking ``refine``'s options (paths,
  pattern, peaks, calibration, strain reference, plots);
- :mod:`~gpucorr.cli.bench`: ``bench``, timing :mod:`~gpucorr.cli.workload`, the
  benchmark workload that ``bench/`` and the GPU scripts time too;
- :mod:`~gpucorr.cli.progress`: the progress bar (tqdm);
- :mod:`~gpucorr.cli.common`: the one-line error and the device a command runs on;
- :mod:`~gpucorr.cli.io`: reading frames (and their calibration) from files and
  writing results files;
- :mod:`~gpucorr.cli.results`: what a results file holds: units, axes and a
  description per dataset, NeXus signals of the maps;
- :mod:`~gpucorr.cli.maps`: the sum frame, virtual bright field and elevation maps,
  read chunk by chunk;
- :mod:`~gpucorr.cli.demo`: the demo scan, its strain maps and pictures.
"""
from gpucorr.cli.commands import main  # noqa: F401
