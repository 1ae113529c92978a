#!/usr/bin/env bash
# Create (or complete) the separate virtual environment for py4DSTEM used by
# bench/py4dstem_run.py and bench/disk_accuracy.py. Idempotent: re-running it
# leaves a working venv alone and repairs a partial one.
#
# py4DSTEM 0.14.18 needs NumPy < 2, so it cannot share gpucorr's venv; the two
# exchange frames and results by file. Pins below were found to import and run
# find_Bragg_disks (CPU) on Python 3.11 (2 cores, no GPU) on 2026-12-03; the
# others resolved freely (see `pip freeze` in that venv).
#
# Usage: bench/py4dstem_env.sh [VENV]       (default /work/venvs/py4dstem,
#                                           or $PY4DSTEM_VENV)
set -euo pipefail

VENV="${1:-${PY4DSTEM_VENV:-/work/venvs/py4dstem}}"
PYTHON="${PYTHON:-python3}"

PINS=(
    "py4dstem==0.14.18"
    "numpy==1.26.4"          # py4DSTEM 0.14.x: NumPy < 2
    "scipy==1.17.1"
    "scikit-image==0.26.0"
    "scikit-learn==1.4.2"
    "matplotlib==3.11.2"
    "h5py==3.16.0"
    "emdfile==0.0.16"
)

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

check() {
    "$VENV/bin/python" - <<'EOF'
import numpy, py4DSTEM
from py4DSTEM.braggvectors.diskdetection import find_Bragg_disks  # noqa: F401
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
print(f"py4DSTEM {py4DSTEM.__version__}, NumPy {numpy.__version__}: ok")
EOF
}

if check 2>/dev/null; then
    exit 0
fi

"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
check
