"""Test data and comparison helpers shared by the test modules."""
import importlib

import numpy as np
import pytest

from gpucorr.synthetic import cbed_frame

EPS32 = np.finfo(np.float32).eps


def random_lattice_frames(rng, n_frames, shape=(128, 128), radius=4, dose=2e5,
                          background=5.0, dtype=np.float32):
    """Noisy CBED-like frames with a random sub-pixel lattice, and the true centres.

    Each frame is the same lattice with independent Poisson noise over a flat
    background.
    """
    fy, fx = shape
    zero = (fy / 2 + rng.uniform(-3, 3), fx / 2 + rng.uniform(-3, 3))
    length = min(fy, fx) / 6 * rng.uniform(0.9, 1.1)
    angle = rng.uniform(0, np.pi)
    a = (length * np.cos(angle), length * np.sin(angle))
    b = (-a[1], a[0])
    clean, _, peaks = cbed_frame(fy, fx, zero=zero, a=a, b=b, radius=radius)
    scale = dose / clean.sum()
    frames = rng.poisson(clean[0] * scale + background, size=(n_frames, fy, fx))
    return frames.astype(dtype), peaks


def jittered_peaks(rng, peaks, shape, n_edge=4, jitter=1):
    """Rounded peaks moved by up to ``jitter`` px, plus peaks at and beyond the edges."""
    fy, fx = shape
    p = np.rint(peaks).astype(np.int64) + rng.integers(-jitter, jitter + 1, size=peaks.shape)
    edge = np.array([[0, 0], [fy - 1, fx - 1], [-3, fx // 2], [fy // 2, fx + 2]])[:n_edge]
    return np.concatenate([p, edge])


def assert_results_match(ours, ref, *, refined_atol=1e-3, rtol=1e-4):
    """The DESIGN.md parity rule between two (centers, refineds, heights, elevations).

    Same integer centres; refined positions within 1e-3 px; heights and
    elevations within 1e-4 relative. An elevation is a difference of two
    nearby map values divided by >= 1.5 px; where it is tiny compared with the
    height, the float32 resolution of the map values (a few ulp of the height)
    bounds how well it can be known, so that resolution is allowed as well.
    """
    c, r, h, e = (np.asarray(a) for a in ours)
    rc, rr, rh, re = (np.asarray(a) for a in ref)
    # libertem-blobfinder's full mode stores centres as uint16: compare in its dtype
    np.testing.assert_array_equal(c.astype(np.int64).astype(rc.dtype), rc)
    np.testing.assert_allclose(r, rr, rtol=0, atol=refined_atol)
    h_atol = 4 * EPS32 * np.abs(rh).max()
    np.testing.assert_allclose(h, rh, rtol=rtol, atol=h_atol)
    e_atol = 8 * EPS32 * np.abs(rh) / 1.5
    assert np.all(np.abs(e - re) <= rtol * np.abs(re) + e_atol), (
        f"elevations differ: max rel {np.max(np.abs(e - re) / np.maximum(np.abs(re), 1e-30))}")


def optional_modules(*names):
    """The modules ``names`` (``None`` for one that cannot be imported), and a mark that
    skips a test, naming what is missing, unless all of them were imported.

    For modules only some tests of a file need: those tests take the mark, the others run
    without the modules (a module-level ``pytest.importorskip`` would skip them too)::

        ref_patterns, needs_reference = optional_modules("libertem_blobfinder.common.patterns")
    """
    modules, missing, why = [], [], None
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            modules.append(None)
            missing.append(name)
            why = why or f"{type(exc).__name__}: {exc}"
    mark = pytest.mark.skipif(bool(missing),
                              reason=f"cannot import {', '.join(missing)} ({why})")
    return (*modules, mark)
