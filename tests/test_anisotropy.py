"""MIL fabric tensor and degree of anisotropy (ctmorph.morphometry.anisotropy)."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import ndimage

from ctmorph._kernels.mil import GOLDEN_ANGLE, mil_counts
from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry.anisotropy import Fabric, anisotropy, hemisphere_directions
from ctmorph.phantoms.shapes import ball, plates, random_trabecular, rod_lattice, tilted_plates

# ---------------------------------------------------------------------------------------------
# oracle: the same documented line geometry, sampled with numpy and scipy's map_coordinates


def naive_mil_counts(field, voi, spacing, w, index, h, ds, level=0.5):
    """Pure-numpy MIL counts for one direction (see ctmorph._kernels.mil for the geometry)."""
    shape = np.array(field.shape)
    sp = np.asarray(spacing, float)
    w = np.asarray(w, float)
    axis = int(np.argmin(np.abs(w)))
    e = np.zeros(3)
    e[axis] = 1.0
    u = np.cross(w, e)
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    theta = index * GOLDEN_ANGLE
    u, v = np.cos(theta) * u + np.sin(theta) * v, np.cos(theta) * v - np.sin(theta) * u
    lo, hi = np.zeros(3), (shape - 1) * sp
    c = (lo + hi) / 2
    n_u = math.ceil(2 * np.sum(np.abs(u) * (hi - lo) / 2) / h)
    n_v = math.ceil(2 * np.sum(np.abs(v) * (hi - lo) / 2) / h)
    n_in = crossings = 0
    for iu in range(n_u):
        for iv in range(n_v):
            p0 = c + (iu - 0.5 * (n_u - 1)) * h * u + (iv - 0.5 * (n_v - 1)) * h * v
            with np.errstate(divide="ignore", invalid="ignore"):
                t0, t1 = (lo - p0) / w, (hi - p0) / w
            if np.any((w == 0) & ((p0 < lo) | (p0 >= hi))):
                continue
            s_in = np.max(np.minimum(t0, t1)[w != 0])
            s_out = np.min(np.maximum(t0, t1)[w != 0])
            if not s_out > s_in:
                continue
            s = s_in + (np.arange(int((s_out - s_in) / ds)) + 0.5) * ds
            q = (p0[:, None] + s[None, :] * w[:, None]) / sp[:, None]
            phase = ndimage.map_coordinates(field, q, order=1, mode="nearest") > level
            near = np.clip(np.floor(q + 0.5).astype(int), 0, (shape - 1)[:, None])
            inside = voi[near[0], near[1], near[2]].astype(int)
            n_in += int(inside.sum())
            change = phase[1:] != phase[:-1]
            crossings += int((inside[1:] + inside[:-1])[change].sum())
    return n_in, crossings


def test_kernel_matches_numpy_oracle():
    rng = np.random.default_rng(4)
    field = ndimage.gaussian_filter(rng.random((9, 12, 10)), 0.8).astype(np.float32)
    field = (field - field.min()) / (field.max() - field.min())
    scattered = rng.random(field.shape) < 0.7
    # a ball: long runs of samples outside the VOI, which the kernel does not interpolate
    zz, yy, xx = np.indices(field.shape)
    ball_voi = (zz - 4) ** 2 + (yy - 6) ** 2 + (xx - 5) ** 2 <= 12
    sp = np.array([0.02, 0.013, 0.017])
    dirs = hemisphere_directions(12)
    for voi_use, full in ((np.ones(field.shape, bool), True), (scattered, False),
                          (ball_voi, False)):
        n_in, cr = mil_counts(
            np.pad(field, 1, mode="edge"), np.pad(voi_use.view(np.uint8), 1, mode="edge"),
            full, sp, dirs, 0.011, 0.007, 0.5,
        )
        for d, w in enumerate(dirs):
            want = naive_mil_counts(field, voi_use, sp, w, d, 0.011, 0.007)
            assert (n_in[d], cr[d]) == want


# ---------------------------------------------------------------------------------------------
# analytic structures


@pytest.mark.parametrize("normal", [(1, 0, 0), (0, 0, 1), (1, 1, 1), (1, 2, 3), (0.3, -1, 0.2)])
def test_tilted_plates_are_fully_anisotropic_with_the_normal_as_shortest_mil(normal):
    period = 10.0
    fab = anisotropy(tilted_plates(56, 4, 6, normal), spacing=1.0)
    assert fab.DA > 0.9
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    assert abs(np.dot(fab.eigenvectors[0], n)) > math.cos(math.radians(2))
    # MIL along the normal is one period (one bone + one marrow intercept)
    assert fab.eigenvalues[0] == pytest.approx(period, rel=0.06)


def test_rods_along_one_axis_give_that_axis_as_main_direction():
    rods = rod_lattice((48, 48, 48), 8, 4.0, axes=(0,))
    fab = anisotropy(rods, spacing=0.01)
    assert fab.DA > 0.9
    assert abs(fab.main_direction[0]) > math.cos(math.radians(2))
    assert fab.main_direction == fab.eigenvectors[2]


@pytest.mark.parametrize(
    "volume",
    [rod_lattice(60, 10, 3.5), random_trabecular(80, scale=2.0, seed=3)],
    ids=["cubic rod lattice", "isotropic random sponge"],
)
def test_isotropic_structures_have_small_da(volume):
    assert anisotropy(volume, spacing=0.01).DA < 0.15


def test_voi_wall_is_not_a_surface():
    vol = plates(48, 4, 6, axis=0)
    voi = ball(48, 20)
    fab = anisotropy(vol, voi, spacing=1.0)
    assert fab.DA > 0.9
    assert fab.eigenvalues[0] == pytest.approx(10.0, rel=0.05)
    assert abs(fab.eigenvectors[0][0]) > math.cos(math.radians(2))


# ---------------------------------------------------------------------------------------------
# spacing


def _elongated_sponge(shape, sigma, seed=0):
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return f > np.quantile(f, 0.75)


def test_anisotropic_spacing_measures_the_physical_structure():
    fine = _elongated_sponge((96, 64, 64), (5.0, 2.0, 2.0))  # 1 mm voxels, long along z
    coarse = fine[::2]  # the same structure scanned with dz = 2 mm
    phys = anisotropy(fine, spacing=(1.0, 1.0, 1.0))
    scan = anisotropy(coarse, spacing=(2.0, 1.0, 1.0))
    assert scan.DA == pytest.approx(phys.DA, abs=0.06)
    assert phys.DA > 0.35
    assert abs(scan.main_direction[0]) > math.cos(math.radians(5))
    ignored = anisotropy(coarse, spacing=(1.0, 1.0, 1.0))  # spacing forgotten: z squashed
    assert abs(ignored.DA - phys.DA) > 0.2


def test_tilted_plates_on_anisotropic_grid_report_the_physical_normal():
    normal = (1.0, 1.0, 1.0)
    vol = tilted_plates((40, 80, 80), 4.0, 6.0, normal, spacing=(2.0, 1.0, 1.0))
    fab = anisotropy(vol, spacing=(2.0, 1.0, 1.0))
    n = np.asarray(normal) / math.sqrt(3.0)
    assert abs(np.dot(fab.eigenvectors[0], n)) > math.cos(math.radians(3))
    assert fab.DA > 0.9


def test_scaling_spacing_scales_mil_not_da():
    vol = random_trabecular(40, seed=5)
    a = anisotropy(vol, spacing=0.01)
    b = anisotropy(vol, spacing=0.02)
    assert b.DA == pytest.approx(a.DA, abs=1e-12)
    np.testing.assert_allclose(b.eigenvalues, 2 * np.array(a.eigenvalues), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# determinism, result type, validation


def test_deterministic_and_thread_count_independent():
    vol = random_trabecular(48, seed=9)
    voi = ball(48, 21)
    first = anisotropy(vol, voi, spacing=0.009)
    second = anisotropy(vol, voi, spacing=0.009)
    assert first.as_dict() == second.as_dict()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = anisotropy(vol, voi, spacing=0.009)
        numba.set_num_threads(2)
        two = anisotropy(vol, voi, spacing=0.009)
    finally:
        numba.set_num_threads(before)
    assert one.as_dict() == two.as_dict()
    np.testing.assert_array_equal(one.mil, two.mil)


def test_result_fields_and_units():
    # 33 voxel centres span exactly 4 periods of 8 voxels along x
    fab = anisotropy(plates(33, 3, 5, axis=2), spacing=0.01)
    assert isinstance(fab, Fabric)
    row = fab.as_dict()
    assert set(row) == {"DA", "MIL.min", "MIL.mid", "MIL.max", "MIL.dir.z", "MIL.dir.y",
                        "MIL.dir.x"}
    # mm: one period of 8 voxels (ellipsoid fit over all directions of a small box)
    assert row["MIL.min"] == pytest.approx(0.08, rel=0.1)
    assert row["MIL.max"] == math.inf  # no intercept along the plates
    assert row["DA"] == 1.0
    assert fab.directions.shape == (128, 3) and fab.mil.shape == (128,)
    assert all(abs(np.linalg.norm(v) - 1) < 1e-12 for v in fab.eigenvectors)


def test_validation():
    vol = random_trabecular(16)
    with pytest.raises(ConfigError, match="n_directions"):
        anisotropy(vol, spacing=1.0, n_directions=4)
    with pytest.raises(ConfigError, match="line_spacing"):
        anisotropy(vol, spacing=1.0, line_spacing=0.0)
    with pytest.raises(ConfigError, match="smooth"):
        anisotropy(vol, spacing=1.0, smooth=-1.0)
    with pytest.raises(SegmentationError, match="no bone-marrow boundary"):
        anisotropy(np.ones((8, 8, 8), bool), spacing=1.0)
    with pytest.raises(SegmentationError, match="empty"):
        anisotropy(vol, np.zeros_like(vol), spacing=1.0)
