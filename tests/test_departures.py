"""The automatic femur VOI on generated scans that depart from the ideal one the way real scans
do (issue 6 item 1), each with known truth.

Every case is a :func:`ctmorph.phantoms.femur.make_femur` femur written as an NRecon folder
and analysed by the real pipeline (:func:`ctmorph.pipeline.measure_scan`, threshold given).
Checks: the distal end; the reference slice within 0.1 mm of the truth (along the bone axis
for a tilted bone); BV/TV, Tb.Th and Tb.Sp of the found VOI within 10 % of those of the truth
VOI, where the truth-VOI values are measured with the *same* segmentation (the pipeline's
``binarize`` + ``despeckle`` of the same grey at the same threshold) inside the generator's
truth VOI mask. That isolates VOI placement, which is what is tested: segmentation errors
cancel, so 10 % is a placement tolerance (a VOI shifted 0.1 mm along a BV/TV gradient of
~0.3 x target per 2 mm changes BV/TV by ~1.5 %; a boundary 1-2 voxels off the endocortical
surface changes TV by ~3 %).

Departures covered (test ids name them): bone axis tilted 10 degrees, either end first, 8- and
16-bit, BMP and TIFF, 4- and 8-digit indices, round-ROI zeros outside the circle, voxel
sizes 5, 12 and 20 µm (every distance in mm), a bone crossing the field-of-view edge, an
uneven and partly bridged growth plate, a scan ending before the VOI (clear error), bright
specks and ring artefacts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctmorph.config import AnalysisConfig
from ctmorph.errors import SegmentationError
from ctmorph.io import read_scan
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.morphometry import trabecular_morphometry
from ctmorph.phantoms.femur import make_femur
from ctmorph.pipeline import measure_scan
from ctmorph.segment import auto_trabecular_voi, periosteal_envelope
from ctmorph.segment.axis import AlignedSource, bone_axis_from_envelope
from ctmorph.segment.threshold import binarize, despeckle

THRESHOLD_8 = 132.0  # halfway between marrow (64) and trabecular bone (200) grey
REF_TOL_MM = 0.1  # issue 6: reference within 0.1 mm of the truth
REL_TOL = 0.10  # issue 6: BV/TV, Tb.Th, Tb.Sp within 10 % of the truth VOI's


@dataclass(frozen=True)
class Case:
    femur: dict[str, Any]
    write: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


# Small scans (128 px, 12 µm unless the case is about the voxel size, sham: the cheapest
# separation maps) and a 1 mm VOI keep the file within its time budget. The truth VOI is
# placed like the analysis VOI.
_BASE = dict(group="sham", voxel_um=12.0, shape_yx=(128, 128), length_mm=3.2)
# the tilted bone is narrower than the field of view so that its ends stay in it (160 px:
# at 1.0 mm wide the found endocortical boundary's inward bias alone costs 15 % BV/TV, see
# the voxel-5um case)
_TILT10 = dict(_BASE, seed=61, shape_yx=(160, 160), axis_tilt_deg=10.0, axis_azimuth_deg=30.0,
               bone_width_mm=1.25, length_mm=3.3)
CASES: dict[str, Case] = {
    "tilt10-proximal-first-16bit-tif": Case(
        dict(_TILT10, seed=62, axis_azimuth_deg=-120.0, distal_first=False, bit_depth=16),
        dict(file_type="tif")),
    "proximal-first-16bit-tif-8digit-index": Case(
        dict(_BASE, seed=63, distal_first=False, bit_depth=16),
        dict(file_type="tif", index_length=8, first_section=1234)),
    "round-roi-specks-rings-bmp-4digit-index": Case(
        dict(_BASE, seed=64, round_roi=True, specks=60, rings=8, ring_amplitude=40.0),
        dict(round_roi=True)),
    "fov-edge": Case(dict(_BASE, seed=65, center_offset_mm=(0.0, 0.3))),
    "uneven-bridged-plate": Case(
        dict(_BASE, seed=66, plate_unevenness_mm=0.08, plate_bridged_fraction=0.05)),
    "voxel-5um": Case(
        dict(group="sham", seed=67, voxel_um=5.0, shape_yx=(180, 180), length_mm=2.25,
             epiphysis_mm=0.5),
        config=dict(roi_offset_mm=0.5, roi_height_mm=0.5)),
    "voxel-20um": Case(dict(group="OVX", seed=68, voxel_um=20.0, shape_yx=(100, 100),
                            length_mm=3.4)),
}


def _config(case: Case) -> AnalysisConfig:
    kw = dict(roi_offset_mm=1.0, roi_height_mm=1.0, threshold=THRESHOLD_8)
    kw.update(case.config)
    return AnalysisConfig(**kw)


def _build(name: str, case: Case, root: Path):
    cfg = _config(case)
    f = make_femur(voi_offset_mm=cfg.roi_offset_mm, voi_height_mm=cfg.roi_height_mm,
                   **case.femur)
    folder = write_nrecon_folder(root / name, f.grey, voxel_size_um=f.voxel_um, **case.write)
    thr = THRESHOLD_8 * (257.0 if f.grey.dtype == np.uint16 else 1.0)  # same CS window
    return f, folder, cfg, thr


def _segment(grey: np.ndarray, thr: float, cfg: AnalysisConfig, no_data_zero: bool):
    """The pipeline's segmentation (binarize + despeckle, no-data zeros excluded)."""
    valid = grey != 0 if no_data_zero else None
    bone = binarize(grey, thr, sigma_vox=cfg.smooth_sigma_vox)
    if valid is not None:
        bone &= valid
    return despeckle(bone, min_bone_voxels=cfg.min_bone_voxels,
                     min_marrow_voxels=cfg.min_marrow_voxels, valid=valid)


def _truth_metrics(f, bone: np.ndarray, cfg: AnalysisConfig) -> dict[str, float]:
    """BV/TV, Tb.Th, Tb.Sp of the same segmentation inside the truth VOI (marrow bounded by
    the true endocortical surface), with the pipeline's context slices."""
    mask = f.voi_mask()
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    ctx = int(round(cfg.context_mm / f.spacing[0]))
    a, b = max(0, zs[0] - ctx), min(mask.shape[0], zs[-1] + 1 + ctx)
    tb = trabecular_morphometry(bone[a:b], mask[a:b], spacing=f.spacing,
                                marrow_space=f.endocortical_truth[a:b],
                                convention=cfg.thickness_convention)
    return {k: tb[k] for k in ("BV/TV", "Tb.Th", "Tb.Sp")}


def _ref_error_mm(f, found_section: int, first_section: int) -> float:
    """Distance along the bone axis between the found and the true reference: both are the
    sections where the axis crosses the reference plane."""
    cos_t = abs(f.params["axis_direction_zyx"][0])
    return abs(found_section - (first_section + f.ref_index)) * f.spacing[0] / cos_t


def _check_placement(name: str, f, row_like: dict[str, Any], truth: dict[str, float],
                     first_section: int) -> None:
    err = _ref_error_mm(f, row_like["ref_slice"], first_section)
    assert err <= REF_TOL_MM, f"{name}: reference {err:.3f} mm from the truth"
    for key in ("BV/TV", "Tb.Th", "Tb.Sp"):
        assert row_like[key] == pytest.approx(truth[key], rel=REL_TOL), (
            f"{name}: {key} {row_like[key]:.4g} vs truth VOI {truth[key]:.4g}"
        )


@pytest.mark.parametrize(
    "name", list(CASES)
)
def test_departure_case(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    f, folder, cfg, thr = _build(name, case, tmp_path)
    first = case.write.get("first_section", 0)
    scan = read_scan(folder)
    assert scan.dtype == f.grey.dtype and scan.no_data_zero == bool(case.write.get("round_roi"))

    res = measure_scan(folder, cfg, threshold=thr)
    row = res.row
    assert row["distal_end"] == f.distal_end
    tilt = f.params["axis_tilt_deg"]
    if tilt:
        # the pipeline aligns to the bone axis and records the angle
        assert row["axis_aligned"] is True
        assert row["axis_tilt_deg"] == pytest.approx(abs(tilt), abs=0.5)
    bone = _segment(f.grey, thr, cfg, scan.no_data_zero)
    _check_placement(name, f, row, _truth_metrics(f, bone, cfg), first)


def test_tilt10_distal_first_8bit_bmp_aligned_by_hand(tmp_path: Path) -> None:
    """The pipeline's alignment (the tilt10 case above) redone by hand from public
    functions: fit the axis to the envelope of the segmented scan, resample the scan along it
    (:class:`AlignedSource`), find the VOI in the aligned frame. The reference, reported as
    the base section where the axis crosses it, is within 0.1 mm of the truth along the axis,
    and the VOI's numbers (in the aligned frame) within 10 % of the truth VOI's (in the scan
    frame)."""
    name = "tilt10-distal-first-8bit-bmp-aligned-by-hand"
    case = Case(_TILT10)
    f, folder, cfg, thr = _build(name, case, tmp_path)
    scan = read_scan(folder)
    bone = _segment(scan.read_volume(), thr, cfg, scan.no_data_zero)
    axis = bone_axis_from_envelope(periosteal_envelope(bone, spacing=scan.spacing),
                                   spacing=scan.spacing)
    # fitted tilt within 0.3 degrees of the truth (centroids to a fraction of a voxel)
    u = np.asarray(f.params["axis_direction_zyx"])
    assert math.degrees(math.acos(min(1.0, abs(float(axis.direction @ u))))) < 0.3
    src = AlignedSource(scan, axis)
    grey_a = src.read_slab(0, src.shape[0])
    bone_a = _segment(grey_a, thr, cfg, src.no_data_zero)
    tv = auto_trabecular_voi(bone_a, spacing=src.spacing, offset_mm=cfg.roi_offset_mm,
                             height_mm=cfg.roi_height_mm)
    assert tv.distal_end == f.distal_end
    ctx = int(round(cfg.context_mm / src.spacing[0]))
    a, b = max(0, tv.z0 - ctx), min(src.shape[0], tv.z1 + ctx)
    found = trabecular_morphometry(bone_a[a:b], tv.voi[a:b], spacing=src.spacing,
                                   marrow_space=tv.region[a:b])
    row_like = {"ref_slice": int(src.sections[tv.ref_index]), **found}
    _check_placement(name, f, row_like, _truth_metrics(f, bone, cfg), 0)


def test_truncated_scan_is_a_clear_error(tmp_path: Path) -> None:
    """A scan that ends before the VOI would: SegmentationError naming the scan."""
    cfg = AnalysisConfig(roi_offset_mm=1.0, roi_height_mm=1.0, threshold=THRESHOLD_8)
    f = make_femur(group="sham", seed=69, voxel_um=12.0, shape_yx=(128, 128), length_mm=2.2,
                   voi_offset_mm=1.0, voi_height_mm=1.0)
    assert not f.voi_truth.complete
    folder = write_nrecon_folder(tmp_path / "truncated_01", f.grey, voxel_size_um=12.0)
    with pytest.raises(SegmentationError,
                       match=r"^truncated_01: scan ends [0-9.]+ mm proximal of the growth "
                             r"plate; the VOI needs 2\.0 mm"):
        measure_scan(folder, cfg, threshold=THRESHOLD_8)
