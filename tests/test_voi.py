"""Automatic trabecular VOI of the rat distal femur: envelope, distal end, growth plate,
endocortical region, on synthetic femurs with known truth and on analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.phantoms import random_trabecular
from ctmorph.phantoms.femur import make_femur
from ctmorph.segment import (
    auto_trabecular_voi,
    detect_distal_end,
    endocortical_region,
    find_growth_plate,
    periosteal_envelope,
)

# (group, seed, distal_first, voxel µm, slice size): three groups, both stack orders, and a
# coarser voxel to show the rules are in mm
CASES = {
    "sham-distal-first": ("sham", 21, True, 9.0, (160, 160)),
    "OVX-proximal-first": ("OVX", 22, False, 9.0, (160, 160)),
    "OVX+Exos-12um": ("OVX+Exos", 23, True, 12.0, (120, 120)),
}


def _segment(grey: np.ndarray) -> np.ndarray:
    """A simple global threshold of the smoothed grey, halfway between marrow and bone."""
    return ndimage.gaussian_filter(grey.astype(np.float32), 1.0) > 132.0


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request):
    group, seed, distal_first, voxel, shape = CASES[request.param]
    f = make_femur(group=group, seed=seed, distal_first=distal_first, voxel_um=voxel,
                   shape_yx=shape)
    bone = _segment(f.grey)
    return f, bone, auto_trabecular_voi(bone, spacing=f.spacing)


def test_reference_slice_within_0_1_mm_and_distal_end(case):
    f, _, tv = case
    assert tv.distal_end == f.distal_end
    assert tv.growth_plate.distal_end == f.distal_end
    assert abs(tv.ref_index - f.ref_index) * f.spacing[0] <= 0.1


def test_voi_is_placed_proximal_of_the_reference(case):
    f, _, tv = case
    dz = f.spacing[0]
    assert tv.z1 - tv.z0 == round(2.0 / dz)
    if tv.distal_end == "first":
        assert tv.z0 - tv.ref_index == round(1.0 / dz)
    else:
        assert tv.ref_index - (tv.z1 - 1) == round(1.0 / dz)
    # the found VOI slices overlap the truth VOI almost entirely
    overlap = min(tv.z1, f.voi_truth.z1) - max(tv.z0, f.voi_truth.z0)
    assert overlap >= 0.95 * (tv.z1 - tv.z0)


def test_voi_excludes_cortex_and_covers_the_marrow_space(case):
    f, _, tv = case
    assert np.count_nonzero(tv.voi & f.cortex_truth) < 0.01 * np.count_nonzero(tv.voi)
    endo = f.endocortical_truth[tv.z0 : tv.z1]
    covered = np.count_nonzero(tv.voi[tv.z0 : tv.z1] & endo) / np.count_nonzero(endo)
    assert covered > 0.85
    # the region also holds the marrow space of the other slices (context), the VOI not
    assert not tv.voi[: tv.z0].any() and not tv.voi[tv.z1 :].any()
    assert np.array_equal(tv.voi[tv.z0 : tv.z1], tv.region[tv.z0 : tv.z1])
    slices_with_region = tv.region.any(axis=(1, 2)).sum()
    assert slices_with_region > 0.8 * tv.region.shape[0]


def test_bv_tv_in_the_auto_voi_matches_the_truth(case):
    f, bone, tv = case
    assert bone[tv.voi].mean() == pytest.approx(f.voi_truth.bv_tv, abs=0.015)


def test_profiles_for_qc(case):
    f, _, tv = case
    nz = f.grey.shape[0]
    for key in ("cartilage_fraction", "interior_bone_fraction", "envelope_area_mm2",
                "cortical_thickness_mm", "region_area_mm2"):
        assert tv.profiles[key].shape == (nz,), key
    gp = tv.growth_plate
    frac = tv.profiles["cartilage_fraction"]
    lo, hi = sorted((gp.distal_index, gp.proximal_index))
    assert np.nanmax(frac[lo : hi + 1]) > 0.9  # the plate spans the interior
    assert frac[gp.ref_index] <= 0.02
    # the cartilage across the sheet: the phantom's plate is 0.14-0.18 mm thick
    assert 0.1 <= gp.thickness_mm <= 0.25
    # cortex thickens from the plate into the metaphysis (design 0.05 -> 0.14 mm)
    ct = tv.profiles["cortical_thickness_mm"]
    mid = (tv.z0 + tv.z1) // 2
    assert 0.09 <= ct[mid] <= 0.2


SHORT_VOI = dict(offset_mm=0.5, height_mm=1.0)


@pytest.fixture(scope="module")
def short_sham():
    """A 2.7 mm long scan: room for a 0.5 + 1.0 mm VOI, not for the default 1.0 + 2.0 mm."""
    f = make_femur(group="sham", seed=31, shape_yx=(128, 128), length_mm=2.7)
    bone = _segment(f.grey)
    return f, bone, auto_trabecular_voi(bone, spacing=f.spacing, **SHORT_VOI)


def test_detect_distal_end_and_growth_plate_agree_with_the_pipeline(short_sham):
    f, bone, auto = short_sham
    assert detect_distal_end(bone, spacing=f.spacing) == "first"
    assert detect_distal_end(bone[::-1], spacing=f.spacing) == "last"
    gp = find_growth_plate(bone, spacing=f.spacing, distal_end="first")
    assert gp.ref_index == auto.ref_index
    assert gp.distal_index <= gp.proximal_index < gp.ref_index
    assert abs(gp.ref_index - f.ref_index) * f.spacing[0] <= 0.1


def test_distal_end_override_is_used(short_sham):
    f, bone, auto = short_sham
    given = auto_trabecular_voi(bone, spacing=f.spacing, distal_end="first", **SHORT_VOI)
    assert (given.ref_index, given.z0, given.z1) == (auto.ref_index, auto.z0, auto.z1)
    rev = auto_trabecular_voi(bone[::-1], spacing=f.spacing, distal_end="last", **SHORT_VOI)
    n = bone.shape[0]
    # the mirrored stack gives the mirrored reference to within a slice (half-slice positions
    # round the other way when mirrored), and the VOI follows its reference exactly
    shift = rev.ref_index - (n - 1 - auto.ref_index)
    assert abs(shift) <= 1
    assert (rev.z0, rev.z1) == (n - auto.z1 + shift, n - auto.z0 + shift)
    # told the wrong end, it searches from the proximal end: no plate is found there, or
    # the VOI would run off the epiphyseal end of the scan
    with pytest.raises(SegmentationError, match="no growth plate found|scan ends"):
        auto_trabecular_voi(bone, spacing=f.spacing, distal_end="last", **SHORT_VOI)


def test_scan_too_short_for_the_voi(short_sham):
    f, bone, _ = short_sham
    with pytest.raises(
        SegmentationError,
        match=r"scan ends 1\.\d mm proximal of the growth plate; the VOI needs 3\.0 mm",
    ):
        auto_trabecular_voi(bone, spacing=f.spacing)


def test_empty_voi_is_an_error(short_sham):
    f, bone, auto = short_sham
    solid = bone.copy()
    env = periosteal_envelope(bone, spacing=f.spacing)
    solid[auto.z0 : auto.z1] |= env[auto.z0 : auto.z1]  # no marrow left in the VOI slices
    with pytest.raises(SegmentationError, match="VOI is (empty|incomplete)"):
        auto_trabecular_voi(solid, spacing=f.spacing, **SHORT_VOI)


def test_voi_slices_without_marrow_space_fail_the_voi():
    # the one rule the in-memory VOI and the pipeline share: no slice with an endocortical
    # region is an empty VOI, more than a tenth of its slices without one an incomplete VOI
    from ctmorph.segment.femur.stream import check_voi_slices

    with pytest.raises(SegmentationError, match=r"VOI is empty: no endocortical region in "
                                                r"slices 40\.\.49$"):
        check_voi_slices(np.zeros(10, dtype=np.int64), 40)
    two = np.array([0, 5, 5, 0, 5, 5, 5, 5, 5, 5])
    with pytest.raises(SegmentationError, match="VOI is incomplete: 2 of 10 slices have no "
                                                "endocortical region"):
        check_voi_slices(two, 40)
    check_voi_slices(np.r_[0, np.full(9, 5)], 40)  # one tenth: allowed


# --------------------------------------------------------------------------------------------
# analytic shapes

SP = (0.009, 0.009, 0.009)


def _tube(nz: int = 200, n: int = 96, outer_mm: float = 0.35, wall_mm: float = 0.08):
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * SP[1]
    r = np.hypot(yy, 1.15 * xx)
    ring = (r <= outer_mm) & (r > outer_mm - wall_mm)
    return np.broadcast_to(ring, (nz, n, n)).copy(), r


def test_diaphysis_tube_has_no_growth_plate():
    tube, _ = _tube()
    with pytest.raises(SegmentationError, match="no growth plate found"):
        auto_trabecular_voi(tube, spacing=SP, distal_end="first")
    with pytest.raises(SegmentationError, match="no growth plate found"):
        find_growth_plate(tube, spacing=SP, distal_end="last")
    # without a plate there is nothing to place the VOI from, whichever end is distal
    with pytest.raises(SegmentationError, match="no growth plate found"):
        auto_trabecular_voi(tube, spacing=SP)


def test_a_scan_of_the_shaft_alone_is_flagged_not_trusted():
    # 1.7 mm proximal of the plate onwards: a wide marrow gap of the phantom's metaphysis
    # scores like a faint plate, but the scan's "distal" end is a cut through the bone (a full
    # cross-section in its first slice), not the condyles' rounded end
    f = make_femur(group="sham", seed=3, voxel_um=12.0, shape_yx=(128, 128), length_mm=4.5)
    shaft = _segment(f.grey[f.ref_index + 140:])
    gp = find_growth_plate(shaft, spacing=f.spacing, distal_end="first")
    assert any(flag.startswith("the scan does not reach the distal end of the bone")
               for flag in gp.flags)
    assert gp.confidence < 0.5
    # the whole femur's distal end is its rounded condyles: no such flag
    whole = find_growth_plate(_segment(f.grey), spacing=f.spacing, distal_end="first")
    assert not any("distal end of the bone" in flag for flag in whole.flags)
    assert abs(whole.ref_index - f.ref_index) * f.spacing[0] <= 0.1


def test_sponge_cylinder_has_no_growth_plate():
    _, r = _tube()
    sponge = random_trabecular((200, 96, 96), bv_tv=0.3, scale=2.5, seed=1) & (r <= 0.35)
    with pytest.raises(SegmentationError, match="no growth plate found"):
        auto_trabecular_voi(sponge, spacing=SP, distal_end="first")


def test_periosteal_envelope_bridges_gaps_fills_and_drops_debris():
    tube, r = _tube(nz=4)
    tube[:, 40:43, :48] = False  # a 3-pixel (27 µm) gap through the wall on one side
    tube[:, 2:6, 2:6] = True  # debris / a patella fragment outside the bone
    env = periosteal_envelope(tube, spacing=SP)
    expected = r <= 0.35
    for z in range(4):
        assert np.count_nonzero(env[z] ^ expected) < 0.02 * expected.sum()
        assert not env[z, 2:6, 2:6].any()
    # without closing the gap stays open and the marrow is not filled
    open_env = periosteal_envelope(tube, spacing=SP, closing_mm=0.0)
    assert open_env.sum() < 0.6 * env.sum()


def test_endocortical_region_of_a_tube_with_trabeculae():
    tube, r = _tube(nz=40, n=128, outer_mm=0.5, wall_mm=0.1)
    inner = r <= 0.4
    trab = random_trabecular((40, 128, 128), bv_tv=0.25, scale=3.0, seed=2) & inner
    bone = tube | trab
    env = periosteal_envelope(bone, spacing=SP)
    region = endocortical_region(bone, env, spacing=SP, margin_mm=0.02)
    assert not (region & tube).any()
    # the boundary lies about margin_mm inside the endocortical surface (r is a radial
    # coordinate of a slightly elliptical tube, so allow a pixel or two)
    expected = r <= 0.4 - 0.02
    for z in (5, 20, 35):
        diff = np.count_nonzero(region[z] ^ expected)
        assert diff < 0.06 * expected.sum(), z
    assert bone[region].mean() == pytest.approx(trab[:, inner].mean(), abs=0.03)


def test_no_bone_at_all():
    with pytest.raises(SegmentationError, match="no bone cross-section"):
        auto_trabecular_voi(np.zeros((50, 32, 32), bool), spacing=SP, distal_end="first")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(offset_mm=-1.0), "offset_mm must be a number >= 0"),
        (dict(height_mm=0.0), "height_mm must be a positive number"),
        (dict(height_mm=float("nan")), "height_mm must be a positive number"),
        (dict(distal_end="top"), "distal_end must be one of auto, first, last"),
        (dict(spacing=(0.009, -1.0, 0.009)), "spacing values must be positive"),
    ],
)
def test_bad_arguments(kwargs, match):
    bone = np.zeros((20, 16, 16), bool)
    kw = dict(spacing=SP)
    kw.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        auto_trabecular_voi(bone, **kw)


def test_bad_arrays_and_distal_end_for_the_plate():
    with pytest.raises(ConfigError, match=r"bone must be a non-empty \(Z, Y, X\) array"):
        auto_trabecular_voi(np.zeros((16, 16), bool), spacing=SP)
    with pytest.raises(ConfigError, match="bone must be a boolean"):
        auto_trabecular_voi(np.zeros((4, 16, 16), np.float32), spacing=SP)
    with pytest.raises(ConfigError, match="distal_end must be one of first, last"):
        find_growth_plate(np.zeros((4, 16, 16), bool), spacing=SP, distal_end="auto")
    with pytest.raises(ConfigError, match="envelope shape"):
        endocortical_region(np.zeros((4, 16, 16), bool), np.zeros((4, 8, 8), bool),
                            spacing=SP)
