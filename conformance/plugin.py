"""pytest plugin: libertem-blobfinder's tests with gpucorr's modules swapped in.

``pytest -p conformance.plugin --swap-gpucorr <sdist>/tests`` makes every import
of the peer's correlation modules give gpucorr's, as a user who switches
imports (docs/migration.md) gets them:

==========================================  =====================
libertem-blobfinder 0.6.1                   gpucorr
==========================================  =====================
``libertem_blobfinder.base.correlation``    ``gpucorr.correlation``
``libertem_blobfinder.base.masks``          ``gpucorr.masks``
``libertem_blobfinder.base.utils``          ``gpucorr.synthetic``
``libertem_blobfinder.common.correlation``  ``gpucorr``       
``libertem_blobfinder.common.patterns``     ``gpucorr.patterns``
``libertem_blobfinder.udf.correlation``     ``gpucorr.libertem``
==========================================  =====================

The peer's other modules (grid matching, ``udf.refinement``, ``udf.integration``,
``udf.utils``) stay the peer's, but are imported afresh after the swap, so
they run on gpucorr's functions and UDFs: that is how a user's own code built
on the peer's would run after switching. Nothing is patched into gpucorr.

``--conformance-report PATH`` writes each test's outcome (``passed``,
``failed``, ``skipped``, ``error``) as JSON, for :mod:`conformance.run`.

The peer's tests draw from NumPy's global random state without a seed; the
plugin seeds it before each test from the test's id, so the control and the
gpucorr run see the same data (the tests themselves are not changed).
"""
import importlib
import json
import sys
import zlib

import numpy as np
import pytest

#: peer module -> gpucorr module that replaces it
SWAPS = {
    "libertem_blobfinder.base.correlation": "gpucorr.correlation",
    "libertem_blobfinder.base.masks": "gpucorr.masks",
    "libertem_blobfinder.base.utils": "gpucorr.synthetic",
    "libertem_blobfinder.common.correlation": "gpucorr",
    "libertem_blobfinder.common.patterns": "gpucorr.patterns",
    "libertem_blobfinder.udf.correlation": "gpucorr.libertem",
}


def swap():
    """Install the swaps in ``sys.modules`` and on the peer's packages; forget every
    other peer module so that it is imported again against the swapped ones."""
    importlib.import_module("libertem_blobfinder")
    for name in list(sys.modules):
        if name.startswith("libertem_blobfinder.") and name.count(".") >= 2:
            del sys.modules[name]
    for peer, ours in SWAPS.items():
        module = importlib.import_module(ours)
        package, _, child = peer.rpartition(".")
        parent = importlib.import_module(package)
        sys.modules[peer] = module
        setattr(parent, child, module)


def pytest_addoption(parser):
    group = parser.getgroup("gpucorr conformance")
    group.addoption("--swap-gpucorr", action="store_true", default=False,
                    help="run libertem-blobfinder's tests with gpucorr's modules swapped in")
    group.addoption("--conformance-report", default=None, metavar="PATH",
                    help="write every test's outcome to PATH (JSON)")


def pytest_configure(config):
    # the markers the peer's pytest.ini selects on (``-m "not slow" -m "not dist"``) without
    # registering them, which --strict-markers refuses in current pytest
    for marker in ("slow", "dist", "functional"):
        config.addinivalue_line("markers", f"{marker}: libertem-blobfinder's marker")
    if config.getoption("--swap-gpucorr"):
        swap()
    config._conformance_outcomes = {}


@pytest.fixture(autouse=True)
def _seeded_global_random_state(request):
    np.random.seed(zlib.crc32(request.node.nodeid.encode()))
    yield


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    outcomes = _config.get()._conformance_outcomes if _config.get() else None
    if outcomes is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[report.nodeid] = outcome
    elif report.when == "teardown" and report.failed:
        outcomes[report.nodeid] = "error"


class _Config:
    value = None

    def get(self):
        return self.value


_config = _Config()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    _config.value = session.config


def pytest_collectreport(report):
    if report.failed and _config.get() is not None:
        _config.get()._conformance_outcomes[report.nodeid or "<collection>"] = "error"


def pytest_sessionfinish(session):
    path = session.config.getoption("--conformance-report")
    if path:
        with open(path, "w") as f:
            json.dump(session.config._conformance_outcomes, f, indent=1, sort_keys=True)
