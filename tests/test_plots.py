"""gpucorr.plots: the figures, their labels and limits, save_plots, and bad input."""
import types

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gpucorr import plots  # noqa: E402
from gpucorr.lattice import StrainResult  # noqa: E402

NAMES = ("exx", "eyy", "exy", "rotation")
CAL = types.SimpleNamespace(scan_step=0.5, scan_unit="nm")


def field(shape=(6, 8), seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    maps = (0.01 * x, -0.004 * y, 0.002 * x * y, 0.008 * (x - y))
    return {k: m + 1e-5 * rng.standard_normal(shape) for k, m in zip(NAMES, maps)}


def frame_data(p=12, seed=1):
    rng = np.random.default_rng(seed)
    frame = rng.poisson(5, (128, 128)).astype(np.uint16)
    peaks = np.stack(np.meshgrid(np.arange(20, 120, 30), np.arange(16, 112, 32)), -1)
    peaks = peaks.reshape(-1, 2)[:p].astype(float)
    return frame, peaks, peaks + rng.normal(0, 0.6, peaks.shape)


def images(fig):
    """The map axes (those with an image and a title), in drawing order."""
    return [ax for ax in fig.axes if ax.images and ax.get_title()]


def colorbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.get_ylabel()]


def texts(fig):
    """Window extents of every visible title, axis label and tick label."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    found = []
    for ax in fig.axes:
        items = [ax.title, ax.xaxis.label, ax.yaxis.label]
        for labels, limits, k in ((ax.get_xticklabels(), ax.get_xlim(), 0),
                                  (ax.get_yticklabels(), ax.get_ylim(), 1)):
            lo, hi = sorted(limits)  # tick labels outside the view are not drawn
            items += [t for t in labels if lo - 1e-9 <= t.get_position()[k] <= hi + 1e-9]
        found += [(t.get_text(), t.get_window_extent(renderer)) for t in items
                  if t.get_visible() and t.get_text()]
        if ax.get_legend() is not None:
            found.append(("legend", ax.get_legend().get_window_extent(renderer)))
    return found, fig.bbox


def assert_clean(fig):
    """No two labels overlap and none leaves the figure."""
    found, box = texts(fig)
    for text, bb in found:
        assert bb.x0 >= box.x0 - 1 and bb.x1 <= box.x1 + 1, f"{text!r} leaves the figure"
        assert bb.y0 >= box.y0 - 1 and bb.y1 <= box.y1 + 1, f"{text!r} leaves the figure"
    for i, (a, ba) in enumerate(found):
        for b, bb in found[i + 1:]:
            overlap = min(ba.x1, bb.x1) - max(ba.x0, bb.x0), min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            assert min(overlap) <= 1, f"{a!r} overlaps {b!r}"


def test_strain_figure_labels_and_shared_symmetric_limits():
    maps = field()
    fig = plots.strain_figure(maps)
    assert isinstance(fig, Figure)
    axes = images(fig)
    assert [ax.get_title() for ax in axes] == ["exx", "eyy", "exy (tensor shear)", "rotation"]
    assert colorbar_labels(fig) == ["exx (%)", "eyy (%)", "exy (%)", "rotation (mrad)"]
    clims = [ax.images[0].get_clim() for ax in axes]
    assert all(lo == -hi and hi > 0 for lo, hi in clims)
    assert clims[0] == clims[1] == clims[2]
    # strain in %, rotation in mrad, and the limit covers the (robust) maximum
    np.testing.assert_allclose(axes[0].images[0].get_array(), maps["exx"] * 100)
    np.testing.assert_allclose(axes[3].images[0].get_array(), maps["rotation"] * 1e3)
    assert clims[0][1] >= 100 * np.percentile(np.abs(maps["exx"]), 99.5)
    assert [ax.get_xlabel() for ax in axes[2:]] == ["scan x (px)"] * 2
    assert axes[0].get_ylabel() == "scan y (px)"
    assert not any(a.get_gid() == "scale bar" for ax in axes for a in ax.artists)
    assert_clean(fig)  # draws the figure
    assert {t.get_fontsize() for ax in fig.axes for t in ax.get_yticklabels()} == {8}


def test_strain_figure_accepts_strain_result_and_known_widens_limits():
    maps = field()
    result = StrainResult(*(maps[k] for k in NAMES), reference=None)
    known = {k: 3 * v for k, v in maps.items()}
    plain = images(plots.strain_figure(result))[0].images[0].get_clim()
    wide = images(plots.strain_figure(result, known=known))[0].images[0].get_clim()
    assert wide[1] > plain[1] and wide[1] >= 100 * np.percentile(np.abs(known["exx"]), 99.5)
    # a tuple of four maps works too
    assert images(plots.strain_figure(tuple(maps[k] for k in NAMES)))[0].get_title() == "exx"


def test_calibration_gives_physical_axes_and_a_scale_bar():
    fig = plots.strain_figure(field(), calibration=CAL)
    axes = images(fig)
    assert axes[2].get_xlabel() == "scan x (nm)" and axes[0].get_ylabel() == "scan y (nm)"
    assert axes[0].images[0].get_extent() == [0, 4.0, 3.0, 0]  # 8 x 6 positions of 0.5 nm
    for ax in axes:
        bars = [a for a in ax.artists if a.get_gid() == "scale bar"]
        assert len(bars) == 1
        assert bars[0].txt_label.get_text().endswith(" nm")
    assert_clean(fig)
    context = plots.context_figure(np.ones((6, 8)), np.ones((6, 8)), calibration=CAL)
    assert all(any(a.get_gid() == "scale bar" for a in ax.artists) for ax in images(context))


def test_strain_error_figure():
    maps = field()
    known = {k: v + 2e-5 for k, v in maps.items()}
    fig = plots.strain_error_figure(maps, known)
    axes = images(fig)
    assert [ax.get_title() for ax in axes] == [f"{k} error, RMS 2.0e-05" for k in NAMES]
    labels = colorbar_labels(fig)
    assert labels[0] == "exx measured − known ($10^{-5}$)"
    assert labels[3] == "rotation measured − known ($10^{-5}$ rad)"
    clims = [ax.images[0].get_clim() for ax in axes]
    assert clims[0] == clims[1] == clims[2] and clims[0][0] == -clims[0][1]
    np.testing.assert_allclose(axes[0].images[0].get_array(), np.full((6, 8), -2.0))
    assert_clean(fig)


def test_context_figure():
    rng = np.random.default_rng(2)
    vbf, elevations = rng.random((5, 7)), rng.random((5, 7, 9))
    fig = plots.context_figure(vbf, elevations)
    axes = images(fig)
    assert [ax.get_title() for ax in axes] == ["virtual bright field",
                                               "elevation (match quality)"]
    assert colorbar_labels(fig) == ["counts in the central disk",
                                    "elevation (mean of 9 peaks)"]
    np.testing.assert_allclose(axes[1].images[0].get_array(), elevations.mean(axis=-1))
    assert_clean(fig)
    assert len(images(plots.context_figure(vbf, None))) == 1
    assert len(images(plots.context_figure(None, elevations[..., 0]))) == 1


def test_frame_figure_shows_the_shift():
    frame, peaks, refineds = frame_data()
    fig = plots.frame_figure(frame, peaks, refineds, title="frame (1, 2)")
    main = fig.axes[0]
    assert main.get_title() == "frame (1, 2), log scale"
    labels = [t.get_text() for t in main.get_legend().get_texts()]
    assert labels[:2] == ["sum-frame peak", "refined (this frame)"]
    zoom = float(labels[2].split("×")[1])
    assert zoom > 1  # shifts under a pixel are magnified
    quiver = main.collections[0]
    np.testing.assert_allclose(quiver.U, (refineds - peaks)[:, 1] * zoom)
    # two close-ups of the disks that moved most, at true scale
    shifts = np.linalg.norm(refineds - peaks, axis=1)
    close = fig.axes[1:]
    assert len(close) == 2
    assert close[0].get_title().startswith(f"peak {np.argmax(shifts)}: shift")
    # the legend is outside the image
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    legend, image = main.get_legend().get_window_extent(renderer), main.get_window_extent(renderer)
    assert legend.y1 <= image.y0
    assert_clean(fig)
    fixed = plots.frame_figure(frame, peaks, refineds, zoom=3, close_ups=0)
    assert len(fixed.axes) == 1
    assert fixed.axes[0].get_legend().get_texts()[2].get_text() == "shift × 3"


def test_frame_figure_skips_failed_peaks():
    frame, peaks, refineds = frame_data()
    refineds[0] = np.nan
    fig = plots.frame_figure(frame, peaks, refineds)
    assert len(fig.axes[0].collections[0].U) == len(peaks) - 1


def test_save_plots_writes_what_it_is_given(tmp_path):
    maps = field()
    frame, peaks, refineds = frame_data()
    out = tmp_path / "plots"
    paths = plots.save_plots(out, strain=maps, known=maps, vbf=np.ones((6, 8)),
                             elevation=np.ones((6, 8, 3)), frame=frame, peaks=peaks,
                             refineds=refineds, calibration=CAL, dpi=60)
    names = ["strain_maps.png", "strain_error.png", "context.png", "frame_overlay.png"]
    assert paths == [str(out / n) for n in names]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    only = plots.save_plots(tmp_path / "only", strain=maps, dpi=40)
    assert only == [str(tmp_path / "only" / "strain_maps.png")]
    assert plots.save_plots(tmp_path / "none", strain=None) == []


def test_virtual_bright_field():
    rng = np.random.default_rng(3)
    frames = rng.random((3, 4, 20, 24))
    yy, xx = np.mgrid[0:20, 0:24]
    mask = (yy - 9.5) ** 2 + (xx - 12.25) ** 2 <= 4.5 ** 2
    expected = (frames * mask).sum(axis=(-2, -1))
    np.testing.assert_allclose(plots.virtual_bright_field(frames, (9.5, 12.25), 4.5), expected)
    flat = plots.virtual_bright_field(frames.reshape(12, 20, 24), (9.5, 12.25), 4.5)
    np.testing.assert_allclose(flat, expected.ravel())
    # a disk past the edge is cropped to the frame
    edge = plots.virtual_bright_field(frames, (0, 0), 3)
    np.testing.assert_allclose(edge, (frames * ((yy ** 2 + xx ** 2) <= 9)).sum(axis=(-2, -1)))


@pytest.mark.parametrize("call, match", [
    (lambda: plots.strain_figure(np.zeros((4, 4))), "strain: expected a StrainResult"),
    (lambda: plots.strain_figure({"exx": np.zeros((4, 4))}), "strain: missing eyy, exy"),
    (lambda: plots.strain_figure({k: np.zeros((2, 3, 4)) for k in NAMES}),
     r"strain.exx: expected a 2-D \(scan_y, scan_x\) map; got shape \(2, 3, 4\)"),
    (lambda: plots.strain_figure(dict(field(), eyy=np.zeros((3, 3)))),
     r"strain.eyy: expected shape \(6, 8\); got shape \(3, 3\)"),
    (lambda: plots.strain_figure(field(), known=field((5, 5))),
     r"known.exx: expected shape \(6, 8\)"),
    (lambda: plots.strain_error_figure(field(), None), "known: expected a StrainResult"),
    (lambda: plots.context_figure(np.zeros(5), None), "vbf: expected a 2-D"),
    (lambda: plots.context_figure(np.zeros((4, 4)), np.zeros((4, 5))),
     r"elevation: expected shape \(4, 4\)"),
    (lambda: plots.context_figure(None, None), "vbf, elevation: give at least one"),
    (lambda: plots.frame_figure(np.zeros((2, 8, 8)), np.zeros((3, 2)), np.zeros((3, 2))),
     r"frame: expected a 2-D \(H, W\) frame"),
    (lambda: plots.frame_figure(np.zeros((8, 8)), np.zeros((3, 3)), np.zeros((3, 2))),
     r"peaks: expected shape \(P, 2\)"),
    (lambda: plots.frame_figure(np.zeros((8, 8)), np.zeros((3, 2)), np.zeros((4, 2))),
     r"refineds: expected shape \(3, 2\)"),
    (lambda: plots.frame_figure(np.zeros((8, 8)), "abc", np.zeros((4, 2))),
     "peaks: expected a numeric array"),
    (lambda: plots.save_plots("unused", strain=None, frame=np.zeros((8, 8))),
     "frame, peaks, refineds: give all three or none"),
    (lambda: plots.save_plots("unused", strain=None, known=field()), "known: needs strain"),
    (lambda: plots.virtual_bright_field(np.zeros((8, 8)), (4, 4), 2), "frames: expected"),
    (lambda: plots.virtual_bright_field(np.zeros((2, 8, 8)), (4, 4), 0), "radius: must be > 0"),
    (lambda: plots.virtual_bright_field(np.zeros((2, 8, 8)), (40, 4), 2), "center: .* outside"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
