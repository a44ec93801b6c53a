"""Density calibration: HA-rod phantoms, grey ↔ attenuation ↔ density, BMD and TMD.

Synthetic rods and bones follow one known attenuation model (:mod:`ctmorph.phantoms.rods`):
density -> attenuation is linear, attenuation -> grey goes through each scan's own CS window.
Rods and bones are reconstructed under different windows and bit depths on purpose, so only a
calibration made on attenuation can recover the truth.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from ctmorph.calibration import (
    Calibration,
    attenuation_to_grey,
    calibrate,
    check_settings,
    density_to_grey,
    find_rods,
    grey_to_attenuation,
    grey_to_density,
    load_calibration,
    parse_densities,
    save_calibration,
    scan_window,
)
from ctmorph.errors import CalibrationError, ConfigError
from ctmorph.io import read_scan, write_nrecon_folder
from ctmorph.morphometry.density import density_metrics
from ctmorph.phantoms.rods import (
    DEFAULT_HA_MODEL,
    cs_window_for_levels,
    grey_from_attenuation,
    grey_from_density,
    make_ha_phantom,
)
from ctmorph.phantoms.shapes import plates

MODEL = DEFAULT_HA_MODEL
TRUE_SLOPE, TRUE_INTERCEPT = MODEL.slope, MODEL.intercept  # 25 g/cm³ per unit, -0.3 g/cm³
VOXEL_UM = 20.0
ROD_MM = 1.0
TISSUE = 1.15  # g/cm³ HA of the synthetic trabeculae
MARROW = 0.0
# Windows: the two rods differ from each other and from the bones.
WINDOW_025 = (0.0, 0.10)
WINDOW_075 = (0.0, 0.12)
WINDOW_BONE = (-0.01, 0.09)
WINDOW_BONE16 = (-0.005, 0.11)


def _rel(value: float, truth: float) -> float:
    return abs(value / truth - 1.0)


def _phantom(folder, densities, **kw):
    kw.setdefault("voxel_size_um", VOXEL_UM)
    kw.setdefault("rod_diameter_mm", ROD_MM)
    return make_ha_phantom(folder, densities, **kw)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Two single-rod phantom scans: 0.25 g/cm³ (8-bit BMP) and 0.75 g/cm³ (16-bit TIFF)."""
    root = tmp_path_factory.mktemp("phantoms")
    low = _phantom(root / "HA025", [0.25], cs_window=WINDOW_025, seed=1)
    high = _phantom(root / "HA075", [0.75], cs_window=WINDOW_075, dtype=np.uint16, seed=2)
    return low, high


@pytest.fixture(scope="module")
def calibration(phantoms, tmp_path_factory):
    return calibrate(list(phantoms), [0.25, 0.75], qc_dir=tmp_path_factory.mktemp("qc"))


@pytest.fixture(scope="module")
def bone():
    """Plates 6 voxels thick, 10 apart, normal to x: tissue 1.15, marrow 0 g/cm³ HA."""
    mask = plates((40, 64, 64), 6, 10, axis=2, offset=3)
    density = np.where(mask, TISSUE, MARROW)
    voi = np.zeros(mask.shape, bool)
    voi[6:34, 8:56, 8:56] = True
    return mask, density, voi


# ---------------------------------------------------------------------------------------------
# grey <-> attenuation <-> density
# ---------------------------------------------------------------------------------------------


def test_grey_attenuation_known_values_and_roundtrip():
    assert grey_to_attenuation(0, (0.0, 0.1), 255) == 0.0
    assert grey_to_attenuation(255, (0.0, 0.1), 255) == pytest.approx(0.1)
    assert grey_to_attenuation(65535, (-0.01, 0.09), 65535) == pytest.approx(0.09)
    assert grey_to_attenuation(127.5, (-0.01, 0.09), 255) == pytest.approx(0.04)
    grey = np.array([0, 1000, 40000, 65535])
    back = attenuation_to_grey(
        grey_to_attenuation(grey, (-0.007, 0.05), 65535), (-0.007, 0.05), 65535
    )
    np.testing.assert_allclose(back, grey, atol=1e-9)


def test_density_threshold_is_one_attenuation_in_every_window(calibration):
    """--threshold-density: one density, a different grey per window, one attenuation."""
    for window, gmax in [(WINDOW_025, 255), (WINDOW_BONE, 255), (WINDOW_BONE16, 65535)]:
        grey = density_to_grey(0.6, calibration, window, gmax)
        assert grey_to_density(grey, calibration, window, gmax) == pytest.approx(0.6)
        assert grey_to_attenuation(grey, window, gmax) == pytest.approx(
            calibration.attenuation(0.6)
        )
    assert density_to_grey(0.6, calibration, WINDOW_025, 255) != pytest.approx(
        density_to_grey(0.6, calibration, WINDOW_BONE, 255)
    )


def test_cs_window_for_levels_links_painted_grey_to_density():
    """Generators that paint grey levels (the synthetic femur) get a consistent window."""
    window = cs_window_for_levels((60, 207), (0.0, 1.15))
    truth = Calibration(slope=TRUE_SLOPE, intercept=TRUE_INTERCEPT, r_squared=1.0)
    assert grey_to_density(60, truth, window, 255) == pytest.approx(0.0, abs=1e-9)
    assert grey_to_density(207, truth, window, 255) == pytest.approx(1.15)


def test_bad_windows_are_calibration_errors(calibration):
    with pytest.raises(CalibrationError, match="no CS window"):
        grey_to_attenuation(10, None, 255)
    with pytest.raises(CalibrationError, match="min < max"):
        density_to_grey(0.5, calibration, (0.1, 0.1), 255)


# ---------------------------------------------------------------------------------------------
# Calibration fit
# ---------------------------------------------------------------------------------------------


def test_calibration_recovers_the_line_across_windows(calibration):
    assert _rel(calibration.slope, TRUE_SLOPE) < 0.02
    assert _rel(calibration.intercept, TRUE_INTERCEPT) < 0.02
    assert calibration.r_squared == pytest.approx(1.0)
    rods = calibration.rods
    assert [r.density_g_cm3 for r in rods] == [0.25, 0.75]
    assert [r.cs_window for r in rods] == [WINDOW_025, WINDOW_075]
    assert [r.gmax for r in rods] == [255, 65535]
    for rod in rods:
        assert _rel(rod.mean_attenuation, MODEL.attenuation(rod.density_g_cm3)) < 0.01
        # The core keeps away from the edge: ~60 % of the 1 mm rod, well inside it.
        assert 0.45 < rod.core_diameter_mm < 0.75 < rod.diameter_mm
        assert rod.qc_picture is not None and rod.qc_picture.endswith(".png")


def test_calibration_records_the_settings_that_matter(calibration):
    s = calibration.settings
    assert s["source_voltage_kv"] == 70
    assert s["filter"] == "Al 0.5mm"
    assert s["beam_hardening_correction_percent"] == 30
    assert s["smoothing"] == 1
    assert s["ring_artifact_correction"] == 6
    assert s["voxel_size_um"] == pytest.approx(VOXEL_UM)
    assert "cs_min" not in s  # the windows are per rod


def test_one_folder_with_three_rods_in_a_water_tube(tmp_path):
    """Several rods in one folder, in water inside a plastic tube, least-squares fit."""
    folder = _phantom(
        tmp_path / "HA3",
        [0.75, 0.25, 0.5],  # placement order is irrelevant; densities are given increasing
        cs_window=(0.0, 0.1),
        medium_attenuation=MODEL.matrix_attenuation,
        container_wall_mm=0.2,
        seed=3,
    )
    cal = calibrate(folder, "0.25,0.5,0.75")
    assert len(cal.rods) == 3
    assert cal.r_squared > 0.999
    assert _rel(cal.slope, TRUE_SLOPE) < 0.02
    assert _rel(cal.intercept, TRUE_INTERCEPT) < 0.02


def test_round_roi_and_rod_end_caps(tmp_path):
    """ON_ROUND zeros are no data; rods ending inside the stack lose their end-cap slices."""
    folder = _phantom(
        tmp_path / "HA2",
        [0.25, 0.75],
        cs_window=(-0.005, 0.09),
        round_roi=True,
        rod_length_fraction=0.6,
        n_slices=30,
        seed=4,
    )
    rods = find_rods(folder)
    assert [r.n_slices for r in rods] == [12, 12]  # 18 rod slices minus 3 at each cap
    for rod, density in zip(rods, [0.25, 0.75], strict=True):
        assert _rel(rod.mean_attenuation, MODEL.attenuation(density)) < 0.01


def test_save_and_load_roundtrip(calibration, tmp_path):
    path = save_calibration(calibration, tmp_path / "sub" / "CALIB.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "ctmorph.calibration"
    assert {"slope", "intercept", "r_squared", "rods", "settings"} <= data.keys()
    back = load_calibration(path)
    assert back.slope == calibration.slope and back.intercept == calibration.intercept
    assert back.rods == calibration.rods
    assert back.source == str(path)
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["CALIB.json"]  # no temp


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"bad\.json: calibration file is not valid JSON"):
        load_calibration(bad)
    other = tmp_path / "other.json"
    other.write_text('{"slope": 1}', encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"other\.json: not a ctmorph calibration"):
        load_calibration(other)
    with pytest.raises(CalibrationError, match="cannot read calibration"):
        load_calibration(tmp_path / "missing.json")
    with pytest.raises(CalibrationError, match="slope must be positive"):
        Calibration(slope=-1.0, intercept=0.0, r_squared=1.0)


# ---------------------------------------------------------------------------------------------
# BMD and TMD
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "dtype"),
    [(WINDOW_BONE, np.uint8), (WINDOW_BONE16, np.uint16)],
    ids=["8bit", "16bit"],
)
def test_bmd_and_tmd_within_2_percent(calibration, bone, window, dtype):
    mask, density, voi = bone
    grey = grey_from_density(density, cs_window=window, dtype=dtype, seed=5)
    gmax = int(np.iinfo(dtype).max)
    seg = grey > density_to_grey((TISSUE + MARROW) / 2, calibration, window, gmax)
    out = density_metrics(
        grey, seg, voi, scan_window=window, gmax=gmax, calibration=calibration, tmd_erosion_vox=1
    )
    assert set(out) == {"BMD", "TMD"}
    assert _rel(out["BMD"], density[voi].mean()) < 0.02
    assert _rel(out["TMD"], TISSUE) < 0.02


def test_tmd_erosion_keeps_partial_volume_out(calibration, bone):
    mask, density, voi = bone
    grey = grey_from_density(density, cs_window=WINDOW_BONE, seed=6)
    seg = grey > density_to_grey((TISSUE + MARROW) / 2, calibration, WINDOW_BONE, 255)
    kw = {"scan_window": WINDOW_BONE, "gmax": 255, "calibration": calibration}
    no_erosion = density_metrics(grey, seg, voi, tmd_erosion_vox=0, **kw)["TMD"]
    eroded = density_metrics(grey, seg, voi, tmd_erosion_vox=1, **kw)["TMD"]
    assert _rel(no_erosion, TISSUE) > 0.02  # the surface layer is partial volume
    assert _rel(eroded, TISSUE) < _rel(no_erosion, TISSUE)


def test_fit_on_raw_grey_would_fail(bone, tmp_path):
    """The deliberately wrong path: a line grey -> density on the rods' raw grey values, applied
    to the bone's raw grey values. All scans are 8-bit; only their CS windows differ, and that
    alone makes the raw-grey BMD wrong by far more than 2 %."""
    mask, density, voi = bone
    low = _phantom(tmp_path / "HA025", [0.25], cs_window=WINDOW_025, seed=10)
    high = _phantom(tmp_path / "HA075", [0.75], cs_window=WINDOW_075, seed=11)
    cal = calibrate([low, high], [0.25, 0.75])
    grey = grey_from_density(density, cs_window=WINDOW_BONE, seed=7)
    truth = density[voi].mean()

    right = density_metrics(
        grey, grey > 128, voi, scan_window=WINDOW_BONE, gmax=255, calibration=cal
    )["BMD"]
    assert _rel(right, truth) < 0.02

    (g_low, d_low), (g_high, d_high) = [(r.mean_grey, r.density_g_cm3) for r in cal.rods]
    slope_grey = (d_high - d_low) / (g_high - g_low)
    wrong = d_low + slope_grey * (grey[voi].mean() - g_low)
    assert _rel(wrong, truth) > 0.02


def test_round_roi_zeros_are_no_data(calibration, bone):
    mask, density, voi = bone
    grey = grey_from_density(density, cs_window=WINDOW_BONE, seed=8, round_roi=True)
    valid = grey != 0
    assert not valid.all()
    kw = {"scan_window": WINDOW_BONE, "gmax": 255, "calibration": calibration}
    seg = grey > 128
    full = np.ones_like(voi)
    with_valid = density_metrics(grey, seg, full, valid=valid, **kw)["BMD"]
    assert _rel(with_valid, density[valid].mean()) < 0.02
    without = density_metrics(grey, seg, full, **kw)["BMD"]
    assert without < with_valid - 0.05  # zeros read as very low density


def test_tmd_undefined_when_erosion_leaves_no_bone(calibration, caplog):
    grey = np.full((10, 10, 10), 100, np.uint8)
    seg = np.zeros(grey.shape, bool)
    seg[:, :, 4] = True  # one-voxel plate
    voi = np.ones(grey.shape, bool)
    kw = {"scan_window": WINDOW_BONE, "gmax": 255, "calibration": calibration}
    with caplog.at_level(logging.WARNING, logger="ctmorph.calibration"):
        out = density_metrics(grey, seg, voi, tmd_erosion_vox=1, **kw)
    assert math.isnan(out["TMD"]) and math.isfinite(out["BMD"])
    assert "TMD undefined" in caplog.text
    with pytest.raises(ConfigError, match="one shape"):
        density_metrics(grey, seg[:5], voi, **kw)
    with pytest.raises(ConfigError, match="no voxel with data"):
        density_metrics(grey, seg, np.zeros_like(voi), **kw)


# ---------------------------------------------------------------------------------------------
# Settings checks
# ---------------------------------------------------------------------------------------------


def test_check_settings(calibration, tmp_path):
    same = write_nrecon_folder(
        tmp_path / "same", np.full((2, 8, 8), 9, np.uint8), voxel_size_um=VOXEL_UM * 1.01
    )
    assert check_settings(calibration, read_scan(same).log.settings()) == []
    other = write_nrecon_folder(
        tmp_path / "other",
        np.full((2, 8, 8), 9, np.uint8),
        voxel_size_um=VOXEL_UM,
        settings={"Reconstruction": {"Beam Hardening Correction (%)": "20", "Smoothing": "0"}},
    )
    problems = check_settings(calibration, read_scan(other).log.settings())
    assert problems == [
        "beam_hardening_correction_percent: scan 20.0, calibration 30.0",
        "smoothing: scan 0, calibration 1",
    ]
    assert "voxel_size_um: scan not stated" in "\n".join(check_settings(calibration, None))


# ---------------------------------------------------------------------------------------------
# Errors: one clear line naming the folder
# ---------------------------------------------------------------------------------------------


def test_error_mismatched_phantom_settings(phantoms, tmp_path):
    other = _phantom(
        tmp_path / "HA075_bh20",
        [0.75],
        cs_window=WINDOW_075,
        settings={"Reconstruction": {"Beam Hardening Correction (%)": "20"}},
    )
    with pytest.raises(
        CalibrationError,
        match=r"phantom folders disagree .*HA025 has beam_hardening_correction_percent=30.0, "
        r".*HA075_bh20 has beam_hardening_correction_percent=20.0",
    ):
        calibrate([phantoms[0], other], [0.25, 0.75])


def test_error_rod_not_found(phantoms, tmp_path):
    rng = np.random.default_rng(0)
    empty = grey_from_attenuation(rng.normal(0.0, 0.0015, (12, 64, 64)), cs_window=(-0.01, 0.1))
    folder = write_nrecon_folder(tmp_path / "air_only", empty, voxel_size_um=VOXEL_UM)
    with pytest.raises(CalibrationError, match=r"air_only: no HA rod found"):
        calibrate([phantoms[0], folder], [0.25, 0.75])


def test_error_small_bright_speck_is_not_a_rod(tmp_path):
    folder = _phantom(tmp_path / "speck", [0.75], rod_diameter_mm=0.2)
    with pytest.raises(CalibrationError, match=r"speck: no HA rod found .*0.5 mm across"):
        find_rods(folder)


def test_error_density_count_mismatch(phantoms):
    with pytest.raises(
        CalibrationError, match=r"3 densities given but 2 HA rods found \(.*HA025: 1, .*HA075: 1\)"
    ):
        calibrate(list(phantoms), [0.25, 0.5, 0.75])


def test_error_non_monotonic_fit(phantoms):
    with pytest.raises(CalibrationError, match=r"non-monotonic calibration: the 0.25 g/cm³ rod"):
        calibrate(list(phantoms)[::-1], [0.25, 0.75])


def test_error_multi_rod_densities_not_increasing(tmp_path):
    folder = _phantom(tmp_path / "HA2", [0.25, 0.75], seed=9)
    with pytest.raises(CalibrationError, match=r"HA2: holds 2 rods; .*increasing order"):
        calibrate(folder, [0.75, 0.25])


def test_error_no_cs_window(phantoms, tmp_path):
    folder = _phantom(
        tmp_path / "no_window",
        [0.75],
        settings={
            "Reconstruction": {
                "Minimum for CS to Image Conversion": None,
                "Maximum for CS to Image Conversion": None,
            }
        },
    )
    with pytest.raises(
        CalibrationError, match=r"no_window: its log has no 'Minimum/Maximum for CS to Image"
    ):
        calibrate([phantoms[0], folder], [0.25, 0.75])
    with pytest.raises(CalibrationError, match=r"no_window: its log has no"):
        scan_window(read_scan(folder))


def test_parse_densities():
    assert parse_densities("0.25, 0.75") == (0.25, 0.75)
    with pytest.raises(CalibrationError, match="at least two"):
        parse_densities("0.25")
    with pytest.raises(CalibrationError, match="'abc'"):
        parse_densities("0.25,abc")
    with pytest.raises(CalibrationError, match=">= 0"):
        parse_densities([0.25, -1])
