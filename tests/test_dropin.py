"""What a libertem-blobfinder 0.6.1 user's code meets when it switches imports: broadcast
templates, sparse log scaling, the peer's spectrum convention, the sparse UDF and the
hooks of the peer's refinement mixins (run on gpucorr's UDFs)."""
import numpy as np
import pytest
import sparse

import gpucorr
from gpucorr import patterns
from gpucorr.masks import circular

from helpers import optional_modules


def refine_logged(*args, **kwargs):
    """gpucorr.refine log-scaled, as the compatible functions and the UDFs correlate
    (RadialGradient's own default in refine is no scaling)."""
    return gpucorr.refine(*args, scaling="log", **kwargs)


def disk_crops(shape, centres, radius=3.0):
    return np.stack([circular(cx, cy, shape[1], shape[0], radius, antialiased=True)
                     for cy, cx in centres]).astype(np.float32)


@pytest.mark.parametrize("shape", [(16, 16), (15, 17)])
def test_do_correlations_broadcasts_templates(shape):
    crops = disk_crops(shape, [(6.2, 7.7), (8.5, 6.1), (7.0, 9.3)])
    template = patterns.Circular(radius=3).get_template(shape)
    want, want_specs = gpucorr.do_correlations(template, crops, with_specs=True)
    got, got_specs = gpucorr.do_correlations(template[np.newaxis], crops, with_specs=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_specs, want_specs)
    # one template per crop: crop i with template i
    other = patterns.RadialGradient(radius=3).get_template(shape)
    per_crop = np.stack([template, other, template])
    got = gpucorr.do_correlations(per_crop, crops)
    np.testing.assert_allclose(got[1], gpucorr.do_correlations(other, crops[1:2])[0],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"one per crop \(3, h, w // 2 \+ 1\); got \(2, "):
        gpucorr.do_correlations(per_crop[:2], crops)


@pytest.mark.parametrize("fmt", [sparse.COO, sparse.GCXS])
@pytest.mark.parametrize("values", [[[0, 2.0, 0], [5, 0, 0]], [[-1, 2.0, 0], [5, 0, 0]]])
def test_log_scale_of_sparse_data_is_sparse(fmt, values):
    dense = np.array(values, np.float32)
    got = gpucorr.log_scale(fmt.from_numpy(dense), out=None)
    assert isinstance(got, fmt) and got.dtype == np.float32
    np.testing.assert_allclose(got.todense(), np.log(dense - dense.min() + 1), rtol=1e-6)
    with pytest.raises(TypeError, match="out must be None for sparse data"):
        gpucorr.log_scale(fmt.from_numpy(dense), out=np.empty(dense.shape))


@pytest.mark.parametrize("shape", [(32, 32), (31, 35)])
@pytest.mark.parametrize("shift", [(0.0, 0.0), (-3.7, 4.2), (2.3, -1.6)])
def test_spectra_follow_the_peers_convention(shape, shift):
    """``refine_center_upsampling(ceil(shape / 2), argmax, spec, ...)`` on the spectra of
    ``do_correlations`` finds the disk (the peer's own call), and ``evaluate_upsampling``
    agrees with it; even and odd sizes."""
    centre = (shape[0] // 2 + shift[0], shape[1] // 2 + shift[1])
    crops = disk_crops(shape, [centre], radius=5.0)
    template = patterns.Circular(radius=5).get_template(shape)
    corrs, specs = gpucorr.do_correlations(template, crops, with_specs=True)
    argmax = np.array(np.unravel_index(np.argmax(corrs[0]), shape))
    freqs = (np.fft.fftfreq(shape[0], 20), np.fft.rfftfreq(shape[1], 20))
    got = gpucorr.refine_center_upsampling(np.ceil(np.asarray(shape) / 2), argmax, specs[0],
                                           freqs, 20)
    np.testing.assert_allclose(got, centre, atol=0.05)
    # evaluate_upsampling with the same spectra: the same position
    crop_size = min(shape) // 2
    peaks = np.array([[crop_size, crop_size]])
    centers = (argmax + peaks - crop_size).astype(np.int32)
    refineds = np.zeros((1, 2), np.float32)
    gpucorr.evaluate_upsampling(specs, corrs, peaks, crop_size, shape, 20, centers, refineds)
    np.testing.assert_allclose(refineds[0] - peaks[0] + crop_size, got, atol=1e-4)


# the UDF tests below need LiberTEM; those above do not
libertem_api, libertem_memory, needs_libertem = optional_modules(
    "libertem.api", "libertem.io.dataset.memory")
if needs_libertem.args[0]:  # not installed: the names the UDF tests use, for collection
    FastCorrelationUDF = FullFrameCorrelationUDF = SparseCorrelationUDF = None
else:
    from gpucorr.libertem import (
        FastCorrelationUDF, FullFrameCorrelationUDF, SparseCorrelationUDF, run_blobfinder,
        run_fastcorrelation,
    )


@pytest.fixture(scope="module")
def ctx():
    return libertem_api.Context.make_with("inline")


@pytest.fixture(scope="module")
def lattice():
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(6):
        zero = (48 + rng.uniform(-1, 1), 48 + rng.uniform(-1, 1))
        frame, indices, _ = gpucorr.cbed_frame(96, 96, zero=zero, a=(27.2, 0.4), b=(-0.3, 29.2),
                                               indices=np.mgrid[-1:2, -1:2], radius=6)
        frames.append(frame[0] + rng.poisson(2.0, size=(96, 96)))
    _, indices, peaks = gpucorr.cbed_frame(96, 96, zero=(48, 48), a=(27.2, 0.4), b=(-0.3, 29.2),
                                           indices=np.mgrid[-1:2, -1:2], radius=6)
    return np.stack(frames).astype(np.float32), np.rint(peaks).astype(int), indices


def naive_sparse_correlation(frame, peaks, pattern, steps):
    """The definition: correlation of the log-scaled frame with the pattern's (2 cs + 1)
    mask centred at each peak + offset, pixels outside the frame 0."""
    cs = pattern.get_crop_size()
    mask = pattern.get_mask((2 * cs + 1, 2 * cs + 1))
    logged = np.log(frame.astype(np.float64) - frame.min() + 1)
    padded = np.pad(logged, cs + steps + 2)
    o = cs + steps + 2
    out = np.zeros((len(peaks), 2 * steps + 1, 2 * steps + 1))
    for p, (py, px) in enumerate(peaks):
        for i, dy in enumerate(range(-steps, steps + 1)):
            for j, dx in enumerate(range(-steps, steps + 1)):
                y0, x0 = o + py + dy - cs, o + px + dx - cs
                out[p, i, j] = (padded[y0:y0 + 2 * cs + 1, x0:x0 + 2 * cs + 1] * mask).sum()
    return out


@needs_libertem
def test_sparse_udf_is_its_definition_and_independent_of_tiling(ctx, lattice):
    frames, peaks, _ = lattice
    pattern = patterns.RadialGradient(radius=6)
    results = []
    for parts, tileshape in [(1, None), (3, (1, 96, 96)), (2, (2, 96, 96))]:
        ds = libertem_memory.MemoryDataSet(data=frames, num_partitions=parts, tileshape=tileshape)
        res = ctx.run_udf(dataset=ds, udf=SparseCorrelationUDF(peaks=peaks,
                                                               match_pattern=pattern, steps=3))
        results.append({k: np.asarray(v.data) for k, v in res.items()})
    for other in results[1:]:
        for name in results[0]:
            np.testing.assert_array_equal(other[name], results[0][name], err_msg=name)
    corr = results[0]["corr"].reshape(len(frames), len(peaks), 7, 7)
    for n in (0, 5):
        want = naive_sparse_correlation(frames[n], peaks, pattern, 3)
        np.testing.assert_allclose(corr[n], want, rtol=2e-5, atol=2e-4 * np.abs(want).max())
        # evaluated as a map: the integer argmax, shifted by peak - steps
        flat = want.reshape(len(peaks), -1).argmax(axis=1)
        expected = np.stack(np.unravel_index(flat, (7, 7)), axis=1) + peaks - 3
        np.testing.assert_array_equal(results[0]["centers"][n], expected)
    assert np.abs(results[0]["refineds"][0] - peaks).max() < 1.5


@needs_libertem
def test_sparse_udf_arguments(ctx, lattice):
    frames, peaks, _ = lattice
    pattern = patterns.RadialGradient(radius=6)
    with pytest.raises(ValueError, match="does not support zero_shift"):
        SparseCorrelationUDF(peaks=peaks, match_pattern=pattern, steps=3, zero_shift=(2, 7))
    ds = libertem_memory.MemoryDataSet(data=frames, num_partitions=1)
    with pytest.raises(ValueError, match="steps must be an int >= 0; got -1"):
        ctx.run_udf(dataset=ds, udf=SparseCorrelationUDF(peaks=peaks, match_pattern=pattern,
                                                         steps=-1))
    with pytest.raises(ValueError, match="does not upsample"):
        ctx.run_udf(dataset=ds, udf=SparseCorrelationUDF(peaks=peaks, match_pattern=pattern,
                                                         steps=2, upsample=True))


@needs_libertem
@pytest.mark.parametrize("cls", [FastCorrelationUDF, FullFrameCorrelationUDF,
                                 SparseCorrelationUDF])
def test_peer_refinement_mixins_run_on_gpucorr_udfs(ctx, lattice, cls):
    """libertem-blobfinder's ``FastmatchMixin`` (its lattice fit per frame, in
    ``postprocess``, with ``get_zero_shift``) runs on gpucorr's UDFs and finds each
    frame's lattice."""
    refinement = pytest.importorskip("libertem_blobfinder.udf.refinement")
    grm = pytest.importorskip("libertem_blobfinder.common.gridmatching")
    frames, peaks, indices = lattice

    class Refine(refinement.FastmatchMixin, cls):
        pass

    udf = Refine(peaks=peaks, indices=indices, start_zero=np.array((48.0, 48.0)),
                 start_a=np.array((27.2, 0.4)), start_b=np.array((-0.3, 29.2)),
                 match_pattern=patterns.RadialGradient(radius=6), matcher=grm.Matcher(),
                 steps=3, zero_shift=None, upsample=False)
    assert udf.get_zero_shift(0).tolist() == [0, 0]
    res = ctx.run_udf(dataset=libertem_memory.MemoryDataSet(data=frames, num_partitions=2), udf=udf)
    np.testing.assert_allclose(np.asarray(res["a"].data), np.tile((27.2, 0.4), (6, 1)),
                               atol=0.3)
    refineds = np.asarray(res["refineds"].data)
    zero = np.asarray(res["zero"].data)
    np.testing.assert_allclose(zero, refineds[:, 4], atol=0.5)  # index (0, 0) is peak 4


@needs_libertem
def test_get_zero_shift():
    peaks = np.array([[10, 10]])
    udf = FastCorrelationUDF(peaks=peaks, match_pattern=patterns.Circular(3), zero_shift=(2, -1))
    np.testing.assert_array_equal(udf.get_zero_shift(5), (2, -1))
    np.testing.assert_array_equal(udf.get_zero_shift(), (2, -1))
    # as the UDF sees per-frame AUX data while it runs: the partition's rows
    udf = FastCorrelationUDF(peaks=peaks, match_pattern=patterns.Circular(3),
                             zero_shift=np.array([[1, 2], [3, 4]]))
    np.testing.assert_array_equal(udf.get_zero_shift(1), (3, 4))
    no_shift = FastCorrelationUDF(peaks=peaks, match_pattern=patterns.Circular(3))
    np.testing.assert_array_equal(no_shift.get_zero_shift(3), (0, 0))


@needs_libertem
def test_run_fastcorrelation_and_run_blobfinder(ctx, lattice):
    frames, peaks, _ = lattice
    pattern = patterns.RadialGradient(radius=6)
    ds = libertem_memory.MemoryDataSet(data=frames, num_partitions=2)
    res = run_fastcorrelation(ctx, ds, peaks.astype(float), pattern, upsample=True)
    want = refine_logged(frames, peaks, pattern, upsample=True)
    np.testing.assert_array_equal(np.asarray(res["refineds"].data), want.refineds)
    sum_result, centers, refineds, heights, elevations, found = run_blobfinder(
        ctx, ds, pattern, num_peaks=9)
    np.testing.assert_allclose(sum_result, np.log(frames.sum(axis=0) - frames.sum(axis=0).min()
                                                  + 1), rtol=1e-5)
    assert sorted(map(tuple, found)) == sorted(map(tuple, np.asarray(
        gpucorr.get_peaks(sum_result, pattern, 9))))
    assert np.asarray(refineds.data).shape == (6, 9, 2)
