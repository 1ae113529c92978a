"""What the commands share: the one-line error and the machine a command runs on.

:class:`CLIError` is a problem the user can fix; ``main`` prints it as one
line, ``gpucorr: error: ...``, and exits with status 2. :func:`resolve_device`
turns ``--device`` into the device a command runs on.
"""
import os
import re

import numpy as np

__all__ = ["CLIError", "cpu_name", "cuda_status", "install_hint", "one_line",
           "resolve_device", "with_install_hint"]


class CLIError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


def one_line(exc):
    """The message of ``exc`` on one line (numba's, for one, spans several).

    >>> one_line(ValueError("first\\n  second"))
    'first second'
    """
    return " ".join(str(exc).split()) or type(exc).__name__


def _checkout():
    """The root of the source checkout gpucorr is installed from (editable), or None."""
    import gpucorr
    root = os.path.dirname(os.path.dirname(os.path.abspath(gpucorr.__file__)))
    return root if os.path.exists(os.path.join(root, "pyproject.toml")) else None


def install_hint(extra):
    """How to install gpucorr's optional ``extra``: from the source checkout where gpucorr
    is one (``pip install -e '/path/to/checkout[cuda13]'``), else from the index."""
    root = _checkout()
    if root is not None:
        return f"pip install -e '{root}[{extra}]'"
    return f"pip install 'gpucorr[{extra}]'"


def with_install_hint(text):
    """``text`` with ``pip install gpucorr[EXTRA]`` replaced by :func:`install_hint`.

    >>> with_install_hint("no CuPy; pip install gpucorr[cuda13]").startswith("no CuPy; pip ")
    True
    """
    return re.sub(r"pip install gpucorr\[([\w,-]+)\]", lambda m: install_hint(m.group(1)),
                  str(text))


def cpu_name():
    """The CPU model, e.g. ``"AMD EPYC 7B13"``, and the core count."""
    from gpucorr.backends.devices import _cpu_model
    return f"{_cpu_model()}, {os.cpu_count()} cores"


def cuda_status():
    """``(usable, reason)`` of the GPU for the command line (reason None where usable)."""
    from gpucorr.backends.devices import cuda_unusable_reason
    reason = cuda_unusable_reason()
    return reason is None, reason


def resolve_device(device):
    """The device a command runs on, e.g. ``"cpu"`` or ``"cuda:0"``; CLIError where unusable.

    ``auto`` is the current GPU where one is usable, else the CPU.

    >>> resolve_device("cpu")
    'cpu'
    """
    from gpucorr.backends import devices as _device
    try:
        _device._parse(device)
    except ValueError:
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}") from None
    if device == "cpu":
        return "cpu"
    try:
        target = _device.resolve(device, np.empty(0))
    except ValueError as exc:
        raise CLIError(f"--device {device}: {with_install_hint(exc)}") from None
    return str(target)
