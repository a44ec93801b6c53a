"""Trabecular morphometry on phantoms with known answers.

Discretisation used in the tolerances (all in voxels, voxel centres on the lattice):

- An axis-aligned plate or gap of n voxels has local thickness n + 1 (odd n) or n (even n)
  between voxel centres; the default "corrected" convention subtracts half a voxel, so it reads
  exactly n + 0.5 or n - 0.5 (see ``local_thickness``). Same for the mid-axis spacing behind
  Tb.N: period P reads P + 0.5 (even P) or P - 0.5 (odd P).
- Marching cubes on a binary image is exact on axis-aligned faces, so BS/BV = 2 / t exactly
  when the VOI holds whole periods; on oblique or curved faces the staircase facets overestimate
  the area, by 8-14 % for planes of random orientation (measured while writing these tests;
  planes with 45° normals come out nearly exact).
- Voxelised oblique plates and rods have staircase faces: their thickness is only defined to
  about one voxel.
- Voxelised spheres with off-grid centres read about 1.5 voxel below their diameter (see
  ``test_random_spheres``).
"""

from __future__ import annotations

import numba
import numpy as np
import oracles
import pytest
from skimage.measure import euler_number, label

from ctmorph._kernels.skeleton import OBJ, is_isthmus, is_simple, t6bar, t26, thin
from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry import (
    TRABECULAR_COLUMNS,
    bone_surface,
    medial_skeleton,
    trabecular_morphometry,
)
from ctmorph.phantoms import (
    ball,
    cube_with_cavity,
    plates,
    random_spheres,
    random_trabecular,
    rod_lattice,
    tilted_plates,
    torus,
)


def _parity(n: int) -> float:
    """Corrected local thickness (voxels) of an ideal axis-aligned slab of n voxels."""
    return n + 0.5 if n % 2 else n - 0.5


def _plate_case(t: int, s: int, *, axis: int = 0, offset: int = 0, periods: int = 2):
    """Plates normal to ``axis`` with one period of context on each side of a VOI that runs
    from mid-gap to mid-gap over whole periods."""
    p = t + s
    # first mid-gap voxel after one period: coordinate c with (c + offset) % p == t + s // 2
    start = p + (t + s // 2 - offset) % p
    n = start + (periods + 1) * p + 1
    shape = [20, 20, 20]
    shape[axis] = n
    bone = plates(tuple(shape), t, s, axis=axis, offset=offset)
    voi = np.zeros(bone.shape, bool)
    sl = [slice(4, 16)] * 3
    sl[axis] = slice(start, start + periods * p)
    voi[tuple(sl)] = True
    return bone, voi


@pytest.fixture
def threads():
    before = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(before)


@pytest.mark.parametrize(("t", "s"), [(3, 5), (5, 4), (4, 6), (6, 3)])
def test_axis_aligned_plates(t, s):
    bone, voi = _plate_case(t, s)
    r = trabecular_morphometry(bone, voi, spacing=1.0)
    assert list(r) == list(TRABECULAR_COLUMNS)
    p = t + s
    assert r["TV"] == voi.sum()
    assert r["BV/TV"] == pytest.approx(100.0 * t / p, rel=1e-12)
    assert r["Tb.Th"] == pytest.approx(_parity(t), abs=1e-6)
    assert r["Tb.Sp"] == pytest.approx(_parity(s), abs=1e-6)
    assert r["Tb.Th.SD"] == pytest.approx(0.0, abs=1e-6)
    assert r["Tb.Sp.Max"] == pytest.approx(_parity(s), abs=1e-6)
    # mid-axes one per plate, period p: spacing p ± 0.5
    assert 1.0 / r["Tb.N"] == pytest.approx(_parity(p - 1) + 1.0, abs=1e-6)
    assert abs(1.0 / r["Tb.N"] - p) <= 0.5
    assert r["BS/BV"] == pytest.approx(2.0 / t, rel=1e-9)
    assert r["BS/TV"] == pytest.approx(2.0 / p, rel=1e-9)
    assert r["Tb.N.model"] == pytest.approx((t / p) / _parity(t), rel=1e-9)


def test_uncorrected_convention_on_plates():
    bone, voi = _plate_case(3, 4)
    r = trabecular_morphometry(bone, voi, spacing=1.0, convention="uncorrected")
    assert r["Tb.Th"] == pytest.approx(4.0, abs=1e-6)  # 3 voxels, centre to centre: 4
    assert r["Tb.Sp"] == pytest.approx(4.0, abs=1e-6)  # 4 voxels: 4
    r2 = trabecular_morphometry(bone, voi, spacing=1.0)
    assert r["Tb.N"] == r2["Tb.N"]  # Tb.N does not depend on the convention


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_plates_cut_anywhere(axis):
    # Any phase of the pattern and any VOI box: the plates inside still measure their full
    # thickness and spacing, because the structure outside the VOI is context.
    t, s = 3, 4
    p = t + s
    rng = np.random.default_rng(axis)
    for offset in range(p):
        shape = [40, 18, 18]
        shape[0], shape[axis] = shape[axis], shape[0]
        bone = plates(tuple(shape), t, s, axis=axis, offset=offset)
        lo = int(rng.integers(p, p + 5))
        hi = int(rng.integers(shape[axis] - p - 5, shape[axis] - p))
        voi = np.zeros(bone.shape, bool)
        sl = [slice(3, 15)] * 3
        sl[axis] = slice(lo, hi)
        voi[tuple(sl)] = True
        r = trabecular_morphometry(bone, voi, spacing=1.0)
        assert r["BV/TV"] == pytest.approx(100.0 * bone[voi].mean(), rel=1e-12)
        assert r["Tb.Th"] == pytest.approx(_parity(t), abs=1e-6)
        assert r["Tb.Sp"] == pytest.approx(_parity(s), abs=1e-6)
        assert abs(1.0 / r["Tb.N"] - p) <= 0.5 + 1e-9


def test_voi_cutting_a_plate_in_half_measures_full_thickness():
    t, s = 5, 6
    bone = plates((40, 16, 16), t, s, offset=0)  # plates at z = 0-4, 11-15, 22-26, ...
    voi = np.zeros(bone.shape, bool)
    voi[13:19, 4:12, 4:12] = True  # the upper half of the plate 11-15 and part of the gap
    r = trabecular_morphometry(bone, voi, spacing=1.0)
    assert r["Tb.Th"] == pytest.approx(t + 0.5, abs=1e-6)
    assert r["Tb.Th.Max"] == pytest.approx(t + 0.5, abs=1e-6)
    assert r["Tb.Sp"] == pytest.approx(s - 0.5, abs=1e-6)
    # only the one face inside the VOI counts, not the cut at the VOI wall
    assert r["BS"] == pytest.approx(8 * 8, rel=1e-9)


def test_bone_surface_excludes_voi_wall_and_image_border():
    bone = np.zeros((12, 12, 12), bool)
    bone[:, :, :6] = True  # a half-space of bone touching the image border on five sides
    assert bone_surface(bone, spacing=1.0) == pytest.approx(12 * 12, rel=1e-9)
    voi = np.zeros_like(bone)
    voi[2:7, 3:9, 1:5] = True  # bone only: its walls cut no bone/marrow interface
    assert bone_surface(bone, voi, spacing=1.0) == 0.0
    assert bone_surface(bone, voi, spacing=(0.5, 0.25, 2.0)) == 0.0
    voi[2:7, 3:9, 1:9] = True  # now crosses the interface at x = 5.5: a 5 × 6 patch
    assert bone_surface(bone, voi, spacing=(0.5, 0.25, 2.0)) == pytest.approx(
        5 * 0.5 * 6 * 0.25, rel=1e-9)


@pytest.mark.parametrize("chunk", [2**22, 64])
def test_bone_surface_matches_uncropped_oracle(chunk, monkeypatch):
    # one marching-cubes call, or 8-slice chunks
    monkeypatch.setattr("ctmorph.morphometry.basic._CHUNK_VOXELS", chunk)
    bone = random_trabecular((30, 26, 28), bv_tv=0.3, scale=2.0, seed=6)
    rng = np.random.default_rng(6)
    spacing = (0.02, 0.01, 0.015)
    for _ in range(3):
        voi = np.zeros(bone.shape, bool)
        lo = rng.integers(0, 8, 3)
        hi = np.asarray(bone.shape) - rng.integers(0, 8, 3)
        voi[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
        voi &= rng.random(bone.shape) < 0.9  # ragged VOI
        assert bone_surface(bone, voi, spacing=spacing) == pytest.approx(
            oracles.bone_surface(bone, voi, spacing), rel=1e-9)


@pytest.mark.parametrize("normal", [(1, 1, 0), (1, 2, 3), (0, 1, 3)])
def test_tilted_plates(normal):
    t, s = 4.0, 6.0
    bone = tilted_plates(44, t, s, normal)
    voi = np.zeros(bone.shape, bool)
    voi[11:33, 11:33, 11:33] = True
    r = trabecular_morphometry(bone, voi, spacing=1.0)
    assert r["BV/TV"] == pytest.approx(100.0 * bone[voi].mean(), rel=1e-12)
    assert abs(r["Tb.Th"] - t) <= 1.0
    assert abs(r["Tb.Sp"] - s) <= 1.0
    assert abs(1.0 / r["Tb.N"] - (t + s)) <= 1.0
    assert r["BS/BV"] == pytest.approx(2.0 / t, rel=0.15)  # staircase facets overestimate


def test_rod_lattice():
    pitch, d = 16, 5
    bone = rod_lattice(48, pitch, d)
    voi = np.zeros(bone.shape, bool)
    voi[8:40, 8:40, 8:40] = True
    r = trabecular_morphometry(bone, voi, spacing=1.0)
    # rods are 5 voxels across; the nodes, where three rods cross, are a little thicker
    assert abs(r["Tb.Th"] - d) <= 1.0


def test_random_spheres():
    r_ball = 5.0
    bone = random_spheres(48, r_ball, 10, seed=1)
    res = trabecular_morphometry(bone, np.ones(bone.shape, bool), spacing=1.0)
    # Off-grid centres: the largest ball centred on a voxel misses the far side of the sphere
    # by the centre offset (up to √3/2 voxel), so the mean reads about 2r - 1 voxel between
    # centres, 2r - 1.5 corrected.
    assert 2 * r_ball - 2.0 <= res["Tb.Th"] <= 2 * r_ball
    assert res["BS/BV"] == pytest.approx(3.0 / r_ball, rel=0.12)


def test_anisotropic_plates():
    # 3-voxel plates normal to z with dz = 0.02 mm, gaps of 4 voxels
    bone, voi = _plate_case(3, 4, axis=0)
    r = trabecular_morphometry(bone, voi, spacing=(0.02, 0.01, 0.01))
    # the correction is half the MEAN voxel size: (4 voxels × 0.02) - 0.5 × 0.04 / 3
    h = 0.04 / 3
    assert r["Tb.Th"] == pytest.approx(4 * 0.02 - h / 2, rel=1e-6)
    assert r["Tb.Sp"] == pytest.approx(4 * 0.02 - h / 2, rel=1e-6)
    assert r["BS/BV"] == pytest.approx(2.0 / 0.06, rel=1e-9)
    assert r["TV"] == pytest.approx(voi.sum() * 0.02 * 0.01 * 0.01, rel=1e-12)


def test_doubling_spacing_doubles_lengths(threads):
    bone = random_trabecular(36, bv_tv=0.3, scale=2.0, seed=5)
    voi = np.zeros(bone.shape, bool)
    voi[6:30, 6:30, 6:30] = True
    a = trabecular_morphometry(bone, voi, spacing=(0.02, 0.01, 0.015))
    b = trabecular_morphometry(bone, voi, spacing=(0.04, 0.02, 0.03))
    power = {"TV": 3, "BV": 3, "BV/TV": 0, "BS": 2, "BS/BV": -1, "BS/TV": -1, "Tb.N": -1,
             "Tb.N.model": -1}
    for key, unit in TRABECULAR_COLUMNS.items():
        k = power.get(key, 1)
        assert unit[0] in {3: "mm³", 2: "mm²", 1: "mm", 0: "%", -1: "1/mm"}[k]
        assert b[key] == pytest.approx(a[key] * 2.0**k, rel=1e-6), key
    threads(1)
    assert trabecular_morphometry(bone, voi, spacing=(0.02, 0.01, 0.015)) == a


def test_marrow_space_bounds_separation():
    # Plates with wide gaps, but marrow may only be in a 4-voxel channel along y: marrow balls
    # are then limited by the channel walls, exactly like by bone.
    bone, voi = _plate_case(3, 12)
    marrow_space = np.zeros(bone.shape, bool)
    marrow_space[:, 8:12, :] = True
    voi &= marrow_space | bone
    r = trabecular_morphometry(bone, voi, spacing=1.0, marrow_space=marrow_space)
    free = trabecular_morphometry(bone, voi, spacing=1.0)
    assert r["Tb.Sp"] == pytest.approx(3.5, abs=1e-6)
    assert free["Tb.Sp"] == pytest.approx(11.5, abs=1e-6)
    assert r["Tb.Th"] == free["Tb.Th"]


def test_topological_numbers_match_labelling_oracle():
    # the bit-parallel simple-point test of the thinning kernel against scipy labelling
    rng = np.random.default_rng(0)
    weights = 1 << np.arange(27)
    for density in (0.2, 0.5, 0.8):
        for _ in range(1500):
            cube = rng.random((3, 3, 3)) < density
            nb = int(weights[cube.ravel()].sum())
            n26, n6 = oracles.topological_numbers(cube)
            assert (t26(nb), t6bar(nb)) == (min(n26, 2), min(n6, 2)), cube.astype(int)
            assert is_simple(nb) == (n26 == 1 and n6 == 1)
            assert is_isthmus(nb) == (n26 >= 2 or n6 >= 2)


def test_medial_skeleton_shapes():
    # plates thin to one mid-sheet each, a ball to one voxel, a rod to one voxel per section
    bone = plates((30, 12, 12), 5, 5, offset=-3)  # whole plates at z = 3-7, 13-17, 23-27
    skel = medial_skeleton(bone)
    np.testing.assert_array_equal(np.flatnonzero(skel.any(axis=(1, 2))), [5, 15, 25])
    assert skel[[5, 15, 25]].all()
    assert medial_skeleton(ball(21, 7)).sum() == 1
    rod = rod_lattice(24, 24, 7, axes=(2,))  # one rod along x, touching both x-borders
    skel = medial_skeleton(rod)
    assert (skel.sum(axis=(0, 1)) == 1).all()


def _topology(x):
    """(Euler number, object 26-components, background 6-components), outside = background."""
    padded = np.pad(x, 1)
    return (euler_number(padded, connectivity=3), label(padded, connectivity=3).max(),
            label(~padded, connectivity=1).max())


def test_thinning_kernel_preserves_topology():
    bone = random_trabecular(40, bv_tv=0.25, scale=2.0, seed=8)
    img = np.pad(bone.astype(np.uint8) * np.uint8(OBJ), 1)
    n = int(bone.sum())
    thin(img, np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int32))
    skel = (img[1:-1, 1:-1, 1:-1] & OBJ) != 0
    assert _topology(skel) == _topology(bone)
    assert skel.sum() < 0.2 * bone.sum()


@pytest.mark.parametrize("shape", ["torus", "cavity", "rods"])
def test_medial_skeleton_keeps_topology_of_interior_shapes(shape):
    bone = {"torus": torus(40, 12, 5), "cavity": cube_with_cavity(30, 20, 8),
            "rods": rod_lattice(30, 10, 4)[2:-2, 2:-2, 2:-2]}[shape]
    bone = np.pad(bone, 3)  # nothing touches the border
    assert _topology(medial_skeleton(bone)) == _topology(bone)


def test_bad_input():
    bone, voi = _plate_case(3, 4)
    with pytest.raises(SegmentationError, match="VOI is empty"):
        trabecular_morphometry(bone, np.zeros_like(voi), spacing=1.0)
    with pytest.raises(SegmentationError, match="VOI contains no bone voxels"):
        trabecular_morphometry(np.zeros_like(bone), voi, spacing=1.0)
    with pytest.raises(SegmentationError, match="VOI is entirely bone"):
        trabecular_morphometry(bone, bone & voi, spacing=1.0)
    with pytest.raises(SegmentationError, match="no marrow voxels"):
        trabecular_morphometry(bone, voi, spacing=1.0, marrow_space=np.zeros_like(bone))
    with pytest.raises(ConfigError, match="voi has shape"):
        trabecular_morphometry(bone, voi[1:], spacing=1.0)
    with pytest.raises(ConfigError, match="boolean"):
        trabecular_morphometry(bone.astype(np.float32), voi, spacing=1.0)
    with pytest.raises(ConfigError, match="convention must be one of"):
        trabecular_morphometry(bone, voi, spacing=1.0, convention="CTAn")
    with pytest.raises(ConfigError, match="positive and finite"):
        trabecular_morphometry(bone, voi, spacing=(1.0, -1.0, 1.0))
