"""Structure model index and concave fraction (ctmorph.morphometry.smi)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import marching_cubes

from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry.smi import smi, surface_area_derivative
from ctmorph.phantoms.shapes import ball, plates, random_trabecular, tilted_plates


def cylinder(shape, radius, axis=0):
    """Infinite cylinder (cut by the volume) along ``axis`` through the volume centre."""
    grids = np.meshgrid(*(np.arange(s) - (s - 1) / 2 for s in shape), indexing="ij")
    others = [g for a, g in enumerate(grids) if a != axis]
    return others[0] ** 2 + others[1] ** 2 <= radius**2


def hollow_ball(n, outer, inner):
    return ball(n, outer) & ~ball(n, inner)


# ---------------------------------------------------------------------------------------------
# the surface derivative against exact geometry and finite differences


def test_area_derivative_of_a_sphere_mesh_is_exact():
    n, radius = 40, 12.3
    g = np.meshgrid(*(np.arange(n) - (n - 1) / 2,) * 3, indexing="ij")
    dist = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    verts, faces, _, _ = marching_cubes(dist, radius)
    verts = verts.astype(np.float64) - (n - 1) / 2
    radial = verts / np.linalg.norm(verts, axis=1, keepdims=True)
    # radial displacement scales every vertex by (1 + r/|v|): each triangle area by about
    # (1 + r/R)², so dA/dr = 2A/R up to the small scatter of |v| around R
    area, d_area = surface_area_derivative(verts, faces, radial)
    assert d_area.sum() == pytest.approx(2 * area.sum() / radius, rel=2e-3)


def test_area_derivative_matches_central_differences():
    rng = np.random.default_rng(2)
    verts = rng.random((30, 3)) * 5
    faces = rng.integers(0, 30, (50, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
                  & (faces[:, 0] != faces[:, 2])]
    normals = rng.standard_normal((30, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    area, d_area = surface_area_derivative(verts, faces, normals)
    eps = 1e-6
    plus, _ = surface_area_derivative(verts + eps * normals, faces, normals)
    minus, _ = surface_area_derivative(verts - eps * normals, faces, normals)
    np.testing.assert_allclose(d_area, (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(area, 0.5 * np.linalg.norm(
        np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]]),
        axis=1))


# ---------------------------------------------------------------------------------------------
# model structures: sphere 4, rod 3, plate 0


@pytest.mark.parametrize("radius", [10, 14])
def test_ball_is_four(radius):
    vol = ball(2 * radius + 8, radius)
    assert smi(vol, spacing=0.009)["SMI"] == pytest.approx(4.0, abs=0.4)


@pytest.mark.parametrize(("axis", "radius"), [(0, 6), (2, 10)])
def test_long_rod_is_three(axis, radius):
    shape = [2 * radius + 8] * 3
    shape[axis] = 40
    vol = cylinder(tuple(shape), radius, axis)  # cut by the volume: no end caps
    assert smi(vol, spacing=0.009)["SMI"] == pytest.approx(3.0, abs=0.4)


@pytest.mark.parametrize(
    "volume",
    [plates(40, 4, 6, axis=1), tilted_plates(48, 5.0, 7.0, (1, 2, 3))],
    ids=["axis plates", "tilted plates"],
)
def test_plates_cut_by_the_volume_are_zero(volume):
    assert smi(volume, spacing=0.009)["SMI"] == pytest.approx(0.0, abs=0.5)


def test_plate_rim_matters_unless_the_voi_excludes_it():
    plate = np.zeros((40, 100, 100), bool)
    plate[17:23, 10:90, 10:90] = True  # t = 6, L = 80, closed all round
    whole = smi(plate, spacing=0.01)["SMI"]
    # rim ≈ half-cylinders: dBS/dr ≈ 4πL, BS ≈ 2L² + 4Lt, BV = L²t  -> SMI ≈ 1.07
    assert whole == pytest.approx(1.07, abs=0.3)
    voi = np.zeros_like(plate)
    voi[:, 25:75, 25:75] = True
    assert smi(plate, voi, spacing=0.01)["SMI"] == pytest.approx(0.0, abs=0.05)


def test_hollow_ball_has_the_analytic_convex_and_concave_parts():
    r1, r2 = 14.0, 7.0
    res = smi(hollow_ball(38, r1, r2), spacing=0.01)
    # BV = 4π(r1³ − r2³)/3, BS = 4π(r1² + r2²), dBS/dr = 8π(r1 − r2)
    k = 4 * (r1**3 - r2**3) / (r1**2 + r2**2) ** 2
    assert res["SMI"] == pytest.approx(k * (r1 - r2), abs=0.15)
    assert res["SMI+"] == pytest.approx(k * r1, abs=0.2)
    assert res["SMI-"] == pytest.approx(-k * r2, abs=0.2)
    assert res["SMI"] == pytest.approx(res["SMI+"] + res["SMI-"], abs=1e-9)
    assert res["concave_fraction"] == pytest.approx(r2**2 / (r1**2 + r2**2), abs=0.05)


def test_convex_ball_has_no_concave_surface():
    res = smi(ball(34, 12), spacing=0.01)
    assert res["concave_fraction"] < 0.05
    assert res["SMI-"] > -0.1


# ---------------------------------------------------------------------------------------------
# spacing, VOI, determinism, validation


def test_smi_is_dimensionless_and_handles_anisotropic_voxels():
    vol = ball(30, 11)
    a = smi(vol, spacing=0.01)
    b = smi(vol, spacing=0.02)
    assert b["SMI"] == pytest.approx(a["SMI"], rel=1e-9)
    assert b["BS.mesh"] == pytest.approx(4 * a["BS.mesh"], rel=1e-9)
    # a physical ball of radius 12 sampled with dz = 2: an ellipsoid in index space
    z, y, x = np.meshgrid(np.arange(20) * 2.0, np.arange(36.0), np.arange(36.0), indexing="ij")
    aniso = (z - 19) ** 2 + (y - 17.5) ** 2 + (x - 17.5) ** 2 <= 12.0**2
    assert smi(aniso, spacing=(2.0, 1.0, 1.0))["SMI"] == pytest.approx(4.0, abs=0.5)


def test_voi_wall_creates_no_surface():
    vol = cylinder((60, 30, 30), 8, axis=0)
    voi = np.zeros_like(vol)
    voi[10:50] = True  # cuts the rod across: no caps counted
    assert smi(vol, voi, spacing=0.01)["SMI"] == pytest.approx(3.0, abs=0.4)


def test_deterministic():
    vol = random_trabecular(40, seed=4)
    voi = ball(40, 17)
    assert smi(vol, voi, spacing=0.009) == smi(vol, voi, spacing=0.009)


def test_validation():
    vol = ball(20, 6)
    with pytest.raises(ConfigError, match="smooth"):
        smi(vol, spacing=1.0, smooth=-0.5)
    with pytest.raises(SegmentationError, match="no bone"):
        smi(np.zeros((10, 10, 10), bool), spacing=1.0)
    with pytest.raises(SegmentationError, match="no bone surface"):
        smi(np.ones((10, 10, 10), bool), spacing=1.0)
    with pytest.raises(ConfigError, match="voi has shape"):
        smi(vol, np.ones((20, 20, 21), bool), spacing=1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_slab_by_slab_mesh_equals_the_whole_box(seed, monkeypatch):
    """SMI meshed in slabs of a few slices (bounded memory) equals one mesh of the whole box.

    Triangles are owned by their marching cube and vertices by their slice, each slab with a
    halo holding the Gaussian's support and every owned vertex's one-ring, so the sums are
    those of the whole mesh. Scikit-image returns float32 vertices, so a slab's vertices
    (local z) round differently from the whole box's in the 7th digit; dBS/dr is a sum of
    large terms of both signs, which turns that into ~1e-4 of SMI (measured <= 1.2e-4
    relative). Hence: BS to 1e-6, SMI and its parts to 1e-3 absolute.
    """
    import importlib

    mod = importlib.import_module("ctmorph.morphometry.smi")
    rng = np.random.default_rng(seed)
    bone = ndimage.gaussian_filter(rng.random((70, 40, 50)), 2) > 0.5
    voi = np.zeros_like(bone)
    voi[5:60, 3:35, 4:45] = True
    sp = (0.01, 0.012, 0.011)
    whole = mod.smi(bone, voi, spacing=sp)
    for chunk in (1000, 3000):  # 8 and ~1.6 slices per slab (at least 8 are used)
        monkeypatch.setattr(mod, "_CHUNK_VOXELS", chunk)
        slabs = mod.smi(bone, voi, spacing=sp)
        assert slabs["BS.mesh"] == pytest.approx(whole["BS.mesh"], rel=1e-6)
        for key in ("SMI", "SMI+", "SMI-", "concave_fraction"):
            assert slabs[key] == pytest.approx(whole[key], abs=1e-3)
