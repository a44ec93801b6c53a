"""Bone axis fit and the axis-aligned view of a scan (ctmorph.segment.axis), on lines and
volumes with analytic truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.segment.axis import (
    AlignedSource,
    BoneAxis,
    SlabSource,
    fit_bone_axis,
    mask_centroids,
)


def _direction(tilt_deg: float, azimuth_deg: float) -> np.ndarray:
    t, a = math.radians(tilt_deg), math.radians(azimuth_deg)
    return np.array([math.cos(t), math.sin(t) * math.sin(a), math.sin(t) * math.cos(a)])


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    c = abs(float(u @ v)) / (np.linalg.norm(u) * np.linalg.norm(v))
    return math.degrees(math.acos(min(1.0, c)))


def test_fit_recovers_a_tilted_line_despite_condyles_and_outliers():
    rng = np.random.default_rng(0)
    dz, n = 0.01, 300
    u = _direction(8.0, 40.0)
    p0 = np.array([0.0, 1.0, 1.2])
    z = np.arange(n) * dz
    cen = p0[1:] + (z / u[0])[:, None] * u[1:]
    cen += rng.normal(0.0, 0.001, cen.shape)  # centroids to ~0.1 voxel
    cen[:60, 0] += 0.05  # condyle end: notch pulls the centroid 50 µm away
    out = rng.choice(np.arange(60, n), 5, replace=False)
    cen[out] += 0.3  # debris fused to the bone in a few slices
    valid = np.ones(n, dtype=bool)
    cen[-4:] = np.nan  # slices without a cross-section
    valid[-4:] = False
    axis = fit_bone_axis(cen, valid, dz=dz)
    # slope SE ~ 0.001 / (sqrt(230) * 0.66 mm) = 1e-4 rad = 0.006 deg: 0.03 deg is 5 SE
    assert axis.tilt_deg == pytest.approx(8.0, abs=0.03)
    assert _angle_deg(axis.direction, u) < 0.03
    assert axis.direction[0] > 0
    # the point lies on the true line
    t = (axis.point[0] - p0[0]) / u[0]
    assert np.linalg.norm(axis.point - (p0 + t * u)) < 0.002
    # condyle slices and outliers carry no weight
    assert 200 <= axis.n_slices_used <= n - 60 - 5 - 4
    assert axis.residual_mm < 0.003


def test_fit_of_an_untilted_exact_line_and_at_z():
    cen = np.tile([0.5, 0.7], (50, 1))
    axis = fit_bone_axis(cen, np.ones(50), dz=0.02, z0_mm=1.0)
    assert axis.tilt_deg == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(axis.at_z(2.0), [2.0, 0.5, 0.7], atol=1e-12)
    assert axis.n_slices_used == 50


def test_fit_bad_input():
    with pytest.raises(ConfigError, match=r"centroids_mm must be a \(Z, 2\) array"):
        fit_bone_axis(np.zeros((10, 3)), np.ones(10), dz=0.01)
    with pytest.raises(ConfigError, match="weights_or_valid must have shape"):
        fit_bone_axis(np.zeros((10, 2)), np.ones(9), dz=0.01)
    with pytest.raises(ConfigError, match="dz must be a positive slice spacing"):
        fit_bone_axis(np.zeros((10, 2)), np.ones(10), dz=0.0)
    with pytest.raises(ConfigError, match="finite and >= 0"):
        fit_bone_axis(np.zeros((10, 2)), -np.ones(10), dz=0.01)
    with pytest.raises(SegmentationError, match="cannot fit the bone axis: 3 usable slices"):
        w = np.zeros(40)
        w[:3] = 1
        fit_bone_axis(np.zeros((40, 2)), w, dz=0.01)


class ArraySource:
    """An in-memory slab source that records which base slices were read."""

    def __init__(self, grey: np.ndarray, spacing, no_data_zero=False):
        self.name = "analytic"
        self.grey = grey
        self.shape = grey.shape
        self.dtype = grey.dtype
        self.gmax = int(np.iinfo(grey.dtype).max)
        self.spacing = spacing
        self.no_data_zero = no_data_zero
        self.sections = np.arange(grey.shape[0]) + 100
        self.reads: list[tuple[int, int]] = []

    def read_slab(self, z0, z1):
        self.reads.append((z0, z1))
        return self.grey[z0:z1].copy()


SPACING = (0.012, 0.01, 0.01)  # anisotropic: the mm/index conversion is exercised
SHAPE = (90, 72, 72)
TILT, AZIMUTH = 8.0, 60.0
R_MM, PLATE_MM = 0.2, 0.06


def _tilted_cylinder_with_plate() -> np.ndarray:
    """Grey: background 20, a cylinder (radius 0.2 mm) 100 along a tilted axis through the
    volume centre, a plate 250 across it (0.06 mm thick, perpendicular to the axis, at the
    centre)."""
    u = _direction(TILT, AZIMUTH)
    idx = np.indices(SHAPE, dtype=np.float64)
    c = (np.array(SHAPE) - 1) / 2.0
    p = np.stack([(idx[k] - c[k]) * SPACING[k] for k in range(3)], axis=-1)
    t = p @ u
    r = np.linalg.norm(p - t[..., None] * u, axis=-1)
    grey = np.full(SHAPE, 20, dtype=np.uint8)
    grey[r <= R_MM] = 100
    grey[(r <= R_MM) & (np.abs(t) <= PLATE_MM / 2)] = 250
    return grey


@pytest.fixture(scope="module")
def tilted():
    grey = _tilted_cylinder_with_plate()
    cen, area = mask_centroids(grey >= 60, spacing=SPACING)
    axis = fit_bone_axis(cen, area >= 0.5 * np.median(area[area > 0]), dz=SPACING[0])
    return grey, axis


def test_array_source_and_aligned_source_follow_the_protocol(tilted):
    grey, axis = tilted
    base = ArraySource(grey, SPACING)
    assert isinstance(base, SlabSource)
    assert isinstance(AlignedSource(base, axis), SlabSource)


def test_tilted_cylinder_axis_is_recovered_within_0_3_degrees(tilted):
    _, axis = tilted
    assert axis.tilt_deg == pytest.approx(TILT, abs=0.3)
    assert _angle_deg(axis.direction, _direction(TILT, AZIMUTH)) < 0.3


def test_aligned_view_makes_the_cylinder_and_plate_axis_aligned(tilted):
    grey, axis = tilted
    base = ArraySource(grey, SPACING)
    src = AlignedSource(base, axis)
    assert src.shape == SHAPE and src.spacing == SPACING and src.dtype == np.uint8
    assert src.no_data_zero
    al = src.read_slab(0, SHAPE[0])
    # the cylinder runs along z through the slice centre in the aligned view (slices away
    # from the ends, which leave the base volume): centroids within 0.3 px of the centre
    cen, area = mask_centroids(al >= 60, spacing=(1.0, 1.0, 1.0))
    mid = slice(20, 70)
    np.testing.assert_allclose(cen[mid], (SHAPE[1] - 1) / 2.0, atol=0.3)
    # cross-section area constant: pi r^2 within 3 % (digitisation of a 20-px radius disc);
    # 5 % next to the plate, whose interpolated edge (250 to 20) crosses 60 farther out
    disc = math.pi * R_MM**2 / (SPACING[1] * SPACING[2])
    np.testing.assert_allclose(area[mid], disc, rtol=0.05)
    near_plate = np.zeros(SHAPE[0], dtype=bool)
    near_plate[np.flatnonzero((al >= 175).any(axis=(1, 2)))] = True
    near_plate = np.convolve(near_plate, np.ones(7), mode="same") > 0
    far = np.arange(SHAPE[0])[mid][~near_plate[mid]]
    np.testing.assert_allclose(area[far], disc, rtol=0.03)
    # the plate fills whole slices: 0.06 mm = 5 slices of 0.012 mm (+1 for partial ones),
    # where the tilted plate of the base touches 5 + 2 R tan(8 deg) / dz = 9.7 slices
    plate_base = np.flatnonzero(((grey >= 175).sum(axis=(1, 2))) > 0)
    fill = (al >= 175).sum(axis=(1, 2)) / disc
    plate_al = np.flatnonzero(fill > 0.5)
    assert plate_al.size in (5, 6)
    assert np.count_nonzero(fill > 0.02) <= 7
    assert plate_base.size >= 9
    assert np.all(fill[plate_al[1:-1]] > 0.9)
    # the plate's aligned slices map to the base sections around the volume centre, where
    # the axis crosses the plate
    k = int(round(plate_al.mean()))
    assert abs(src.sections[k] - (100 + (SHAPE[0] - 1) / 2.0)) <= 1.0


def test_aligned_view_reads_bounded_slabs_and_zeros_outside(tilted):
    grey, axis = tilted
    base = ArraySource(grey, SPACING)
    src = AlignedSource(base, axis)
    slab = src.read_slab(40, 48)
    assert slab.shape == (8, SHAPE[1], SHAPE[2])
    (b0, b1), = base.reads
    # 8 slices + the tilt across the slice diagonal (72 px x sqrt 2 x 0.01 mm x tan 8 deg /
    # 0.012 mm = 11.9 slices at most) + the interpolation margin (3)
    assert b1 - b0 <= 8 + 12 + 3 and b1 - b0 < SHAPE[0] / 3
    np.testing.assert_array_equal(slab, src.read_slab(0, SHAPE[0])[40:48])
    np.testing.assert_array_equal(src.read_slice(44), slab[4])
    # the first aligned slice leaves the base volume on one side: exact zeros there (no
    # data), never zero where the base has data
    first = src.read_slab(0, 1)[0]
    assert np.count_nonzero(first == 0) > 0
    jj, ii = np.mgrid[0:72:7, 0:72:7]
    pts = np.stack([np.zeros(jj.size), jj.ravel(), ii.ravel()], axis=1)
    b = src.to_base_index(pts)
    outside = np.any((b < -0.5) | (b > np.array(SHAPE) - 0.5), axis=1)
    assert outside.any() and not outside.all()
    np.testing.assert_array_equal(first[jj.ravel(), ii.ravel()] == 0, outside)
    # inside the base, no zeros: the mid slices' central square maps into the base
    interior = src.read_slab(30, 60)
    assert interior[:, 12:60, 12:60].min() >= 20
    with pytest.raises(IndexError, match="out of range for analytic"):
        src.read_slab(80, 91)


def test_untilted_axis_gives_the_base_back():
    grey = _tilted_cylinder_with_plate()
    base = ArraySource(grey, SPACING)
    axis = BoneAxis(tilt_deg=0.0, direction=np.array([1.0, 0.0, 0.0]),
                    point=np.array([0.0, 0.355, 0.355]), n_slices_used=90)
    src = AlignedSource(base, axis)
    np.testing.assert_array_equal(src.sections, base.sections)
    np.testing.assert_array_equal(src.read_slab(10, 30), np.maximum(grey[10:30], 1))


def test_round_roi_zeros_stay_no_data(tilted):
    grey, axis = tilted
    g = grey.copy()
    g[:, :, :10] = 0  # no data in a band of the base
    src = AlignedSource(ArraySource(g, SPACING, no_data_zero=True), axis)
    al = src.read_slab(40, 50)
    assert np.all(al[:, :, :5] == 0)
    assert np.all(al[:, 20:50, 20:50] > 0)


def test_aligned_source_bad_arguments(tilted):
    grey, axis = tilted
    base = ArraySource(grey, SPACING)
    with pytest.raises(ConfigError, match="order must be 0, 1, 2 or 3"):
        AlignedSource(base, axis, order=5)
    with pytest.raises(ConfigError, match="axis must be a BoneAxis"):
        AlignedSource(base, (1.0, 0.0, 0.0))
