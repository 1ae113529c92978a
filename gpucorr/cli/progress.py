"""The progress bar of ``gpucorr refine`` and ``gpucorr demo``, drawn by tqdm.

:class:`Progress` is the ``progress(done, total)`` callable that
:func:`gpucorr.refine` calls after each chunk. It shows one line on stderr, only
where stderr is a terminal::

    refine [###############...............] 5/10 frames, 512.31 frames/s

frames/s is the mean rate since the :class:`Progress` was made (tqdm with
``smoothing=0``), redrawn at most every ``mininterval`` seconds.
"""
import sys
import time

__all__ = ["Progress"]

#: the line tqdm draws: label, a 30-character bar of '#' and '.', frames and frames/s
BAR_FORMAT = "{desc} [{bar:30}] {n_fmt}/{total_fmt} frames, {rate_noinv_fmt}"


class Progress:
    """``progress(done, total)`` for :func:`gpucorr.refine`: a tqdm bar of frames and frames/s.

    Parameters
    ----------
    label : str
        Shown before the bar, e.g. ``"refine"``.
    stream : file, optional
        Where the bar goes (default ``sys.stderr``).
    enabled : bool, optional
        Draw the bar; by default only where ``stream`` is a terminal.
    mininterval : float
        Seconds between redraws (tqdm's); the last state is always drawn. A
        redrawn line is padded with spaces where it came out shorter than the
        one it overwrites (tqdm's way of clearing a terminal line).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = Progress("refine", stream=out, enabled=True)
    >>> bar(4, 4)
    >>> print(out.getvalue().split("\\r")[-1].rstrip())  # doctest: +ELLIPSIS
    refine [##############################] 4/4 frames, ... frames/s
    """

    def __init__(self, label, stream=None, enabled=None, mininterval=0.1):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.mininterval = mininterval
        self.bar = None
        if self.enabled:
            # imported here: importing gpucorr.cli (the parser, the benchmark workload)
            # does not need tqdm
            from tqdm import tqdm
            self.tqdm = tqdm
        self.t0 = time.time()  # tqdm's clock

    def __call__(self, done, total):
        if not self.enabled:
            return
        if self.bar is None:
            # made at the first chunk; delay > 0: no empty bar drawn before it
            self.bar = self.tqdm(total=total, desc=self.label, file=self.stream, ascii=".#",
                                 unit=" frames", bar_format=BAR_FORMAT, smoothing=0,
                                 mininterval=self.mininterval, delay=1e-9)
            self.bar.start_t = self.t0  # frames/s from the start of the run
            self.bar.update(done)
            self.bar.refresh()
        else:
            self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
