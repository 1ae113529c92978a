"""Run libertem-blobfinder 0.6.1's own tests against the peer (the control) and gpucorr.

``python -m conformance.run`` (from the repository root, with the test extra
installed):

1. fetches the peer's sdist with pip (``pip download --no-binary :all:``; it is
   GPL-licensed, so it is fetched at test time, never copied into this
   repository) into ``build/conformance/`` and unpacks it;
2. runs its ``tests/`` once with the installed libertem-blobfinder (the
   control) and once with gpucorr's modules swapped in
   (:mod:`conformance.plugin`), each test's outcome written to JSON;
3. compares: every test that passes in the control must pass with gpucorr,
   except the named, deliberate differences of :data:`DIFFERENCES`.

It prints the counts and exits 0 when gpucorr conforms, 1 when a test that
passes on the peer fails on gpucorr, and 3 when the sdist cannot be fetched
(no network): the caller may skip then, with that reason.
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PEER = "libertem-blobfinder"
VERSION = "0.6.1"
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "conformance"
UNFETCHABLE = 3

#: peer test id (or id prefix, ending in "[") -> why gpucorr deliberately gives another
#: answer, and the gpucorr test that shows its answer is the right one
DIFFERENCES = {}


def fetch(cache=CACHE):
    """The unpacked sdist folder; raises ``RuntimeError`` where it cannot be fetched."""
    folder = cache / f"libertem_blobfinder-{VERSION}"
    if (folder / "tests").is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--no-binary", ":all:", "--dest", str(cache), f"{PEER}=={VERSION}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    archives = sorted(cache.glob(f"libertem_blobfinder-{VERSION}.tar.gz"))
    if done.returncode != 0 or not archives:
        raise RuntimeError(f"pip could not fetch the {PEER} {VERSION} sdist: "
                           f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(cache, filter="data")
    return folder


def run_suite(folder, swap, report):
    """Run the peer's tests (in ``folder``) once; the outcomes {test id: outcome}."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "conformance.plugin", "--conformance-report", str(report),
           # the peer's pytest.ini selects with unregistered markers; the plugin registers
           # them and this is its selection, in one expression
           "-o", "addopts=", "-m", "not slow and not dist", "--continue-on-collection-errors",
           "tests"]
    if swap:
        cmd.insert(-1, "--swap-gpucorr")
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=1800)
    if not report.exists():
        raise RuntimeError(f"the peer's test run wrote no report:\n{done.stdout[-3000:]}"
                           f"\n{done.stderr[-3000:]}")
    return json.loads(report.read_text()), done.stdout


def _difference(test_id):
    for key, why in DIFFERENCES.items():
        if test_id == key or (key.endswith("[") and test_id.startswith(key)):
            return why
    return None


def compare(control, swapped):
    """``(summary dict, failing ids, deliberate ids)``."""
    passed = sorted(t for t, o in control.items() if o == "passed")
    failing, deliberate = [], []
    for test_id in passed:
        if swapped.get(test_id) == "passed":
            continue
        (deliberate if _difference(test_id) else failing).append(test_id)
    summary = {
        "peer": f"{PEER} {VERSION}",
        "control": {o: sum(1 for v in control.values() if v == o)
                    for o in sorted(set(control.values()))},
        "gpucorr": {o: sum(1 for v in swapped.values() if v == o)
                    for o in sorted(set(swapped.values()))},
        "passed_on_peer": len(passed),
        "passed_on_both": len(passed) - len(failing) - len(deliberate),
        "deliberately_different": len(deliberate),
        "failing": len(failing),
        "extra_on_gpucorr": sorted(set(swapped) - set(control)),
    }
    return summary, failing, deliberate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        folder = fetch(args.cache)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"conformance: skipped, {exc}")
        return UNFETCHABLE
    control, control_log = run_suite(folder, False, args.cache / "control.json")
    swapped, swap_log = run_suite(folder, True, args.cache / "gpucorr.json")
    summary, failing, deliberate = compare(control, swapped)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (args.cache / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"conformance against {summary['peer']}'s own tests ({summary['seconds']} s)")
    print(f"  control (the peer): {summary['control']}")
    print(f"  gpucorr swapped in: {summary['gpucorr']}")
    print(f"  of {summary['passed_on_peer']} tests that pass on the peer: "
          f"{summary['passed_on_both']} pass on gpucorr, {len(deliberate)} deliberately "
          f"different, {len(failing)} failing")
    for test_id in deliberate:
        print(f"  deliberate: {test_id}: {_difference(test_id)}")
    for test_id in failing:
        print(f"  FAILING on gpucorr: {test_id} ({swapped.get(test_id, 'not run')})")
    if failing:
        print(swap_log[-6000:])
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
