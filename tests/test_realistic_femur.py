"""The realistic synthetic femur (:mod:`ctmorph.phantoms.realistic`): its truth checked on the
labels, in mm, in the axis frame and against the continuous model it is sampled from.

Femurs are small (``size`` 0.3-0.35, 20-30 µm voxels) so the file stays fast; one check of the
anatomy's dimensions uses the real rat size (``size`` 1) at 40 µm.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from ctmorph.errors import ConfigError
from ctmorph.io import read_scan
from ctmorph.morphometry import trabecular_morphometry
from ctmorph.phantoms.realistic import (
    GROUP_DESIGNS,
    LABELS,
    Anatomy,
    FemurModel,
    ScanSettings,
    Specimen,
    make_realistic_femur,
    realistic_study_design,
)

CART, BRIDGE, MARROW, CORT = (LABELS[k] for k in ("cartilage", "bridge", "marrow", "cortical"))
TRAB = LABELS["trabecular"]
SEED = 11
ANATOMY = Anatomy(size=0.35)
SPECIMEN = Specimen(bubbles=2, foam_end="distal")
WIDE = (-0.005, 0.12)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _sections(f, idx: np.ndarray) -> np.ndarray:
    """Axial section of voxel indices ``(N, 3)``, computed here from the axis truth."""
    vox = f.spacing[0]
    t = (idx * vox - f.axis_point_mm) @ f.axis_direction
    return np.rint(t / vox).astype(np.int64)


@pytest.fixture(scope="module")
def straight():
    """Untilted, distal first, 8-bit, 20 µm."""
    return make_realistic_femur(ANATOMY, SPECIMEN, ScanSettings(voxel_um=20.0), seed=SEED)


@pytest.fixture(scope="module")
def tilted():
    """The same femur tilted 10 degrees, turned, distal last, 16-bit, round ROI."""
    scan = ScanSettings(voxel_um=20.0, tilt_deg=10.0, tilt_azimuth_deg=60.0, spin_deg=30.0,
                        distal_first=False, bit_depth=16, cs_window=WIDE, round_roi=True,
                        first_section=37)
    return make_realistic_femur(ANATOMY, SPECIMEN, scan, seed=SEED)


@pytest.fixture(scope="module")
def groups(straight):
    """One femur per group (the straight femur is the sham one)."""
    out = {"sham": straight}
    for g in ("OVX+Exos", "OVX"):
        out[g] = make_realistic_femur(Anatomy(group=g, size=0.35), SPECIMEN,
                                      ScanSettings(voxel_um=20.0), seed=SEED)
    return out


def test_same_seed_gives_identical_arrays(straight):
    again = make_realistic_femur(ANATOMY, SPECIMEN, ScanSettings(voxel_um=20.0), seed=SEED)
    for name in ("grey", "labels", "voi_mask"):
        assert _digest(getattr(again, name)) == _digest(getattr(straight, name)), name
    assert again.reference == straight.reference and again.voi == straight.voi
    # another seed is another femur: compare the two continuous models at the same points
    other = FemurModel(ANATOMY, SPECIMEN, SEED + 1)
    rng = np.random.default_rng(0)
    z = rng.uniform(0.2, 3.0, 50_000).astype(np.float32)
    y = rng.uniform(-0.4, 0.4, z.size).astype(np.float32)
    x = rng.uniform(-0.4, 0.4, z.size).astype(np.float32)
    a, b = straight.model.classify(z, y, x), other.classify(z, y, x)
    assert np.mean(a != b) > 0.05


def test_labels_are_the_continuous_model_at_the_voxel_centres(tilted):
    rng = np.random.default_rng(1)
    idx = np.stack([rng.integers(0, n, 20_000) for n in tilted.labels.shape], axis=1)
    a = tilted.anatomical_coordinates(idx).astype(np.float32)
    model = tilted.model.classify(a[:, 0], a[:, 1], a[:, 2])
    lab = tilted.labels[tuple(idx.T)]
    attached = model != 255  # bone, marrow, cartilage, soft tissue: the femur's own labels
    np.testing.assert_array_equal(lab[attached], model[attached])
    assert np.all(lab[~attached] <= LABELS["fluid"])  # the rest is specimen: air .. fluid


@pytest.mark.parametrize("name", ["straight", "tilted"])
def test_reference_is_the_first_section_without_cartilage(name, request):
    f = request.getfixturevalue(name)
    ref = f.reference
    sec = _sections(f, np.argwhere(f.labels == CART))
    assert sec.max() == ref.section - 1  # the section before the reference holds cartilage
    assert sec.min() == ref.distal_section
    # every cartilage voxel centre is distal of the reference section's near boundary
    t = (np.argwhere(f.labels == CART) * f.spacing[0] - f.axis_point_mm) @ f.axis_direction
    assert np.all(t < ref.axis_mm - 0.5 * f.spacing[0] + 1e-9)
    # the slice position is where the axis crosses the reference plane
    p = f.axis_point_mm + ref.axis_mm * f.axis_direction
    assert ref.slice_position == pytest.approx(p[0] / f.spacing[0])
    assert ref.section_number == f.scan.first_section + ref.slice_index


def test_untilted_reference_is_the_first_slice_without_cartilage(straight):
    ref = straight.reference
    has = (straight.labels == CART).any(axis=(1, 2))
    assert ref.section == ref.slice_index  # distal first, untilted: sections are slices
    assert has[ref.slice_index - 1] and not has[ref.slice_index:].any()
    assert ref.distal_slice_index == int(np.flatnonzero(has)[0])


def test_axis_truth_is_the_shaft_centre_line(tilted):
    """Centroids of the bone's cross-sections in the shaft lie on the truth axis."""
    f = tilted
    lab = f.labels
    env = (lab >= MARROW) & (lab <= CORT)
    vox = f.spacing[0]
    # slices whose axis point lies in the shaft (> 1 mm proximal of the reference; sections
    # grow proximally whichever end is first)
    t_axis = (np.arange(lab.shape[0]) * vox - f.axis_point_mm[0]) / f.axis_direction[0]
    shaft = np.flatnonzero(t_axis > f.reference.axis_mm + 1.0)
    shaft = shaft[2:-2]  # not the first/last slice (cut sections)
    pts = []
    for z in shaft:
        yy, xx = np.nonzero(env[z])
        pts.append((z * vox, yy.mean() * vox, xx.mean() * vox))
    pts = np.array(pts)
    centre = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - centre)
    d = vt[0] * np.sign(vt[0] @ f.axis_direction)
    angle = math.degrees(math.acos(min(1.0, float(d @ f.axis_direction))))
    assert angle < 0.3
    off = (centre - f.axis_point_mm) - ((centre - f.axis_point_mm) @ f.axis_direction) * \
        f.axis_direction
    assert np.linalg.norm(off) < 0.5 * vox
    assert f.axis_tilt_deg == pytest.approx(10.0)


def test_sizes_are_in_mm():
    """The same femur at 20 and 30 µm: the same reference level and VOI BV/TV, and both
    references where the continuous model puts the plate's proximal edge."""
    fine = make_realistic_femur(Anatomy(size=0.3), Specimen(), ScanSettings(voxel_um=20.0),
                                seed=3)
    coarse = make_realistic_femur(Anatomy(size=0.3), Specimen(), ScanSettings(voxel_um=30.0),
                                  seed=3)
    for f in (fine, coarse):
        # voxel centres in cartilage reach the plate's edge to within a voxel; the reference
        # section starts half a voxel beyond the last of them
        dz = f.spacing[0]
        gap = f.reference.anatomical_mm - f.reference.design_anatomical_mm
        assert -0.5 * dz - 0.005 <= gap <= 1.5 * dz + 0.005
    assert fine.reference.anatomical_mm == pytest.approx(coarse.reference.anatomical_mm,
                                                         abs=0.05)
    # BV/TV of the truth VOI: the same within 1.5 percentage points (voxel sampling of
    # 0.08 mm trabeculae and VOI ends rounded to whole sections)
    assert fine.voi.bv_tv == pytest.approx(coarse.voi.bv_tv, abs=0.015)
    # VOI volume (mm³) the same within 3 %
    tv = [f.voi.n_voxels * f.spacing[0] ** 3 for f in (fine, coarse)]
    assert tv[0] == pytest.approx(tv[1], rel=0.03)


def test_tilted_truth_rotates_with_the_bone(straight, tilted):
    """Labels of the tilted scan, sampled back into the untilted scan through the anatomical
    frame, agree up to the voxel grid; the reference and the VOI BV/TV agree."""
    rng = np.random.default_rng(2)
    idx = np.argwhere(tilted.labels >= MARROW)
    idx = idx[rng.choice(len(idx), 100_000, replace=False)]
    u = np.rint(straight.scan_index(tilted.anatomical_coordinates(idx))).astype(int)
    ok = np.all((u >= 0) & (u < np.array(straight.labels.shape)), axis=1)
    assert ok.mean() > 0.95
    a = tilted.labels[tuple(idx[ok].T)]
    b = straight.labels[tuple(u[ok].T)]
    assert np.mean(a == b) > 0.9
    assert np.mean((a >= TRAB) == (b >= TRAB)) > 0.92
    assert tilted.reference.anatomical_mm == pytest.approx(straight.reference.anatomical_mm,
                                                           abs=2 * straight.spacing[0])
    assert tilted.voi.bv_tv == pytest.approx(straight.voi.bv_tv, abs=0.015)
    assert tilted.distal_end == "last"
    assert tilted.reference.slice_index > tilted.labels.shape[0] // 2


def _plate_columns(f):
    """Per (y, x) column of an untilted, distal-first scan: plate voxels (cartilage and
    bridges) and their mean z (mm), for columns well inside the plate."""
    plate = (f.labels == CART) | (f.labels == BRIDGE)
    n = plate.sum(axis=0)
    z = np.arange(f.labels.shape[0])[:, None, None] * f.spacing[0]
    zmean = np.where(n > 0, (plate * z).sum(axis=0) / np.maximum(n, 1), np.nan)
    yy, xx = np.nonzero(n > 0)
    cy, cx = yy.mean(), xx.mean()
    r = np.hypot(yy - cy, xx - cx)
    keep = r < 0.8 * r.max()
    return plate, n, zmean, yy[keep], xx[keep]


def _measure_plate(f):
    plate, n, zmean, yy, xx = _plate_columns(f)
    vox = f.spacing[0]
    a = np.column_stack([np.ones(yy.size), yy * vox, xx * vox])
    coef, *_ = np.linalg.lstsq(a, zmean[yy, xx], rcond=None)
    tilt = math.degrees(math.atan(math.hypot(coef[1], coef[2])))
    azimuth = math.degrees(math.atan2(-coef[1], -coef[2]))  # the normal leans uphill
    thickness = float(n[yy, xx].mean()) * vox * math.cos(math.radians(tilt))
    lab = f.labels[:, yy, xx]
    bridged = np.count_nonzero(lab == BRIDGE) / np.count_nonzero((lab == CART) | (lab == BRIDGE))
    return tilt, azimuth, thickness, bridged


def test_plate_thickness_tilt_and_bridges_are_as_asked():
    f = make_realistic_femur(
        Anatomy(size=0.35, plate_shape="flat", plate_ripple_mm=0.0, plate_tilt_deg=10.0,
                plate_tilt_azimuth_deg=0.0, plate_thickness_mm=0.15, bridged_fraction=0.10),
        Specimen(soft_tissue_coverage=0.0), ScanSettings(voxel_um=20.0), seed=5)
    tilt, azimuth, thickness, bridged = _measure_plate(f)
    assert tilt == pytest.approx(10.0, abs=0.5)
    assert azimuth == pytest.approx(0.0, abs=3.0)
    assert thickness == pytest.approx(0.15, rel=0.05)  # the mean over the plate
    assert bridged == pytest.approx(0.10, abs=0.025)


def test_thin_mostly_closed_plate():
    f = make_realistic_femur(
        Anatomy(size=0.3, plate_shape="flat", plate_ripple_mm=0.0, plate_tilt_deg=6.0,
                plate_tilt_azimuth_deg=90.0, plate_thickness_mm=0.06, bridged_fraction=0.6,
                bridge_size_mm=0.1),
        Specimen(soft_tissue_coverage=0.0), ScanSettings(voxel_um=15.0), seed=6)
    tilt, azimuth, thickness, bridged = _measure_plate(f)
    assert tilt == pytest.approx(6.0, abs=0.7)
    assert azimuth == pytest.approx(90.0, abs=6.0)
    assert thickness == pytest.approx(0.06, rel=0.05)
    assert bridged == pytest.approx(0.6, abs=0.05)
    assert f.reference is not None  # cartilage is left: the plate is there


def test_bv_tv_per_group(groups):
    bv = {}
    for g, f in groups.items():
        assert f.voi.complete
        counted = np.count_nonzero(f.bone & f.voi_mask) / np.count_nonzero(f.voi_mask)
        assert counted == pytest.approx(f.voi.bv_tv)
        target = GROUP_DESIGNS[g].bv_tv
        # the design VOI (continuous, where the generator calibrates) and the truth VOI
        # (whole voxel sections from the voxel reference) differ at their ends: 8 %
        assert counted == pytest.approx(target, rel=0.08), g
        bv[g] = counted
        # epiphysis: endocortical sections distal of the cartilage (beyond its bone plate)
        sec = _sections(f, np.argwhere(np.ones(f.labels.shape, bool)))
        lab = f.labels.ravel()
        epi = (sec < f.reference.distal_section - 3) & (lab >= MARROW) & (lab < CORT)
        frac = np.count_nonzero(lab[epi] >= TRAB) / np.count_nonzero(epi)
        assert frac == pytest.approx(GROUP_DESIGNS[g].epiphysis_bv_tv, abs=0.03), g
    assert bv["sham"] > bv["OVX+Exos"] > bv["OVX"]


def test_truth_morphometry_is_ctmorphs_on_the_truth_voi(straight):
    m = straight.truth_morphometry()
    assert m["BV/TV"] == pytest.approx(100.0 * straight.voi.bv_tv)
    # the same numbers as calling ctmorph on the whole arrays (the box only crops context
    # beyond 0.3 mm, more than any trabecular spacing here)
    lab = straight.labels
    whole = trabecular_morphometry(lab >= TRAB, straight.voi_mask, spacing=straight.spacing,
                                   marrow_space=(lab >= MARROW) & (lab < CORT))
    for key in ("Tb.Th", "Tb.Sp"):
        assert m[key] == pytest.approx(whole[key], rel=1e-6)
    assert 0.04 < m["Tb.Th"] < 0.15 and m["Tb.Sp"] > m["Tb.Th"]


def test_specimen_geometry(straight):
    f = straight
    lab = f.labels
    vox = f.spacing[0]
    ty, tx = f.layout["tube_centre_yx_mm"]
    jj, kk = np.meshgrid(np.arange(lab.shape[1]) * vox, np.arange(lab.shape[2]) * vox,
                         indexing="ij")
    r = np.hypot(jj - ty, kk - tx)
    attached = (lab >= LABELS["soft_tissue"]).any(axis=0)
    assert r[attached].max() < f.layout["tube_inner_radius_mm"]
    tube = (lab == LABELS["tube"]).any(axis=0)
    assert np.all(r[tube] >= f.layout["tube_inner_radius_mm"] - vox)
    # foam against the distal end (slice 0 side), nowhere else; bubbles in the fluid
    foam = np.flatnonzero((lab == LABELS["foam"]).any(axis=(1, 2)))
    assert foam.size and foam.max() < lab.shape[0] // 4 and foam.min() == 0
    assert np.count_nonzero(lab == LABELS["bubble"]) > 0
    # the grey levels follow the labels: bone bright, fluid and marrow dark
    g = f.grey.astype(float)
    assert np.median(g[lab == CORT]) > 180 and np.median(g[lab == LABELS["fluid"]]) < 80


def test_nrecon_folder_reads_back(tilted, tmp_path):
    folder = tilted.write_nrecon(tmp_path / "T1")
    scan = read_scan(folder)
    assert scan.voxel_size_um == pytest.approx(20.0)
    assert scan.dtype == np.uint16 and scan.shape == tilted.grey.shape
    assert scan.cs_window == pytest.approx(WIDE)
    assert scan.no_data_zero
    assert scan.sections[0] == 37 and scan.sections[-1] == 37 + tilted.grey.shape[0] - 1
    np.testing.assert_array_equal(scan.read_volume(), tilted.grey)
    # round ROI: zeros exactly outside the inscribed circle
    ny, nx = tilted.grey.shape[1:]
    yy, xx = np.ogrid[:ny, :nx]
    outside = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2) ** 2
    assert np.all(tilted.grey[:, outside] == 0) and np.all(tilted.grey[:, ~outside] >= 1)


def test_absent_plate_has_no_reference():
    f = make_realistic_femur(Anatomy(size=0.3, plate_present=False), Specimen(),
                             ScanSettings(voxel_um=30.0), seed=9)
    assert f.reference is None and f.voi is None
    assert not np.any(f.labels == CART) and not f.voi_mask.any()
    assert np.any(f.labels == BRIDGE)  # the growth-plate scar
    assert f.truth_morphometry() == {}
    rec = f.truth_record()
    assert rec["ref_slice"] is None and "no growth plate (adult, closed)" in rec["departures"]


def test_real_size_anatomy():
    """At size 1 the dimensions are a rat's distal femur (measured on the labels)."""
    f = make_realistic_femur(
        Anatomy(size=1.0, cell_mm=0.2, plate_amplitude_mm=0.0, plate_ripple_mm=0.0),
        Specimen(soft_tissue_coverage=0.0), ScanSettings(voxel_um=40.0, proximal_margin_mm=3.0),
        seed=2)
    lab, vox = f.labels, f.spacing[0]
    env = (lab >= MARROW) & (lab <= CORT)
    ref = f.reference.slice_index

    def extent(mask, axis):
        idx = np.flatnonzero(mask.any(axis=axis))
        return (idx[-1] - idx[0] + 1) * vox if idx.size else 0.0

    condyles = max(extent(env[z], 0) for z in range(ref))
    assert 5.0 <= condyles <= 5.6
    shaft = env[-3]
    assert 3.0 <= extent(shaft, 0) <= 3.5  # mediolateral (x)
    assert 2.5 <= extent(shaft, 1) <= 3.0  # anteroposterior (y)
    # diaphyseal cortex along the mediolateral line through the centre: 0.5-0.7 mm
    row = lab[-3, lab.shape[1] // 2]
    assert 0.5 - vox <= np.count_nonzero(row == CORT) / 2 * vox <= 0.7 + vox
    # a thin shell over the metaphysis, 0.3 mm proximal of the reference
    row = lab[ref + int(0.3 / vox), lab.shape[1] // 2]
    assert np.count_nonzero(row == CORT) / 2 * vox <= 0.1 + 2 * vox
    # the flare: the mediolateral width falls by > 1 mm from the plate to 3 mm proximal
    widths = [extent(env[z], 0) for z in (ref + 2, ref + int(3.0 / vox))]
    assert widths[0] - widths[1] > 1.0
    # two separate condyles in the most distal sections
    from scipy import ndimage

    first = np.flatnonzero(env.any(axis=(1, 2)))[0]
    assert ndimage.label(env[first + int(0.2 / vox)])[1] == 2


def test_study_design_covers_every_departure():
    designs = realistic_study_design()
    assert len(designs) == 13 and len({d["scan"] for d in designs}) == 13
    a = [d["anatomy"] for d in designs]
    s = [d["specimen"] for d in designs]
    c = [d["scan_settings"] for d in designs]
    tilts = [x.tilt_deg for x in c]
    assert max(tilts) == 12.0 and sum(t >= 4.5 for t in tilts) >= 6
    assert len({round(x.tilt_azimuth_deg) for x in c if x.tilt_deg >= 4.5}) >= 6
    assert {x.distal_first for x in c} == {True, False} and {x.bit_depth for x in c} == {8, 16}
    vox = [x.voxel_um for x in c]
    assert min(vox) <= 10 and max(vox) == 20 and all(9 <= v <= 20 for v in vox)
    assert {x.plate_shape for x in a} >= {"dome", "w"}
    assert any(x.bridged_fraction > 0.5 and x.plate_thickness_mm <= 0.08 for x in a)
    assert any(x.primary_bv_tv <= 0.3 for x in a) and any(not x.plate_present for x in a)
    assert max(x.bridged_fraction for x in a if x.bridged_fraction < 0.5) >= 0.15
    assert any(x.bridged_fraction == 0 for x in a)
    assert any(x.design.bv_tv <= 0.08 for x in a)
    assert {x.foam_end for x in s} >= {"distal", "proximal"}
    assert any(x.bubbles for x in s) and any(x.soft_tissue_mm >= 0.3 for x in s)
    assert any(math.hypot(*x.bone_offset_mm) > 0 for x in s)
    assert any(math.hypot(*x.tube_offset_mm) > 0 for x in c)
    assert all(any(getattr(x, k) for x in c) for k in ("rings", "specks", "round_roi"))
    assert all(x.cupping_grey > 0 for x in c) and any(x.cs_window for x in c)
    # deterministic
    assert realistic_study_design() == designs


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match="tilt_deg must be a finite number within 0..15"):
        ScanSettings(tilt_deg=20)
    with pytest.raises(ConfigError, match="group must be one of"):
        Anatomy(group="ovx")
    with pytest.raises(ConfigError, match="bit_depth must be 8 or 16"):
        ScanSettings(bit_depth=12)
    with pytest.raises(ConfigError, match="foam_end must be"):
        Specimen(foam_end="top")
