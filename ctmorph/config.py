"""Analysis settings: one frozen, validated dataclass saved with every result."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["AnalysisConfig", "ALIGN_MODES", "DISTAL_ENDS", "ROI_MODES", "THICKNESS_CONVENTIONS"]

THICKNESS_CONVENTIONS = ("corrected", "uncorrected")
ROI_MODES = ("auto", "full", "envelope", "mask")
DISTAL_ENDS = ("auto", "first", "last")
ALIGN_MODES = ("auto", "off")


@dataclass(frozen=True)
class AnalysisConfig:
    """Every setting that changes the numbers of an analysis.

    Attributes
    ----------
    threshold : float or "otsu"
        Global bone threshold in grey values of the (smoothed) slices, or ``"otsu"``: Otsu's
        threshold of the pooled histogram of all scans of the run (of the one scan when a scan
        is analysed alone).
    roi : {"auto", "full", "envelope", "mask"}
        ``auto``: endocortical trabecular VOI of a rat distal femur placed from the growth
        plate; ``full``: every voxel with data is in the VOI; ``envelope``: the region
        enclosed by the specimen's outer surface (cores, vertebrae, other bones; see
        :func:`ctmorph.segment.voi.envelope_region`); ``mask``: the user-drawn mask
        ``roi_mask``.
    roi_mask : str or None
        With ``roi="mask"`` (and only then): a multi-page TIFF or a folder of TIFF slices,
        same shape as the scan, nonzero inside (:func:`ctmorph.segment.voi.open_roi_mask`).
    roi_offset_frac, roi_height_frac : float or None
        With ``roi="auto"``: VOI start (proximal of the growth-plate reference) and length
        as fractions of the bone length ``L`` (the scan must hold the whole bone; see
        :func:`ctmorph.segment.voi.whole_bone_extent`); when given, ``roi_offset_frac * L``
        replaces ``roi_offset_mm`` and ``roi_height_frac * L`` replaces ``roi_height_mm``.
        ``0 <= roi_offset_frac < 1``, ``0 < roi_height_frac <= 1``.
    roi_offset_mm, roi_height_mm : float
        VOI start proximal of the growth-plate reference slice and VOI length, in mm.
    ref_slice : int or None
        With ``roi="auto"``: the growth-plate reference given by hand (a section number, as the
        slice files are numbered) instead of the automatic one; the VOI is placed from it as
        usual (``voi_source`` ``manual ref``).
    voi_first_slice, voi_last_slice : int or None
        With ``roi="auto"``: the VOI's first and last section given by hand (both or neither;
        instead of a reference; ``voi_source`` ``manual VOI``). The endocortical region of
        those sections is the VOI.
    align : {"auto", "off"}
        With ``roi="auto"``: fit the bone's long axis to the periosteal envelope and, when it
        is tilted by 3° or more from the slice normal, analyse the scan resampled (linear
        interpolation) in slices perpendicular to the axis; the angle is reported either way
        (``axis_tilt_deg``). ``off``: use the slices as they are.
    distal_end : {"auto", "first", "last"}
        Which end of the stack is distal (``first`` = lowest section number).
    smooth_sigma_vox : float
        Gaussian smoothing before thresholding, sigma in voxels (0 = none).
    min_bone_voxels, min_marrow_voxels : int
        Bone islands (26-connected) and closed marrow pores (6-connected) smaller than this
        are removed / filled before measuring.
    thickness_convention : {"corrected", "uncorrected"}
        Local-thickness convention (docs/DESIGN.md §4): ``corrected`` subtracts half a voxel from
        the centre-to-centre sphere diameter so plates of n voxels measure n ± 0.5 voxels;
        ``uncorrected`` reproduces the centre-to-centre values of older BoneJ/CTAn numbers.
    context_mm : float
        Slices beyond each end of the VOI loaded as context for local thickness, in mm.
    voxel_size_um : float or None
        Voxel size override in µm (required for plain TIFF stacks without a log).
    calibration : str or None
        Path of a ``CALIB.json`` from ``ctmorph calibrate``; adds BMD and TMD (g/cm³ HA).
    threshold_density : float or None
        Global threshold in g/cm³ HA, converted to grey per scan through its own CS window
        (needs ``calibration``; replaces ``threshold``).
    threshold_attenuation : float or None
        Global threshold in attenuation (NRecon CS units, the unit of the log's ``Minimum/
        Maximum for CS to Image Conversion`` window), converted to grey per scan through its
        own CS window (replaces ``threshold``; every scan needs a window).
    tmd_erosion_vox : float
        TMD leaves out bone voxels within this distance (voxels) of the bone surface, so
        partial-volume voxels do not lower it.
    strict_calibration : bool
        Fail a scan whose reconstruction settings differ from the calibration's, instead of
        warning and flagging it in ``calibration_mismatch``.
    cortical_offset_mm : float or None
        With ``roi="auto"``: also measure cortical bone in a diaphyseal VOI starting this far
        proximal of the growth-plate reference (None = no cortical analysis).
    cortical_height_mm : float
        Length of the cortical VOI in mm.
    save_maps : bool
        Also write the local thickness and separation maps of the VOI slab as float32 TIFF
        stacks in mm (``OUT/<scan>/maps/``), for viewing in Fiji.
    """

    threshold: float | Literal["otsu"] = "otsu"
    roi: Literal["auto", "full", "envelope", "mask"] = "auto"
    roi_offset_mm: float = 1.0
    roi_height_mm: float = 2.0
    ref_slice: int | None = None
    voi_first_slice: int | None = None
    voi_last_slice: int | None = None
    roi_mask: str | None = None
    roi_offset_frac: float | None = None
    roi_height_frac: float | None = None
    distal_end: Literal["auto", "first", "last"] = "auto"
    align: Literal["auto", "off"] = "auto"
    smooth_sigma_vox: float = 1.0
    min_bone_voxels: int = 50
    min_marrow_voxels: int = 50
    thickness_convention: str = "corrected"
    context_mm: float = 0.5
    voxel_size_um: float | None = None
    calibration: str | None = None
    threshold_density: float | None = None
    threshold_attenuation: float | None = None
    tmd_erosion_vox: float = 1.0
    strict_calibration: bool = False
    save_maps: bool = False
    cortical_offset_mm: float | None = None
    cortical_height_mm: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.threshold, str):
            if self.threshold != "otsu":
                raise ConfigError(
                    f"threshold must be a grey value or 'otsu', got {self.threshold!r}"
                )
        elif not (isinstance(self.threshold, int | float) and math.isfinite(self.threshold)):
            raise ConfigError(f"threshold must be a finite grey value, got {self.threshold!r}")
        if self.roi not in ROI_MODES:
            raise ConfigError(f"roi must be one of {', '.join(ROI_MODES)}, got {self.roi!r}")
        if self.roi == "mask" and not self.roi_mask:
            raise ConfigError("roi=mask needs a mask file (--roi-mask FILE)")
        if self.roi_mask is not None and self.roi != "mask":
            raise ConfigError(f"a VOI mask (--roi-mask) needs roi=mask, got roi={self.roi!r}")
        for name, lo_ok, hi_ok, what in (
            ("roi_offset_frac", lambda v: v >= 0, lambda v: v < 1, "in [0, 1)"),
            ("roi_height_frac", lambda v: v > 0, lambda v: v <= 1, "in (0, 1]"),
        ):
            v = getattr(self, name)
            if v is None:
                continue
            if self.roi != "auto":
                raise ConfigError(f"{name} (a fraction of bone length) needs roi=auto, "
                                  f"got roi={self.roi!r}")
            if not (isinstance(v, int | float) and math.isfinite(v) and lo_ok(v) and hi_ok(v)):
                raise ConfigError(f"{name} must be a fraction of bone length {what}, got {v!r}")
        if (self.roi_offset_frac is not None and self.roi_height_frac is not None
                and self.roi_offset_frac + self.roi_height_frac > 1 + 1e-9):
            raise ConfigError(
                f"roi_offset_frac + roi_height_frac must be <= 1 (the VOI ends inside the "
                f"bone), got {self.roi_offset_frac:g} + {self.roi_height_frac:g}"
            )
        for name in ("ref_slice", "voi_first_slice", "voi_last_slice"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be a section number (an integer >= 0), "
                                  f"got {v!r}")
            if self.roi != "auto":
                raise ConfigError(f"{name} places the VOI of a femur by hand: needs roi=auto, "
                                  f"got roi={self.roi!r}")
        if (self.voi_first_slice is None) != (self.voi_last_slice is None):
            raise ConfigError("a VOI given by hand needs both voi_first_slice and "
                              "voi_last_slice")
        if self.voi_first_slice is not None:
            if self.ref_slice is not None:
                raise ConfigError("give the growth-plate reference (ref_slice) or the VOI "
                                  "(voi_first_slice, voi_last_slice) by hand, not both")
            if self.voi_last_slice < self.voi_first_slice:
                raise ConfigError(f"voi_last_slice {self.voi_last_slice} is before "
                                  f"voi_first_slice {self.voi_first_slice}")
        if self.align not in ALIGN_MODES:
            raise ConfigError(f"align must be 'auto' or 'off', got {self.align!r}")
        if self.distal_end not in DISTAL_ENDS:
            raise ConfigError(f"distal_end must be auto, first or last, got {self.distal_end!r}")
        if not self.roi_offset_mm >= 0:
            raise ConfigError(f"roi_offset_mm must be >= 0 mm, got {self.roi_offset_mm!r}")
        if not self.roi_height_mm > 0:
            raise ConfigError(f"roi_height_mm must be > 0 mm, got {self.roi_height_mm!r}")
        if not self.smooth_sigma_vox >= 0:
            raise ConfigError(f"smooth_sigma_vox must be >= 0, got {self.smooth_sigma_vox!r}")
        if self.min_bone_voxels < 0 or self.min_marrow_voxels < 0:
            raise ConfigError("speck sizes must be >= 0 voxels")
        if self.thickness_convention not in THICKNESS_CONVENTIONS:
            raise ConfigError(
                f"thickness_convention must be one of {THICKNESS_CONVENTIONS}, "
                f"got {self.thickness_convention!r}"
            )
        if not self.context_mm >= 0:
            raise ConfigError(f"context_mm must be >= 0 mm, got {self.context_mm!r}")
        if self.voxel_size_um is not None and not (
            math.isfinite(self.voxel_size_um) and self.voxel_size_um > 0
        ):
            raise ConfigError(
                f"voxel size must be a positive number of µm, got {self.voxel_size_um!r}"
            )

        if self.threshold_density is not None:
            if self.calibration is None:
                raise ConfigError(
                    "a threshold in density units needs a calibration (--calibration)"
                )
            if not math.isfinite(self.threshold_density):
                raise ConfigError(
                    f"threshold_density must be finite (g/cm³ HA), got {self.threshold_density!r}"
                )
        if self.threshold_attenuation is not None:
            if self.threshold_density is not None:
                raise ConfigError("give the threshold in one unit: threshold_attenuation or "
                                  "threshold_density, not both")
            if not (isinstance(self.threshold_attenuation, int | float)
                    and math.isfinite(self.threshold_attenuation)):
                raise ConfigError(f"threshold_attenuation must be a finite attenuation, got "
                                  f"{self.threshold_attenuation!r}")
        if self.cortical_offset_mm is not None:
            if self.roi != "auto":
                raise ConfigError("a cortical VOI is placed from the growth plate: needs roi=auto")
            if not self.cortical_offset_mm >= 0:
                raise ConfigError(
                    f"cortical_offset_mm must be >= 0 mm, got {self.cortical_offset_mm!r}"
                )
        if not self.cortical_height_mm > 0:
            raise ConfigError(
                f"cortical_height_mm must be > 0 mm, got {self.cortical_height_mm!r}"
            )
        if not self.tmd_erosion_vox >= 0:
            raise ConfigError(f"tmd_erosion_vox must be >= 0 voxels, got {self.tmd_erosion_vox!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of all settings."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> AnalysisConfig:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """Stable hash of the settings, ``sha256:<hex16>``, for provenance and resumption."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
