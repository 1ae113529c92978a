"""The measured example behind each deliberate difference in docs/migration.md.

Runs libertem-blobfinder 0.6.1 (the test extra installs it) and gpucorr on the
same inputs and prints one line per difference: what each gives against the
truth. Positions are in pixels; synthetic frames from ``gpucorr.cbed_frame``
with fixed seeds, so the figures do not depend on the machine beyond float
rounding.

    .venv/bin/python bench/migration_examples.py
"""
import numpy as np

import gpucorr
from gpucorr import masks, patterns

import libertem_blobfinder.base.correlation as lbc
import libertem_blobfinder.base.masks as lbm
import libertem_blobfinder.common.correlation as lcc
import libertem_blobfinder.common.patterns as lbp


def rms(err):
    return float(np.sqrt(np.mean(np.sum(np.square(err), axis=-1))))


def lattice(seed=3, shape=(256, 256), radius=8):
    rng = np.random.default_rng(seed)
    zero = np.array(shape) / 2 + rng.uniform(-0.5, 0.5, 2)
    frame, _, true = gpucorr.cbed_frame(*shape, zero=zero, a=(30.3, 1.7), b=(-1.4, 29.6),
                                        indices=np.mgrid[-3:4, -3:4], radius=radius,
                                        all_equal=True)
    return frame, true, np.rint(true).astype(int)


def upsampling():
    frame, true, peaks = lattice()
    rows = []
    for up in (True, 20):
        theirs = lcc.process_frames_fast(lbp.RadialGradient(8), frame, peaks, upsample=up)[1][0]
        ours = gpucorr.process_frames_fast(patterns.RadialGradient(8), frame, peaks,
                                           upsample=up)[1][0]
        rows.append((up, rms(theirs - true), rms(ours - true),
                     float(np.abs((theirs - true)[:, 1]).mean()),
                     float(np.abs((theirs - true)[:, 0]).mean())))
    return rows


def asymmetric_template():
    """A UserTemplate of a disk with a bright spot off-centre: the peer matches it
    mirrored, so the found position moves by twice the spot's offset's effect."""
    shape = (128, 128)
    frame, _, true = gpucorr.cbed_frame(*shape, zero=(64.3, 63.8), a=(30, 0), b=(0, 30),
                                        indices=np.array([[0, 0]]), radius=6)
    y, x = np.mgrid[:shape[0], :shape[1]]
    frame = frame.copy()
    frame[0] += 3 * np.exp(-((y - 64.3) ** 2 + (x - 67.8) ** 2) / 2)  # spot 4 px right
    t = masks.circular(10, 10, 21, 21, 6).astype(np.float32)
    t += 3 * np.exp(-((np.mgrid[:21, :21][0] - 10.0) ** 2 + (np.mgrid[:21, :21][1] - 14.0) ** 2)
                    / 2)
    peaks = np.rint(true).astype(int)
    ours = gpucorr.process_frames_fast(patterns.UserTemplate(t, search=10), frame, peaks)[1][0]
    theirs = lcc.process_frames_fast(lbp.UserTemplate(t, search=10), frame, peaks)[1][0]
    return rms(ours - true), rms(theirs - true)


def odd_size():
    """A UserTemplate of odd size (19 px, a disk centred in it) in 20-px crops: the
    mean error of the refined positions (y, x)."""
    frame, _, true = gpucorr.cbed_frame(128, 128, zero=(64.3, 63.8), a=(30, 0), b=(0, 30),
                                        indices=np.mgrid[-1:2, -1:2], radius=6)
    peaks = np.rint(true).astype(int)
    t = masks.circular(9, 9, 19, 19, 6, antialiased=True)
    ours = gpucorr.process_frames_fast(patterns.UserTemplate(t, search=10), frame, peaks)[1][0]
    theirs = lcc.process_frames_fast(lbp.UserTemplate(t, search=10), frame, peaks)[1][0]
    return (ours - true).mean(axis=0), (theirs - true).mean(axis=0)


def rectangle():
    return int(masks.rectangular(1, 2, 2, 3, 6, 8).sum()), int(lbm.rectangular(1, 2, 2, 3, 6, 8).sum())


def sparse_circles():
    ours = masks.sparse_circular_multi_stack([0], [3.6], [4.7], 10, 10, 2.5).todense()[0]
    theirs = lbm.sparse_circular_multi_stack([0], [3.6], [4.7], 10, 10, 2.5).todense()[0]
    y, x = np.mgrid[:10, :10]
    return ([float(np.mean(y[m])), float(np.mean(x[m]))] for m in (ours, theirs))


def main():
    print("upsample  peer RMS  gpucorr RMS  peer mean |dx|  peer mean |dy|  (radius-8 disks, "
          "noise-free, 49 peaks)")
    for up, p, g, dx, dy in upsampling():
        print(f"{up!s:8}  {p:.4f}    {g:.4f}       {dx:.4f}          {dy:.4f}")
    ours, theirs = asymmetric_template()
    print(f"asymmetric UserTemplate: gpucorr RMS {ours:.3f} px, peer {theirs:.3f} px")
    ours, theirs = odd_size()
    print(f"odd (19 px) UserTemplate, mean error (y, x): gpucorr ({ours[0]:.2f}, {ours[1]:.2f}),"
          f" peer ({theirs[0]:.2f}, {theirs[1]:.2f})")
    ours, theirs = rectangle()
    print(f"rectangular(1, 2, 2, 3, 6, 8): gpucorr {ours} px set (2 x 3), peer {theirs}")
    ours, theirs = sparse_circles()
    print(f"sparse_circular_multi_stack at (4.7, 3.6), r 2.5: centroid gpucorr "
          f"({ours[0]:.2f}, {ours[1]:.2f}), peer ({theirs[0]:.2f}, {theirs[1]:.2f})")
    ours, theirs = sparse_udf_tiling()
    print(f"SparseCorrelationUDF, tiles of 1 frame against 8 frames: largest change of a "
          f"refined position gpucorr {ours:.3g} px, peer {theirs:.3g} px")


def sparse_udf_tiling():
    """The sparse UDF on one dataset with two tilings: the largest change of a refined
    position, gpucorr and the peer."""
    from libertem.api import Context
    from libertem.io.dataset.memory import MemoryDataSet
    import libertem_blobfinder.udf.correlation as lbu
    from gpucorr.libertem import SparseCorrelationUDF
    rng = np.random.default_rng(5)
    frames = []
    for _ in range(8):
        frame, _, true = gpucorr.cbed_frame(64, 64, zero=(32.3, 31.6), a=(15.2, 0.5),
                                            b=(-0.4, 15.1), indices=np.mgrid[-1:2, -1:2],
                                            radius=4)
        # a different dark level per frame (detector offset drift)
        frames.append(frame[0] * 50 + rng.poisson(2.0, (64, 64)) + rng.uniform(0, 200))
    frames = np.stack(frames).astype(np.float32)
    peaks = np.rint(true).astype(int)
    ctx = Context.make_with("inline")
    changes = []
    for make in (lambda: SparseCorrelationUDF(peaks=peaks, match_pattern=patterns.RadialGradient(4),
                                              steps=3),
                 lambda: lbu.SparseCorrelationUDF(peaks=peaks,
                                                  match_pattern=lbp.RadialGradient(4), steps=3)):
        got = [np.asarray(ctx.run_udf(dataset=MemoryDataSet(data=frames, tileshape=tiles,
                                                            num_partitions=1),
                                      udf=make())["refineds"].data)
               for tiles in ((1, 64, 64), (8, 64, 64))]
        changes.append(float(np.abs(got[0] - got[1]).max()))
    return changes


if __name__ == "__main__":
    main()
