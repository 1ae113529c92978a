"""refine_by_reference: each disk against its own mean in a reference."""
import numpy as np
import pytest

import gpucorr
from gpucorr.reference import reference_templates
from gpucorr.synthetic import cbed_frame

from helpers import assert_results_match


def _moved(shifts, size=96, radius=4):
    """cbed_frame lattices moved by ``shifts`` from the reference's; the reference frame,
    the moved frames and the rounded reference centres."""
    ref, indices, centers = cbed_frame(fy=size, fx=size, radius=radius, zero=(48, 48))
    frames = np.stack([cbed_frame(fy=size, fx=size, radius=radius, indices=indices,
                                  zero=(48 + dy, 48 + dx))[0][0] for dy, dx in shifts])
    return ref[0], frames, np.rint(centers).astype(np.int64)


SHIFTS = [(0.3, -0.2), (-0.45, 0.1), (0.0, 0.0), (0.12, 0.37)]


def test_each_disk_is_located_by_its_displacement_from_the_reference():
    ref, frames, peaks = _moved(SHIFTS)
    before = frames.copy(), ref.copy()
    res = gpucorr.refine_by_reference(frames, peaks, ref, scaling="none")
    moved = np.asarray(res.refineds, np.float64) - peaks
    assert moved.shape == (len(SHIFTS), len(peaks), 2)
    np.testing.assert_allclose(moved, np.broadcast_to(np.array(SHIFTS)[:, None, :], moved.shape),
                               atol=0.015)
    np.testing.assert_array_equal(frames, before[0])
    np.testing.assert_array_equal(ref, before[1])


def test_with_a_pattern_the_positions_are_the_reference_centres_plus_the_displacement():
    ref, frames, peaks = _moved(SHIFTS)
    _, _, true_ref = cbed_frame(fy=96, fx=96, radius=4, zero=(48, 48))
    pattern = gpucorr.patterns.Circular(radius=4, search=6)
    res = gpucorr.refine_by_reference(frames, peaks, ref, pattern=pattern, scaling="none")
    plain = gpucorr.refine_by_reference(frames, peaks, ref, scaling="none")
    centres = np.asarray(gpucorr.refine(ref.astype(np.float64), peaks, pattern,
                                        upsample=20).refineds, np.float64)
    np.testing.assert_allclose(np.asarray(res.refineds) - np.asarray(plain.refineds),
                               np.broadcast_to(centres - peaks, res.refineds.shape), atol=1e-5)
    truth = true_ref[None] + np.array(SHIFTS)[:, None, :]
    assert np.abs(np.asarray(res.refineds) - truth).max() < 0.03
    for a, b in ((res.centers, plain.centers), (res.heights, plain.heights)):
        np.testing.assert_array_equal(a, b)


def test_the_reference_against_itself_does_not_move():
    ref, _, peaks = _moved(SHIFTS[:1])
    res = gpucorr.refine_by_reference(ref, peaks, ref)
    np.testing.assert_allclose(np.asarray(res.refineds), peaks, atol=1e-3)


def test_a_reference_on_disk_or_as_lists_is_the_same_as_in_memory(tmp_path):
    ref, frames, peaks = _moved(SHIFTS)
    refs = np.stack([ref, ref + 1, ref * 0.5]).astype(np.float32)
    expected = gpucorr.refine_by_reference(frames, peaks, refs)
    np.save(tmp_path / "refs.npy", refs)
    given = [np.load(tmp_path / "refs.npy", mmap_mode="r"), refs.tolist(), refs[::-1]]
    h5py = None
    try:
        import h5py
    except ImportError:
        pass
    if h5py is not None:
        with h5py.File(tmp_path / "refs.h5", "w") as f:
            f["refs"] = refs
        handle = h5py.File(tmp_path / "refs.h5", "r")
        given.append(handle["refs"])
    try:
        for reference in given:
            got = gpucorr.refine_by_reference(frames, peaks, reference)
            for a, b in zip(got, expected):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    finally:
        if h5py is not None:
            handle.close()


def test_frames_and_references_as_lists_or_tuples_are_stacked():
    ref, frames, peaks = _moved(SHIFTS)
    refs = np.stack([ref, ref * 2])
    expected = gpucorr.refine_by_reference(frames, peaks, refs)
    for given_frames in (list(frames), tuple(frames)):
        for given_ref in (list(refs), tuple(refs)):
            got = gpucorr.refine_by_reference(given_frames, peaks, given_ref)
            for a, b in zip(got, expected):
                np.testing.assert_array_equal(a, b)
    scan = frames.reshape(2, 2, *frames.shape[-2:])
    np.testing.assert_array_equal(reference_templates("0:1,0:2", peaks, frames=list(scan)),
                                  reference_templates(scan[0], peaks))
    # with peaks given twice the search must be given (or it would be 0)
    twice = np.concatenate([peaks, peaks[:1]])
    res = gpucorr.refine_by_reference(frames, twice, refs, search=6)
    np.testing.assert_array_equal(res.refineds[:, -1], res.refineds[:, 0])


def test_a_region_of_the_scan_is_the_same_as_its_frames():
    ref, frames, peaks = _moved(SHIFTS + [(0.2, 0.2), (-0.1, -0.3)])
    scan = frames.reshape(2, 3, *frames.shape[-2:])
    by_region = gpucorr.refine_by_reference(scan, peaks, "0:1,0:3")
    by_frames = gpucorr.refine_by_reference(scan, peaks, scan[0:1, 0:3])
    by_slices = gpucorr.refine_by_reference(scan, peaks, np.s_[0:1, 0:3])
    for a, b, c in zip(by_region, by_frames, by_slices):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert by_region.refineds.shape == (2, 3, len(peaks), 2)


def test_results_do_not_depend_on_the_batch():
    ref, frames, peaks = _moved(SHIFTS)
    stack = gpucorr.refine_by_reference(frames, peaks, ref, workers=2, memory_limit=1)
    for i in range(len(frames)):
        alone = gpucorr.refine_by_reference(frames[i], peaks, ref, workers=1)
        for a, b in zip(stack, alone):
            np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b))


def test_a_region_needs_its_frames():
    _, frames, peaks = _moved(SHIFTS)
    with pytest.raises(ValueError, match="pass the frames it refers to"):
        reference_templates("0:1", peaks)
    with pytest.raises(ValueError, match="one slice per scan axis"):
        gpucorr.refine_by_reference(frames.reshape(2, 2, 96, 96), peaks, "0:1")


def test_templates_are_the_mean_frames_crops():
    ref, frames, peaks = _moved(SHIFTS)
    t = reference_templates(frames, peaks, search=5, scaling="none")
    mean = frames.astype(np.float64).mean(axis=0)
    y, x = peaks[7]
    crop = mean[y - 5:y + 5, x - 5:x + 5]
    np.testing.assert_allclose(t[7], crop - crop.mean(), atol=1e-12)
    logged = reference_templates(frames, peaks, search=5)
    want = np.log(crop - crop.min() + 1)
    np.testing.assert_allclose(logged[7], want - want.mean(), atol=1e-12)
    # the default search: half the distance between the nearest peaks
    d = np.sqrt(((peaks[:, None] - peaks[None]) ** 2).sum(-1).astype(float))
    d[np.diag_indices(len(peaks))] = np.inf
    assert reference_templates(ref, peaks).shape[-1] == 2 * int(d.min() // 2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scaling="sqrt"), ValueError, "scaling must be 'log' or 'none'"),
    (dict(search=1), ValueError, "search must be an int >= 2"),
    (dict(search=4.5), TypeError, "search must be an int >= 2"),
    (dict(peaks=np.array([[10, 10]])), ValueError, "search must be given for a single peak"),
    (dict(peaks=np.array([[10.5, 10.0], [30.0, 30.0]])), TypeError, "peaks must be integers"),
    (dict(peaks=np.zeros((0, 2), int)), ValueError, r"peaks must be an integer array of shape"),
    (dict(reference=np.zeros((5, 96, 90))), ValueError, "reference frames must have the frames' shape"),
    (dict(reference="0:2"), ValueError, "the frames have none"),
    (dict(reference=np.full((96, 96), np.nan)), ValueError, "NaN or infinite"),
    (dict(reference=np.zeros((0, 96, 96))), ValueError, "holds no frame"),
    (dict(peaks=np.array([[10, 10], [500, 10]]), search=3), ValueError, "peak 1 at \\(500, 10\\)"),
    (dict(peaks=np.array([[10, 10], [40, 40], [10, 10]])), ValueError,
     r"peaks 0 and 2 are the same, \(10, 10\): give each disk once \(or pass search\)"),
    (dict(search=10 ** 6), ValueError,
     "search=1000000 makes templates of 2000000x2000000 px, larger than the 96x96 frames"),
    (dict(search=49), ValueError, "templates of 98x98 px, larger than the 96x96 frames"),
    (dict(reference=np.zeros((1, 0, 0))), ValueError, r"reference frames are empty \(shape"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    ref, frames, peaks = _moved(SHIFTS[:1])
    args = dict(frames=frames[0], peaks=peaks, reference=ref)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        gpucorr.refine_by_reference(args.pop("frames"), args.pop("peaks"), args.pop("reference"),
                                    **args)


@pytest.mark.gpu
def test_gpu_gives_the_cpus_answers():
    import cupy
    ref, frames, peaks = _moved(SHIFTS)
    for pattern in (None, gpucorr.patterns.Circular(radius=4, search=6)):
        expected = gpucorr.refine_by_reference(frames, peaks, ref, upsample=7, pattern=pattern)
        for reference in (ref, cupy.asarray(ref)):     # the reference on the host or the GPU
            got = gpucorr.refine_by_reference(cupy.asarray(frames), peaks, reference,
                                              upsample=7, pattern=pattern)
            assert_results_match([cupy.asnumpy(a) for a in got], expected)


# ---------------------------------------------------------------- PeakTemplates

def test_one_template_per_peak_is_each_peak_with_its_own_template():
    from gpucorr.patterns import PeakTemplates, UserTemplate
    ref, frames, peaks = _moved(SHIFTS)
    templates = reference_templates(ref, peaks, search=6)
    for scaling in ("log", "none"):
        got = gpucorr.refine(frames, peaks, PeakTemplates(templates, search=6), upsample=20,
                             scaling=scaling)
        for p in (0, 11, len(peaks) - 1):
            one = gpucorr.refine(frames, peaks[p:p + 1], UserTemplate(templates[p], search=6),
                                 upsample=20, scaling=scaling)
            for a, b in zip(got, one):
                np.testing.assert_array_equal(np.asarray(a)[:, p:p + 1], np.asarray(b))


def test_one_template_per_peak_needs_fast_mode_and_one_per_peak():
    from gpucorr.patterns import PeakTemplates
    ref, frames, peaks = _moved(SHIFTS[:1])
    pattern = PeakTemplates(reference_templates(ref, peaks, search=6), search=6)
    with pytest.raises(ValueError, match="needs mode='fast'; got mode='full'"):
        gpucorr.refine(frames, peaks, pattern, mode="full")
    with pytest.raises(ValueError, match=f"holds {len(peaks)} templates for 3 peaks"):
        gpucorr.refine(frames, peaks[:3], pattern)
    with pytest.raises(ValueError, match="templates must be a 3-D array"):
        PeakTemplates(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="templates must not be empty"):
        PeakTemplates(np.zeros((0, 4, 4)))


def test_dask_checks_per_peak_templates_when_the_graph_is_built():
    da = pytest.importorskip("dask.array")
    import gpucorr.dask
    from gpucorr.patterns import PeakTemplates
    ref, frames, peaks = _moved(SHIFTS)
    templates = reference_templates(ref, peaks, search=6)
    darr = da.from_array(frames, chunks=(2, -1, -1))
    with pytest.raises(ValueError, match=f"holds {len(peaks) - 1} templates for {len(peaks)} "
                                         "peaks; give one per peak"):
        gpucorr.dask.refine(darr, peaks, PeakTemplates(templates[1:], search=6))
    with pytest.raises(ValueError, match="one template per peak .PeakTemplates. needs "
                                         "mode='fast'; got mode='full'"):
        gpucorr.dask.refine(darr, peaks, PeakTemplates(templates, search=6), mode="full")
    res = gpucorr.dask.refine(darr, peaks, PeakTemplates(templates, search=6), upsample=7)
    expected = gpucorr.refine(frames, peaks, PeakTemplates(templates, search=6), upsample=7)
    got = res.compute(scheduler="sync")
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
