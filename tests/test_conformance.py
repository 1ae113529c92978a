"""libertem-blobfinder 0.6.1's own test suite, run unchanged against gpucorr (conformance/).

The peer's sdist is fetched with pip at test time (GPL: never copied here); its
tests run once on the peer (the control) and once with gpucorr's modules swapped
in. Every test that passes on the peer must pass on gpucorr, except the named
differences in ``conformance/run.py``. Skipped, with the reason, where the sdist
cannot be fetched (no network).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("libertem_blobfinder")
pytest.importorskip("libertem")


def test_peer_suite_passes_on_gpucorr(tmp_path_factory):
    done = subprocess.run([sys.executable, "-m", "conformance.run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((ROOT / "build" / "conformance" / "summary.json").read_text())
    # the control ran the peer's suite for real (98 pass on this version's sdist)
    assert summary["passed_on_peer"] >= 90, summary
    assert summary["failing"] == 0, summary
    assert summary["passed_on_both"] + summary["deliberately_different"] == \
        summary["passed_on_peer"]


def test_swap_replaces_the_peers_modules():
    """With the plugin's swap, the peer's module names give gpucorr's modules, and the
    peer's other modules (its refinement mixins) are imported afresh on top of them."""
    code = (
        "import conformance.plugin as p; p.swap(); "
        "import libertem_blobfinder.base.correlation as c, gpucorr.correlation as g; "
        "assert c is g; "
        "import libertem_blobfinder.udf.refinement as r, gpucorr.libertem as l; "
        "assert r.FastCorrelationUDF is l.FastCorrelationUDF; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr
