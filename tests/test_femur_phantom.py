"""The synthetic rat distal femur and the sample-study generator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ctmorph.errors import ConfigError
from ctmorph.phantoms.femur import GROUPS, LABELS, make_femur
from ctmorph.phantoms.sample_study import make_sample_study, study_complete, study_design

SMALL = dict(shape_yx=(64, 64), length_mm=1.4)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def femurs():
    """One 160 px femur per group (full length, so the truth VOI is complete)."""
    return {g: make_femur(group=g, seed=7, shape_yx=(160, 160)) for g in GROUPS}


def test_same_seed_gives_identical_bytes():
    a = make_femur(seed=3, **SMALL)
    b = make_femur(seed=3, **SMALL)
    assert _digest(a.grey) == _digest(b.grey)
    assert _digest(a.labels) == _digest(b.labels)
    assert a.ref_index == b.ref_index
    assert json.dumps(a.params, sort_keys=True) == json.dumps(b.params, sort_keys=True)


def test_different_seed_gives_a_different_femur():
    a = make_femur(seed=3, **SMALL)
    b = make_femur(seed=4, **SMALL)
    assert _digest(a.grey) != _digest(b.grey)
    assert np.count_nonzero(a.bone_truth != b.bone_truth) > 0.01 * a.bone_truth.size


def test_proximal_first_is_the_reversed_stack():
    a = make_femur(seed=5, distal_first=True, **SMALL)
    b = make_femur(seed=5, distal_first=False, **SMALL)
    assert a.distal_end == "first" and b.distal_end == "last"
    np.testing.assert_array_equal(b.grey, a.grey[::-1])
    n = a.grey.shape[0]
    assert b.ref_index == n - 1 - a.ref_index
    assert (b.voi_truth.z0, b.voi_truth.z1) == (n - a.voi_truth.z1, n - a.voi_truth.z0)


def test_voi_bv_tv_per_group_near_design_and_ordered(femurs):
    bv = {}
    for g, f in femurs.items():
        assert f.voi_truth.complete
        mask = f.voi_mask()
        bv[g] = f.bone_truth[mask].mean()
        assert bv[g] == pytest.approx(f.voi_truth.bv_tv)
        assert bv[g] == pytest.approx(GROUPS[g].bv_tv, abs=0.02), g
    assert bv["sham"] > bv["OVX+Exos"] > bv["OVX"]


def test_reference_slice_is_the_first_without_cartilage(femurs):
    f = femurs["sham"]
    cart = (f.labels == LABELS["cartilage"]).any(axis=(1, 2))
    ref = f.ref_index
    assert cart[ref - 1] and not cart[ref:].any()
    # the plate is a band of cartilage about plate_thickness + 2 * unevenness long
    band = np.flatnonzero(cart)
    length_mm = (band[-1] - band[0] + 1) * f.spacing[0]
    p = f.params
    assert p["plate_thickness_mm"] <= length_mm <= (
        p["plate_thickness_mm"] + 2 * p["plate_unevenness_mm"] + 0.02
    )
    # ... at about the design distance from the distal end
    assert ref * f.spacing[0] == pytest.approx(p["ref_mm_from_distal"])
    assert 0.85 <= p["ref_mm_from_distal"] <= 1.1


def test_grey_levels_look_like_an_nrecon_8bit_export(femurs):
    f = femurs["OVX"]
    assert f.grey.dtype == np.uint8
    core = f.labels[:, 40:-40, 40:-40]
    g = f.grey[:, 40:-40, 40:-40]
    for name, lo, hi in [("marrow", 50, 80), ("cortical", 190, 230)]:
        assert lo < np.median(g[core == LABELS[name]]) < hi, name
    assert np.median(f.grey[:, :4, :4]) < 25  # air in the corners
    soft = f.grey[f.labels == LABELS["soft_tissue"]]
    assert 45 < np.median(soft) < 80
    # cartilage looks like marrow, not like bone
    cart = f.grey[f.labels == LABELS["cartilage"]]
    assert 50 < np.median(cart) < 90
    # noise: SD of a flat marrow region about 6 grey values
    m = ((f.labels == LABELS["marrow"]) & (f.grey > 40) & (f.grey < 90))
    assert 4 < f.grey[m].std() < 9


def test_anatomy_cortex_and_condyles(femurs):
    f = femurs["sham"]
    vox = f.spacing[0]
    env = f.labels >= LABELS["marrow"]
    area = env.sum(axis=(1, 2))
    ref = f.ref_index
    # condyles wider than the metaphyseal shaft
    assert area[ref - 40 : ref - 20].mean() > 1.08 * area[ref + 250 : ref + 270].mean()
    # metaphyseal cortex 0.1-0.15 mm thick (area / mean perimeter of a tube)
    z = f.voi_truth.z0 + 50
    cort = (f.labels[z] == LABELS["cortical"]).sum() * vox**2
    outer = env[z].sum() * vox**2
    inner = outer - cort
    t = (np.sqrt(outer / np.pi) - np.sqrt(inner / np.pi))
    assert 0.09 <= t <= 0.16
    # diaphysis-like proximal end: empty marrow inside the tube
    last = f.labels[-3:]
    assert not (last == LABELS["trabecular"]).any()


def test_group_thickness_slightly_lower_in_ovx(femurs):
    # plate-model trabecular thickness 2 BV / BS, BS from the bone/marrow voxel faces
    th = {}
    for g in ("sham", "OVX"):
        f = femurs[g]
        m = f.voi_mask()
        b = f.bone_truth & m
        faces = sum(np.count_nonzero(np.diff(b.astype(np.int8), axis=a)) for a in range(3))
        th[g] = 2 * b.sum() / faces * f.spacing[0] * 1.5  # 1.5: face counts overestimate BS
    assert 0.05 < th["OVX"] < th["sham"] < 1.4 * th["OVX"]
    assert th["sham"] < 0.12


def test_bad_arguments():
    with pytest.raises(ConfigError, match="group must be one of"):
        make_femur(group="ovx")
    with pytest.raises(ConfigError, match="bv_tv must be within"):
        make_femur(bv_tv=0.9, **SMALL)
    with pytest.raises(ConfigError, match="too short to hold the growth plate"):
        make_femur(shape_yx=(64, 64), length_mm=0.5)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sample_study_layout_truth_and_determinism(tmp_path):
    from ctmorph.io import read_scan

    a = tmp_path / "a"
    rec = make_sample_study(a, seed=11, animals_per_group=1, shape_yx=(64, 64), jobs=1)
    first = _tree_digest(a)
    # regenerating in place (with two workers) gives the same bytes, replaces the folders
    # atomically and leaves no temporaries
    assert make_sample_study(a, seed=11, animals_per_group=1, shape_yx=(64, 64), jobs=2) == rec
    assert _tree_digest(a) == first
    assert not [p for p in a.iterdir() if p.name.startswith(".")]
    assert not [p for p in (a / "phantoms").iterdir() if p.name.startswith(".")]
    # what `ctmorph samples --if-missing` checks: every scan and both phantoms are there
    assert study_complete(a) and not study_complete(a, realistic=True)  # no truth of that kind
    assert not study_complete(tmp_path / "nothing")

    names = [r["scan"] for r in rec]
    assert names == ["sham_01", "OVX_01", "OVXExos_01"]
    assert (a / "groups.csv").read_text() == (
        "scan,group\nsham_01,sham\nOVX_01,OVX\nOVXExos_01,OVX+Exos\n"
    )
    truth = json.loads((a / "truth.json").read_text(encoding="utf-8"))
    assert truth["scans"] == rec and truth["study_seed"] == 11
    assert [r["distal_end"] for r in rec] == ["first", "first", "last"]
    for r in rec:
        folder = a / r["scan"]
        first = r["first_section"]
        assert (folder / f"{r['scan']}_rec{first:04d}.bmp").is_file()
        assert (folder / f"{r['scan']}_rec.log").is_file()
        scan = read_scan(folder)
        assert scan.voxel_size_um == pytest.approx(9.0)
        sections = np.asarray(scan.sections)
        assert sections[0] == first and sections.size == r["n_slices"]
        assert r["ref_slice"] == sections[r["ref_index"]]
        assert r["voi_last_slice"] - r["voi_first_slice"] + 1 == round(2.0 / 0.009)
        assert 0 < r["bv_tv_truth"] < 100  # (too few trabeculae at 64 px to match the design)
    assert any(r["first_section"] > 0 for r in rec)
    _check_density_truth(a, truth, rec)
    # a different study seed gives other animals
    assert [d["seed"] for d in study_design(12, 1)] != [r["seed"] for r in rec]


def _check_density_truth(a: Path, truth: dict, rec: list[dict]) -> None:
    """The femurs' CS window, the tissue densities and the two HA phantom scans."""
    from ctmorph.calibration import CHECKED_SETTINGS
    from ctmorph.io import find_scan_dirs, read_scan
    from ctmorph.phantoms.rods import DEFAULT_HA_MODEL, cs_window_for_levels

    window = cs_window_for_levels((64, 200), (0.0, 1.15))
    assert truth["femur_cs_window"] == pytest.approx(window, abs=1e-8)
    dens = truth["tissue_density"]
    assert dens["marrow"] == 0.0 and dens["trabecular"] == 1.15
    assert 1.2 < dens["cortical"] < 1.4  # (grey 215 under the same window)
    assert truth["attenuation_model"]["calibration_slope"] == DEFAULT_HA_MODEL.slope
    for r in rec:
        # the truth VOI holds marrow (0) and trabecular bone (1.15) only
        assert r["bmd_truth"] == pytest.approx(r["bv_tv_truth"] / 100 * 1.15, abs=1e-4)
        assert r["tmd_truth"] == 1.15
        assert read_scan(a / r["scan"]).cs_window == pytest.approx(window, abs=1e-6)

    # the phantoms: outside the femur folders, found by nobody expanding the study folder
    ph = truth["phantoms"]
    assert [(p["scan"], p["folder"], p["density"]) for p in ph] == [
        ("HA025", "phantoms/HA025", 0.25), ("HA075", "phantoms/HA075", 0.75)]
    assert [d.name for d in find_scan_dirs([a])] == sorted(r["scan"] for r in rec)
    femur = read_scan(a / rec[0]["scan"]).log.settings()
    windows = []
    for p in ph:
        scan = read_scan(a / p["folder"])
        assert scan.shape == (40, 256, 256) and scan.voxel_size_um == pytest.approx(9.0)
        assert scan.cs_window == pytest.approx(p["cs_window"], abs=1e-6)
        windows.append(tuple(p["cs_window"]))
        settings = scan.log.settings()
        assert {k: settings[k] for k in CHECKED_SETTINGS} == {k: femur[k] for k in CHECKED_SETTINGS}
    assert windows[0] == pytest.approx(window) and windows[1] != pytest.approx(window)


# --------------------------------------------------------------------------------------------
# departures from the ideal scan (issue 6): tilt, shift, round ROI, 16 bit, rings, specks,
# bridged plate

DEP = dict(group="sham", seed=5, voxel_um=12.0, shape_yx=(96, 96), length_mm=2.0,
           bone_width_mm=0.8)


def _tilt_of(direction) -> float:
    return float(np.degrees(np.arccos(abs(direction[0]) / np.linalg.norm(direction))))


@pytest.mark.parametrize("distal_first", [True, False], ids=["distal-first", "proximal-first"])
def test_tilted_femur_truth_rotates_with_the_bone(distal_first):
    from ctmorph.segment.axis import bone_axis_from_envelope

    voi = dict(voi_offset_mm=0.3, voi_height_mm=0.5)  # (complete within the 2 mm scan)
    f = make_femur(axis_tilt_deg=10.0, axis_azimuth_deg=30.0, distal_first=distal_first, **voi,
                   **DEP)
    flat = make_femur(distal_first=distal_first, **voi, **DEP)
    assert f.voi_truth.complete
    vox = f.spacing[0]
    u = np.asarray(f.params["axis_direction_zyx"])
    assert _tilt_of(u) == pytest.approx(10.0, abs=1e-9)
    assert (u[0] > 0) == distal_first  # distal to proximal in array order
    # independent check of the axis: a line through the centroids of the labelled envelope
    env = f.labels >= LABELS["marrow"]
    axis = bone_axis_from_envelope(env, spacing=f.spacing)
    assert np.degrees(np.arccos(min(1.0, abs(float(axis.direction @ u))))) < 0.3
    # the reference point is on the axis, and ref_index is its slice
    p_ref = np.asarray(f.params["ref_point_mm"])
    assert np.linalg.norm(axis.at_z(p_ref[0]) - p_ref) < 0.5 * vox
    assert f.ref_index == round(p_ref[0] / vox)
    # along the axis, the last cartilage lies within one slice distal of the reference
    # (nearest-neighbour sampling moves a voxel by at most sqrt(3)/2 voxel)
    zyx = np.argwhere(f.labels == LABELS["cartilage"]) * vox
    gap = (p_ref @ u - (zyx @ u).max()) / vox
    assert 1.0 - 0.87 <= gap <= 1.0 + 0.87
    # the truth VOI is a slab perpendicular to the axis, as long as designed
    m = f.voi_mask()
    proj = (np.argwhere(m) * vox) @ u
    n_h = round(f.voi_truth.height_mm / vox)
    assert (proj.max() - proj.min()) / vox == pytest.approx(n_h - 1, abs=2.0)
    assert (proj.min() - p_ref @ u) / vox == pytest.approx(round(0.3 / vox), abs=1.0)
    assert m.sum() > 0 and not (m & ~f.endocortical_truth).any()
    # ... and holds the same trabecular bone fraction as the untilted femur's VOI (the same
    # field, resampled): within 0.01
    assert f.voi_truth.bv_tv == pytest.approx(f.bone_truth[m].mean())
    assert f.voi_truth.bv_tv == pytest.approx(flat.voi_truth.bv_tv, abs=0.01)
    assert (f.voi_truth.z0, f.voi_truth.z1) == (np.flatnonzero(m.any(axis=(1, 2)))[0],
                                                np.flatnonzero(m.any(axis=(1, 2)))[-1] + 1)


def test_shifted_femur_moves_with_its_truth():
    flat = make_femur(**DEP)
    f = make_femur(center_offset_mm=(0.1, -0.2), **DEP)
    vox = f.spacing[0]
    z = f.voi_truth.z0
    c0 = np.argwhere(flat.labels[z] >= LABELS["marrow"]).mean(axis=0) * vox
    c1 = np.argwhere(f.labels[z] >= LABELS["marrow"]).mean(axis=0) * vox
    np.testing.assert_allclose(c1 - c0, [0.1, -0.2], atol=0.5 * vox)
    np.testing.assert_allclose(np.subtract(f.params["ref_point_mm"], flat.params["ref_point_mm"]),
                               [0.0, 0.1, -0.2], atol=1e-9)
    assert f.ref_index == flat.ref_index
    # crossing the field-of-view edge: the shaft reaches the last column
    g = make_femur(center_offset_mm=(0.0, 0.3), **DEP)
    assert (g.labels[g.voi_truth.z0][:, -1] >= LABELS["marrow"]).any()


def test_round_roi_16_bit_rings_and_specks():
    plain = make_femur(**DEP)
    f16 = make_femur(bit_depth=16, **DEP)
    assert f16.grey.dtype == np.uint16
    # same noise draws, scaled before rounding: |g16 - 257 g8| <= 257/2 + 1/2 where g8 is
    # not clipped
    g8 = plain.grey.astype(np.int64)
    ok = (g8 > 0) & (g8 < 255)
    assert np.abs(f16.grey.astype(np.int64) - 257 * g8)[ok].max() <= 129

    roi = make_femur(round_roi=True, **DEP)
    ny, nx = roi.grey.shape[1:]
    r2 = (np.arange(ny)[:, None] - (ny - 1) / 2) ** 2 + (np.arange(nx)[None, :] - (nx - 1) / 2) ** 2
    inside = r2 <= (min(ny, nx) / 2) ** 2
    assert not roi.grey[:, ~inside].any() and roi.grey[:, inside].min() >= 1
    np.testing.assert_array_equal(roi.grey[:, inside], np.maximum(plain.grey[:, inside], 1))

    rings = make_femur(rings=4, ring_amplitude=30.0, **DEP)
    diff = rings.grey.astype(np.float64) - plain.grey
    prof = np.median(diff, axis=0)  # the same rings in every slice
    assert 10.0 < np.abs(prof).max() <= 31.0
    np.testing.assert_allclose(prof, prof.T, atol=1.0)  # concentric about the centre
    np.testing.assert_allclose(prof, prof[::-1, ::-1], atol=1.0)

    sp = make_femur(specks=12, **DEP)
    bright = sp.grey >= 190
    near_bone = ndimage.binary_dilation(sp.labels >= LABELS["marrow"], iterations=3)
    lab, n = ndimage.label(bright & ~near_bone, structure=np.ones((3, 3, 3)))
    assert n == 12
    assert np.array_equal(sp.labels, plain.labels)
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.min() >= 1 and sizes.max() <= 27


def test_bridged_plate_covers_the_requested_fraction():
    kw = dict(DEP, plate_unevenness_mm=0.0)
    f = make_femur(plate_bridged_fraction=0.2, **kw)
    plain = make_femur(**kw)
    z = int(f.params["plate_mid_mm_from_distal"] / f.spacing[0])
    lab, lab0 = f.labels[z], plain.labels[z]
    cart0 = lab0 == LABELS["cartilage"]
    assert cart0.sum() > 100
    bridged = (lab == LABELS["trabecular"]) & cart0
    # the requested fraction is of the plate's inner part (0.85 of the shaft radius); the
    # cartilage reaches the cortex, so the fraction of all cartilage is a little lower
    assert 0.12 <= bridged.sum() / cart0.sum() <= 0.22
    # bridges run through the whole cartilage: the plate still ends at the same slice
    assert f.ref_index == plain.ref_index


@pytest.mark.parametrize("kwargs, match", [
    (dict(axis_tilt_deg=20.0), "axis_tilt_deg must be within"),
    (dict(bit_depth=12), "bit_depth must be 8 or 16"),
    (dict(plate_bridged_fraction=0.9), "plate_bridged_fraction must be within"),
    (dict(specks=-1), "specks, rings and ring_amplitude must be >= 0"),
    (dict(center_offset_mm=(0.0, float("nan"))), "center_offset_mm must be two finite"),
    (dict(voi_height_mm=0.0), "voi_offset_mm must be >= 0 and voi_height_mm > 0"),
])
def test_bad_departure_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_femur(**SMALL, **kwargs)
