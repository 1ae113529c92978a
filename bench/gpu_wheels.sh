#!/usr/bin/env bash
# Wheels that the GPU machine (Python 3.12, no registry access) lacks, downloaded here
# into the ignored .whl/ folder; bench/gpu_check.sh installs them there when .whl/ exists.
# The GPU image already has numpy, numba, scipy, cupy, torch, h5py, pytest,
# pytest-benchmark, hypothesis, tifffile, msgpack, psutil, toolz, pyyaml, ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .whl && mkdir -p .whl
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d .whl \
    array-api-compat sparseconverter sparse "libertem-blobfinder==0.6.1" \
    "dask[array]" distributed partd locket tblib zict tornado \
    zarr numcodecs donfig google-crc32c msgspec tqdm
ls .whl
du -sh .whl
