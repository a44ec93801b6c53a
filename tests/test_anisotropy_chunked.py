"""MIL anisotropy in z-blocks (anisotropy_chunked, the one implementation; ``anisotropy`` is it
read as one block): block-size invariance (the same Fabric bit for bit) over chunk sizes, VOI
placements, spacings and sampling parameters; the windowed kernel against the whole kernel;
bounded reads; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctmorph._kernels.mil import NO_LIMIT, mil_counts, mil_counts_window
from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry.anisotropy import anisotropy, anisotropy_chunked, hemisphere_directions
from ctmorph.morphometry.zsource import ArraySource
from ctmorph.phantoms.shapes import random_trabecular


@pytest.fixture(autouse=True)
def _one_thread(threads):
    # Tiny blocks launch one parallel region each; on a loaded 2-core machine every launch can
    # wait for a descheduled thread. The counts are integers per direction (one thread per
    # direction), so the thread count cannot change them (tested in test_anisotropy.py).
    threads(1)


def tilted_cylinder(shape, radius, axis, centre=None) -> np.ndarray:
    """Voxels within ``radius`` of the line through ``centre`` along ``axis`` (voxel units)."""
    shape = tuple(shape)
    c = np.asarray(centre if centre is not None else [(n - 1) / 2 for n in shape], float)
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    p = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) - c
    along = p @ a
    return np.linalg.norm(p - along[..., None] * a, axis=-1) <= radius


def assert_same_fabric(got, want):
    # The per-direction counts are integers and the fit is the same code on the same arrays,
    # so everything must be bitwise equal (no tolerance).
    np.testing.assert_array_equal(got.mil, want.mil)
    np.testing.assert_array_equal(got.directions, want.directions)
    assert got.DA == want.DA
    assert got.tensor == want.tensor
    assert got.eigenvalues == want.eigenvalues
    assert got.eigenvectors == want.eigenvectors
    assert got.as_dict() == want.as_dict()


SHAPE = (26, 22, 23)
BONE = random_trabecular(SHAPE, bv_tv=0.3, scale=1.5, seed=11)


def _cases():
    # tilted cylinder inside the slab: the box (VOI + margin) ends inside the slab, so the
    # whole version's "nearest" extension at the box ends (not the slab's data) is reproduced
    yield "tilted inside", tilted_cylinder(SHAPE, 5.0, (1, 0.5, -0.4))[:, :, :] & (
        np.arange(SHAPE[0])[:, None, None] >= 9) & (np.arange(SHAPE[0])[:, None, None] < 17)
    # tilted cylinder through both slab ends: box = slab in z, edge padding at the true ends
    yield "tilted through", tilted_cylinder(SHAPE, 6.0, (1, -0.6, 0.3))
    # VOI in two z-pieces with a gap: blocks with no VOI sample are skipped
    two = np.zeros(SHAPE, bool)
    two[1:6, 4:18, 3:19] = True
    two[19:25, 6:15, 5:20] = True
    yield "two pieces", two
    yield "whole volume", None


@pytest.mark.parametrize("name, voi", list(_cases()), ids=[c[0] for c in _cases()])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, None])
def test_block_size_invariant(name, voi, chunk):
    spacing = (0.012, 0.009, 0.01)
    want = anisotropy(BONE, voi, spacing=spacing, n_directions=24)
    got = anisotropy_chunked(ArraySource(BONE, voi), spacing=spacing, n_directions=24,
                             chunk_slices=chunk)
    assert_same_fabric(got, want)


@pytest.mark.parametrize(
    "kw",
    [
        {"smooth": 0.0},  # no filter: raw trilinear interpolant
        {"smooth": 1.6},  # radius 6: halo wider than the 1-3 slice blocks
        {"step": 0.031},  # > 2 dz: the previous sample lies 3 slices back
        {"step": 0.004, "line_spacing": 0.013},  # dense sampling, odd pitch
    ],
    ids=["smooth 0", "smooth 1.6", "long step", "dense"],
)
@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_block_size_invariant_for_sampling_parameters(kw, chunk):
    # VOI touching slab end z = 0 and ending inside the slab
    voi = tilted_cylinder(SHAPE, 6.0, (1, 0.3, 0.5), centre=(4, 11, 11))
    spacing = (0.01, 0.01, 0.008)
    want = anisotropy(BONE, voi, spacing=spacing, n_directions=16, **kw)
    got = anisotropy_chunked(ArraySource(BONE, voi), spacing=spacing, n_directions=16,
                             chunk_slices=chunk, **kw)
    assert_same_fabric(got, want)


def test_empty_blocks_and_default_direction_set():
    # bone only in the upper half: lower blocks hold VOI but no bone-marrow boundary
    bone = BONE.copy()
    bone[:12] = False
    voi = tilted_cylinder(SHAPE, 7.0, (1, 0.2, 0.2))
    want = anisotropy(bone, voi, spacing=0.01)
    for chunk in (2, 9):
        got = anisotropy_chunked(ArraySource(bone, voi), spacing=0.01, chunk_slices=chunk)
        assert_same_fabric(got, want)


def test_window_kernel_partitions_sum_to_whole_kernel():
    # Any partition of the padded z range into ownership ranges, windows cut to the documented
    # reach, and directions of both z signs and horizontal ones: the sums are the whole counts.
    rng = np.random.default_rng(3)
    shape = (17, 12, 14)
    field = ndimage.gaussian_filter(rng.random(shape), 1.0).astype(np.float32)
    field = (field - field.min()) / (field.max() - field.min())
    voi = (rng.random(shape) < 0.8).astype(np.uint8)
    fp = np.pad(field, 1, mode="edge")
    vp = np.pad(voi, 1, mode="edge")
    sp = np.array([0.7, 1.0, 0.9])
    dirs = hemisphere_directions(20)
    dirs[::3, 0] *= -1.0  # going down in z
    dirs[1] = (0.0, 0.6, 0.8)  # horizontal
    h, ds = 1.3, 1.6
    reach = int(ds / sp[0]) + 2
    for full in (True, False):
        want = mil_counts(fp, vp, full, sp, dirs, h, ds, 0.5)
        for cuts in ([], [1], [5, 6, 13], list(range(1, 19)), [0, 4, 19]):
            bounds = [-NO_LIMIT, *cuts, NO_LIMIT]
            n_in = np.zeros(len(dirs), np.int64)
            cr = np.zeros(len(dirs), np.int64)
            for o0, o1 in zip(bounds[:-1], bounds[1:], strict=True):
                w0 = int(np.clip(o0 - reach, 0, shape[0] + 2))
                w1 = int(np.clip(o1 + reach, 0, shape[0] + 2))
                a, b = mil_counts_window(
                    np.ascontiguousarray(fp[w0:w1]), np.ascontiguousarray(vp[w0:w1]), full,
                    sp, dirs, h, ds, 0.5, *shape, w0, o0, o1,
                )
                n_in += a
                cr += b
            np.testing.assert_array_equal(n_in, want[0])
            np.testing.assert_array_equal(cr, want[1])
        assert want[0].min() > 0 and want[1].min() > 0  # every direction was exercised


class CountingSource(ArraySource):
    """An ArraySource that records the slice ranges read."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.reads: list[tuple[int, int]] = []

    def read(self, z0, z1):
        self.reads.append((z0, z1))
        return super().read(z0, z1)


def test_reads_are_bounded_blocks():
    shape = (60, 14, 15)
    bone = random_trabecular(shape, bv_tv=0.3, scale=1.5, seed=2)
    src = CountingSource(bone, tilted_cylinder(shape, 5.0, (1, 0.2, 0.3)))
    want = anisotropy(bone, src.voi, spacing=0.01, n_directions=12)
    got = anisotropy_chunked(src, spacing=0.01, n_directions=12, chunk_slices=4)
    assert_same_fabric(got, want)
    # 4 owned slices + reach (int(step/dz) + 2 = 3) + Gaussian radius (3) on each side
    assert max(z1 - z0 for z0, z1 in src.reads) <= 4 + 2 * (3 + 3)
    assert len(src.reads) >= 60 // 4


def test_validation_matches_the_whole_version():
    src = ArraySource(BONE)
    for kw, cls, match in [
        ({"n_directions": 4}, ConfigError, "n_directions"),
        ({"line_spacing": 0.0}, ConfigError, "line_spacing"),
        ({"step": -1.0}, ConfigError, "step"),
        ({"smooth": -1.0}, ConfigError, "smooth"),
        ({"spacing": (1.0, 0.0, 1.0)}, ConfigError, "spacing"),
    ]:
        kw = {"spacing": 1.0, **kw}
        with pytest.raises(cls, match=match):
            anisotropy(BONE, **kw)
        with pytest.raises(cls, match=match):
            anisotropy_chunked(src, **kw)
    for chunk in (0, 1.5, "2"):
        with pytest.raises(ConfigError, match="chunk_slices must be a positive integer"):
            anisotropy_chunked(src, spacing=1.0, chunk_slices=chunk)
    with pytest.raises(SegmentationError, match="VOI is empty"):
        anisotropy_chunked(ArraySource(BONE, np.zeros(SHAPE, bool)), spacing=1.0)
    solid = np.ones((9, 8, 8), bool)
    with pytest.raises(SegmentationError, match="no bone-marrow boundary"):
        anisotropy(solid, spacing=1.0)
    with pytest.raises(SegmentationError, match="no bone-marrow boundary"):
        anisotropy_chunked(ArraySource(solid), spacing=1.0, chunk_slices=2)
    thin = BONE[:1]
    with pytest.raises(ConfigError, match="at least 2 voxels"):
        anisotropy(thin, spacing=1.0)
    with pytest.raises(ConfigError, match="at least 2 voxels"):
        anisotropy_chunked(ArraySource(thin), spacing=1.0)
