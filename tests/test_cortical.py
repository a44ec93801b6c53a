"""Cortical morphometry on analytic tubes (Bouxsein et al. 2010 minimal cortical set).

Truth for a tube along z with outer semi-axes (a, b) and inner semi-axes k·(a, b) (circle:
a = b = R, k = r/R): Tt.Ar = πab, Ct.Ar = πab(1 - k²), Ma.Ar = πab·k², second moments of the
elliptical ring about its centroid ∫x²dA = π/4·a³b(1 - k⁴), ∫y²dA = π/4·ab³(1 - k⁴) (so for a
circle J = π/2·(R⁴ - r⁴), Imax = Imin = π/4·(R⁴ - r⁴)), and Ct.Th = R - r for a circular wall.

Tolerances, from the voxelisation (h = voxel size, shapes rasterised in physical coordinates
with centres off the lattice so no lattice symmetry helps or hurts):

- Areas and moments (1 %): pixel counting misclassifies at most the pixels the boundary
  crosses, a worst-case bound of P·h/2 / A (perimeter P, area A): 2.5-5 % for these rings. For
  smooth convex curves the signed errors cancel (Gauss circle problem: the lattice-count error
  grows only like R^(2/3) pixels); measured errors are below 0.5 %.
- Ct.Th (3 %, and half a voxel absolute): local thickness of a voxelised curved wall is exact
  only to about half a voxel; with the default (corrected) convention off-grid tubes with
  10-30 voxel walls measured -0.2 to +0.3 voxel, which is < 2.5 % for the >= 20 voxel walls
  used here.
- Ct.Po (3 % relative to the analytic pore fraction): the measured pore fraction must equal the
  digital one (voxels of the rasterised pores) exactly; the digital pore volume of pores with
  radii of 6 voxels deviates from the analytic one by lattice counting, under 1 % here.

Tilted bone axes are out of scope (the slice is assumed to be the cross-section).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry.cortical import CORTICAL_COLUMNS, cortical_morphometry

H = 0.01  # mm
ISO = (H, H, H)
OFFSET = (0.37, 0.21)  # sub-voxel offset (voxels) of the tube axis from the lattice


def _grid(shape, spacing, offset=OFFSET):
    """Physical (z, y, x) coordinates (mm) of the voxel centres, the tube axis at y = x = 0."""
    nz, ny, nx = shape
    dz, dy, dx = spacing
    z = np.arange(nz) * dz
    y = (np.arange(ny) - ny / 2 + offset[0]) * dy
    x = (np.arange(nx) - nx / 2 + offset[1]) * dx
    return z, y, x


def tube(shape, spacing, a, b=None, k=0.5, angle_deg=0.0, offset=OFFSET):
    """Elliptical tube along z: outer semi-axes ``a`` (along x before rotation) and ``b`` (mm),
    inner semi-axes ``k·a``, ``k·b``, rotated by ``angle_deg`` in the slice plane. Returns
    ``(bone, envelope)``, both (Z, Y, X) bool."""
    b = a if b is None else b
    _, y, x = _grid(shape, spacing, offset)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    t = math.radians(angle_deg)
    u = math.cos(t) * xx + math.sin(t) * yy
    v = -math.sin(t) * xx + math.cos(t) * yy
    rho = np.hypot(u / a, v / b)  # 1 on the periosteal surface
    outer = rho < 1.0
    ring = outer & (rho >= k)
    nz = shape[0]
    return (np.broadcast_to(ring, (nz, *ring.shape)).copy(),
            np.broadcast_to(outer, (nz, *outer.shape)).copy())


def _ring_truth(a, b, k):
    f = math.pi / 4 * (1 - k**4)
    ix, iy = f * a**3 * b, f * a * b**3
    return {
        "Tt.Ar": math.pi * a * b,
        "Ct.Ar": math.pi * a * b * (1 - k * k),
        "Ma.Ar": math.pi * a * b * k * k,
        "Ct.Ar/Tt.Ar": 100 * (1 - k * k),
        "J": ix + iy,
        "Imax": max(ix, iy),
        "Imin": min(ix, iy),
    }


def _shape_for(a_vox, nz=4):
    n = int(2 * a_vox + 8)
    return (nz, n, n)


# ------------------------------------------------------------------------------------------
# analytic tubes


@pytest.mark.parametrize("R_vox, r_vox", [(40, 20), (60, 30), (55, 30), (50, 15)])
def test_circular_tube_truth(R_vox, r_vox):
    shape = _shape_for(R_vox)
    R, r = R_vox * H, r_vox * H
    bone, _ = tube(shape, ISO, R, k=r / R)
    res = cortical_morphometry(bone, spacing=ISO)
    assert list(res) == list(CORTICAL_COLUMNS)
    for key, value in _ring_truth(R, R, r / R).items():
        assert res[key] == pytest.approx(value, rel=0.01), key
    assert res["Ma.Ar"] == pytest.approx(res["Tt.Ar"] - res["Ct.Ar"], rel=1e-12)
    assert res["Ct.Th"] == pytest.approx(R - r, rel=0.03, abs=0.5 * H)
    assert abs(res["Ct.Th"] - (R - r)) <= 0.5 * H
    assert res["Ct.Th.SD"] < 0.5 * H  # a uniform wall
    assert res["Ct.Po"] == 0.0


def test_thin_wall_thickness_within_half_voxel():
    R, r = 0.40, 0.30  # 10-voxel wall
    bone, _ = tube(_shape_for(40), ISO, R, k=r / R)
    res = cortical_morphometry(bone, spacing=ISO)
    assert abs(res["Ct.Th"] - (R - r)) <= 0.5 * H
    unc = cortical_morphometry(bone, spacing=ISO, thickness_convention="uncorrected")
    # the conventions differ by exactly half a voxel (isotropic voxels)
    assert unc["Ct.Th"] - res["Ct.Th"] == pytest.approx(0.5 * H, abs=1e-6)
    assert unc["Ct.Ar"] == res["Ct.Ar"] and unc["J"] == res["J"]


@pytest.mark.parametrize("angle_deg", [0.0, 30.0, 90.0])
def test_elliptical_tube_principal_moments(angle_deg):
    a, b, k = 0.55, 0.35, 0.6  # 55 x 35 voxel semi-axes
    bone, _ = tube(_shape_for(55, nz=3), ISO, a, b, k=k, angle_deg=angle_deg)
    res = cortical_morphometry(bone, spacing=ISO)
    truth = _ring_truth(a, b, k)
    for key, value in truth.items():
        assert res[key] == pytest.approx(value, rel=0.01), key
    assert res["Imax"] / res["Imin"] == pytest.approx(a * a / (b * b), rel=0.01)


def test_rectangle_moments_exact_with_pixel_self_moments():
    """A rectangle of whole pixels: the discrete sums plus each pixel's own moment give the
    continuous b·h³/12 exactly (without the self moments they would be short by n·dA·d²/12)."""
    sp = (0.02, 0.012, 0.008)
    dz, dy, dx = sp
    bone = np.zeros((3, 20, 30), bool)
    bone[:, 5:12, 9:21] = True  # 7 rows x 12 columns
    hgt, wid = 7 * dy, 12 * dx
    res = cortical_morphometry(bone, spacing=sp)
    ixx, iyy = wid * hgt**3 / 12, hgt * wid**3 / 12
    assert res["J"] == pytest.approx(ixx + iyy, rel=1e-12)
    assert res["Imax"] == pytest.approx(max(ixx, iyy), rel=1e-12)
    assert res["Imin"] == pytest.approx(min(ixx, iyy), rel=1e-12)
    assert res["Tt.Ar"] == pytest.approx(hgt * wid, rel=1e-12)
    assert res["Ct.Ar/Tt.Ar"] == pytest.approx(100.0)
    assert res["Ma.Ar"] == pytest.approx(0.0, abs=1e-15)
    assert res["Ct.Po"] == 0.0

    one = np.zeros((1, 5, 5), bool)
    one[0, 2, 2] = True
    res = cortical_morphometry(one, spacing=sp)
    assert res["J"] == pytest.approx(dy * dx * (dy * dy + dx * dx) / 12, rel=1e-12)


# ------------------------------------------------------------------------------------------
# porosity


def _porous_tube(kind):
    """Tube R = 54, r = 30 voxels with 6 pores of radius 6 voxels at mid-wall, fully enclosed
    in the cortex; returns ``(solid, porous, analytic pore fraction, pore mask)``."""
    R, r, rho, mid, n_pores = 0.54, 0.30, 0.06, 0.42, 6
    shape = (20, 118, 118)
    solid, _ = tube(shape, ISO, R, k=r / R)
    z, y, x = _grid(shape, ISO)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    pores = np.zeros(shape, bool)
    for i in range(n_pores):
        t = 2 * math.pi * i / n_pores + 0.3
        cy, cx = mid * math.sin(t), mid * math.cos(t)
        if kind == "canals":  # cylindrical canals along z, through the slab
            pores |= np.hypot(yy - cy, xx - cx) < rho
        else:  # spheres in the middle of the slab, centres off the lattice
            cz = 0.1 + 0.0013 * i
            pores |= np.sqrt((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) < rho
    wall = math.pi * (R * R - r * r) * shape[0] * H  # mm³
    pore_vol = n_pores * (math.pi * rho**2 * shape[0] * H if kind == "canals"
                          else 4 / 3 * math.pi * rho**3)
    return solid, solid & ~pores, pore_vol / wall, pores


@pytest.mark.parametrize("kind", ["canals", "spheres"])
def test_porosity_of_enclosed_pores(kind):
    solid, porous, fraction, pores = _porous_tube(kind)
    res = cortical_morphometry(porous, spacing=ISO)
    ref = cortical_morphometry(solid, spacing=ISO)
    assert ref["Ct.Po"] == 0.0
    assert res["Ct.Po"] == pytest.approx(100 * fraction, rel=0.03)
    digital = np.count_nonzero(pores & solid) / np.count_nonzero(solid)
    assert res["Ct.Po"] == pytest.approx(100 * digital, rel=1e-12)
    # pores are inside the periosteal envelope and count in Ma.Ar, not Ct.Ar
    assert res["Tt.Ar"] == ref["Tt.Ar"]
    n_slices = solid.shape[0]
    pore_area = np.count_nonzero(pores & solid) * H * H / n_slices
    assert res["Ct.Ar"] == pytest.approx(ref["Ct.Ar"] - pore_area, rel=1e-12)
    assert res["Ct.Th"] < ref["Ct.Th"]  # the pores thin the wall locally


def test_pore_open_to_the_marrow_is_marrow():
    R, r = 0.54, 0.30
    shape = (6, 118, 118)
    bone, _ = tube(shape, ISO, R, k=r / R)
    _, y, x = _grid(shape, ISO)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    bone &= ~(np.hypot(yy, xx - r) < 0.06)  # a canal centred on the endosteal surface
    res = cortical_morphometry(bone, spacing=ISO)
    assert res["Ct.Po"] == 0.0


def test_envelope_closing_bridges_a_gap_through_the_cortex():
    R, r = 0.54, 0.30
    shape = (4, 118, 118)
    solid, envelope = tube(shape, ISO, R, k=r / R)
    slit = solid.copy()
    slit[:, 58:61, 59:] = False  # a 3-voxel gap through the whole wall
    ref = cortical_morphometry(solid, spacing=ISO)
    res = cortical_morphometry(slit, spacing=ISO)
    assert res["Tt.Ar"] == pytest.approx(ref["Tt.Ar"], rel=1e-3)
    assert res["Ma.Ar"] == pytest.approx(ref["Ma.Ar"] + ref["Ct.Ar"] - res["Ct.Ar"], rel=1e-2)
    # the gap joins the marrow: it is not intracortical porosity
    assert res["Ct.Po"] == 0.0
    # without the closing hole filling cannot find the marrow
    bare = cortical_morphometry(slit, spacing=ISO, closing_mm=0.0)
    assert bare["Ma.Ar"] == pytest.approx(0.0, abs=1e-12)
    # a given envelope is used as is
    given = cortical_morphometry(slit, envelope, spacing=ISO)
    assert given["Tt.Ar"] == pytest.approx(np.count_nonzero(envelope[0]) * H * H, rel=1e-12)


# ------------------------------------------------------------------------------------------
# spacing, envelope, slices, cortex selection


def test_anisotropic_slice_spacing_gives_the_same_areas():
    bone, _ = tube(_shape_for(45, nz=6), ISO, 0.45, k=0.5)
    iso = cortical_morphometry(bone, spacing=ISO)
    aniso = cortical_morphometry(bone, spacing=(3 * H, H, H))
    for key in ("Tt.Ar", "Ct.Ar", "Ma.Ar", "Ct.Ar/Tt.Ar", "Ct.Po", "J", "Imax", "Imin"):
        assert aniso[key] == pytest.approx(iso[key], rel=1e-12), key
    assert abs(aniso["Ct.Th"] - 0.225) <= 0.5 * H


def test_anisotropic_in_plane_pixels():
    sp = (0.02, 0.012, 0.008)
    R, r = 0.45, 0.25  # 37 x 56 pixels radius
    bone, _ = tube((3, 90, 130), sp, R, k=r / R)
    res = cortical_morphometry(bone, spacing=sp)
    for key, value in _ring_truth(R, R, r / R).items():
        assert res[key] == pytest.approx(value, rel=0.01), key
    assert res["Ct.Th"] == pytest.approx(R - r, rel=0.03)


def test_given_envelope_matches_the_automatic_one():
    bone, envelope = tube(_shape_for(50), ISO, 0.5, 0.4, k=0.6, angle_deg=20)
    auto = cortical_morphometry(bone, spacing=ISO)
    given = cortical_morphometry(bone, envelope, spacing=ISO)
    assert given == pytest.approx(auto, rel=1e-12)


def test_detached_fragments_are_not_cortex():
    shape = (6, 130, 130)
    bone, _ = tube(shape, ISO, 0.5, k=0.6)
    ref = cortical_morphometry(bone, spacing=ISO)
    debris = bone.copy()
    debris[1:4, 2:8, 2:8] = True  # outside the periosteal surface
    debris[2:4, 62:67, 62:67] = True  # a loose fragment in the marrow
    res = cortical_morphometry(debris, spacing=ISO)
    assert res == pytest.approx(ref, rel=1e-12)


def test_slices_measure_a_sub_slab_with_the_rest_as_context():
    shape = (60, 110, 110)
    low, _ = tube(shape, ISO, 0.40, k=0.5)  # R 40, r 20 voxels
    high, _ = tube(shape, ISO, 0.50, k=0.6)  # R 50, r 30 voxels
    bone = np.concatenate([low[:30], high[30:]])
    res = cortical_morphometry(bone, spacing=ISO, slices=slice(0, 15))
    for key, value in _ring_truth(0.40, 0.40, 0.5).items():
        assert res[key] == pytest.approx(value, rel=0.01), key
    assert abs(res["Ct.Th"] - 0.20) <= 0.5 * H
    res = cortical_morphometry(bone, spacing=ISO, slices=slice(45, None))
    assert res["Tt.Ar"] == pytest.approx(math.pi * 0.25, rel=0.01)
    whole = cortical_morphometry(bone, spacing=ISO)
    assert whole["Tt.Ar"] == pytest.approx(math.pi * (0.16 + 0.25) / 2, rel=0.01)


# ------------------------------------------------------------------------------------------
# bad input


def test_bad_input():
    bone, envelope = tube(_shape_for(30), ISO, 0.3, k=0.5)
    with pytest.raises(SegmentationError, match="no bone voxels"):
        cortical_morphometry(np.zeros_like(bone), spacing=ISO)
    with pytest.raises(SegmentationError, match="inside the periosteal envelope"):
        cortical_morphometry(bone, np.zeros_like(bone), spacing=ISO)
    with pytest.raises(ConfigError, match=r"envelope has shape \(4, 68, 67\)"):
        cortical_morphometry(bone, envelope[:, :, :-1], spacing=ISO)
    with pytest.raises(ConfigError, match="bone must be a boolean"):
        cortical_morphometry(bone.astype(float), spacing=ISO)
    with pytest.raises(ConfigError, match="3-D"):
        cortical_morphometry(bone[0], spacing=ISO)
    with pytest.raises(ConfigError, match="spacing"):
        cortical_morphometry(bone, spacing=(H, H))
    with pytest.raises(ConfigError, match="selects no slice"):
        cortical_morphometry(bone, spacing=ISO, slices=slice(10, 20))
    with pytest.raises(ConfigError, match="must be a slice"):
        cortical_morphometry(bone, spacing=ISO, slices=(0, 2))
    with pytest.raises(ConfigError, match="thickness_convention"):
        cortical_morphometry(bone, spacing=ISO, thickness_convention="bonej")
    with pytest.raises(ConfigError, match="closing_mm"):
        cortical_morphometry(bone, spacing=ISO, closing_mm=-0.1)
    gap = bone.copy()
    gap[3] = False
    with pytest.raises(SegmentationError, match=r"hold no cortical bone \(slices 3\)"):
        cortical_morphometry(gap, spacing=ISO)
    # restricting the measured slices avoids the empty one
    assert cortical_morphometry(gap, spacing=ISO, slices=slice(0, 3))["Ct.Po"] == 0.0
    # a slice cut off from the largest cortex component holds no cortex either
    gap[3] = bone[3]
    gap[2] = False
    with pytest.raises(SegmentationError, match=r"hold no cortical bone \(slices 2, 3\)"):
        cortical_morphometry(gap, spacing=ISO)
