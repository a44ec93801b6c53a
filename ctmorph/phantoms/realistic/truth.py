"""A realistic femur scan and its truth: the reference section, the truth VOI and its
morphometry, JSON records (:class:`RealisticFemur`)."""


from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .design import (
    BRIDGE,
    MARROW,
    REFERENCE_CS_WINDOW,
    TRAB,
    Anatomy,
    ScanSettings,
    Specimen,
)
from .model import FemurModel

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# truth records


@dataclass(frozen=True)
class ReferenceTruth:
    """The growth-plate reference of a scan, by ctmorph's definition (module notes).

    Attributes
    ----------
    section : int
        Reference section (axial section index; section ``k`` is centred at ``t = k dz``).
    axis_mm : float
        ``t`` of the reference section: mm along the axis from the axis point in slice 0's
        plane (negative when the distal end is last).
    anatomical_mm : float
        The same plane's anatomical level: mm proximal of the condyles' distal-most level.
    slice_position : float
        Scan z index (fractional) where the axis crosses the reference plane.
    slice_index : int
        That position rounded (the array index a tilted scan's reference is reported at).
    section_number : int
        ``first_section + slice_index`` (the section number in the file names).
    distal_section, distal_axis_mm, distal_anatomical_mm, distal_slice_index, \
distal_section_number
        The same for the distal-most section holding cartilage.
    design_anatomical_mm : float
        The continuous model's proximal-most cartilage level (mm, anatomical), before voxels.
    """

    section: int
    axis_mm: float
    anatomical_mm: float
    slice_position: float
    slice_index: int
    section_number: int
    distal_section: int
    distal_axis_mm: float
    distal_anatomical_mm: float
    distal_slice_index: int
    distal_section_number: int
    design_anatomical_mm: float


@dataclass(frozen=True)
class TruthVoi:
    """The truth trabecular VOI (see the module notes).

    Attributes
    ----------
    offset_mm, height_mm : float
        Placement (mm proximal of the reference, length).
    first_section, last_section : int
        Axial section range (inclusive), distal to proximal.
    slice_indices : (int, int)
        Scan z indices where the axis crosses the first and the last section.
    voi_first_slice, voi_last_slice : int
        Section numbers (file names) of those crossings, the lower first (as ctmorph reports
        ``voi_first_slice``/``voi_last_slice``).
    complete : bool
        The VOI lies inside the scan (it touches neither the first nor the last slice).
    n_voxels : int
        Voxels in the VOI.
    bv_tv : float
        Bone voxels / VOI voxels (fraction; NaN for an empty VOI).
    bv_tv_design : float
        The design target (fraction).
    """

    offset_mm: float
    height_mm: float
    first_section: int
    last_section: int
    slice_indices: tuple[int, int]
    voi_first_slice: int
    voi_last_slice: int
    complete: bool
    n_voxels: int
    bv_tv: float
    bv_tv_design: float


@dataclass(eq=False)
class RealisticFemur:
    """A realistic synthetic femur scan and its truth.

    Attributes
    ----------
    grey : (Z, Y, X) ndarray of uint8 or uint16
        The reconstruction under :attr:`cs_window` (``bit_depth`` bits).
    labels : (Z, Y, X) ndarray of uint8
        :data:`LABELS` per voxel (the truth, before blur, noise and artefacts).
    voi_mask : (Z, Y, X) ndarray of bool
        The truth VOI (empty without a reference).
    reference : ReferenceTruth or None
        None when the femur has no growth-plate cartilage (adult).
    voi : TruthVoi or None
        None without a reference.
    anatomy, specimen, scan : Anatomy, Specimen, ScanSettings
    seed : int
    rotation : (3, 3) ndarray
        ``M``: anatomical vectors to scan vectors (``p = origin_mm + M a``).
    origin_mm : (3,) ndarray
        ``C``: scan position (mm) of the anatomical origin.
    axis_point_mm : (3,) ndarray
        ``A``: where the bone axis crosses slice 0's plane (scan mm).
    layout : dict
        Derived numbers: field of view, tube and bubble geometry, timings.
    model : FemurModel
        The continuous femur (labels at any anatomical point).
    """

    grey: np.ndarray
    labels: np.ndarray
    voi_mask: np.ndarray
    reference: ReferenceTruth | None
    voi: TruthVoi | None
    anatomy: Anatomy
    specimen: Specimen
    scan: ScanSettings
    seed: int
    rotation: np.ndarray
    origin_mm: np.ndarray
    axis_point_mm: np.ndarray
    layout: dict[str, Any]
    model: FemurModel = field(repr=False)
    morphometry_cache: dict[str, float] | None = field(default=None, repr=False)

    @property
    def voxel_um(self) -> float:
        """Voxel size in µm."""
        return float(self.scan.voxel_um)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(dz, dy, dx)`` in mm."""
        v = self.scan.voxel_um / 1000.0
        return (v, v, v)

    @property
    def distal_end(self) -> Literal["first", "last"]:
        """Which end of the stack is distal."""
        return "first" if self.scan.distal_first else "last"

    @property
    def cs_window(self) -> tuple[float, float]:
        """CS window of :attr:`grey` (NRecon attenuation units)."""
        return self.scan.window

    @property
    def bone(self) -> np.ndarray:
        """(Z, Y, X) bool: bone (:data:`BONE_LABELS`)."""
        return self.labels >= TRAB

    @property
    def endocortical(self) -> np.ndarray:
        """(Z, Y, X) bool: the endocortical region (:data:`ENDOCORTICAL_LABELS`)."""
        return (self.labels >= MARROW) & (self.labels <= BRIDGE)

    @property
    def axis_direction(self) -> np.ndarray:
        """(3,) unit vector of the bone axis, distal to proximal, scan frame ``(z, y, x)``."""
        return self.rotation[:, 0].copy()

    @property
    def axis_tilt_deg(self) -> float:
        """Angle (degrees) between the bone axis and the slice normal."""
        return math.degrees(math.acos(min(1.0, abs(float(self.rotation[0, 0])))))

    def anatomical_coordinates(self, index: np.ndarray) -> np.ndarray:
        """Anatomical coordinates (mm) of scan indices ``(..., 3)`` (fractional allowed)."""
        p = np.asarray(index, dtype=np.float64) * (self.scan.voxel_um / 1000.0)
        return (p - self.origin_mm) @ self.rotation

    def scan_index(self, anatomical_mm: np.ndarray) -> np.ndarray:
        """Scan indices (fractional) of anatomical points ``(..., 3)`` in mm."""
        a = np.asarray(anatomical_mm, dtype=np.float64)
        return (self.origin_mm + a @ self.rotation.T) / (self.scan.voxel_um / 1000.0)

    def axial_position(self, index: np.ndarray) -> np.ndarray:
        """Axial coordinate ``t`` (mm) of scan indices ``(..., 3)`` (module notes)."""
        p = np.asarray(index, dtype=np.float64) * (self.scan.voxel_um / 1000.0)
        return (p - self.axis_point_mm) @ self.axis_direction

    def departures(self) -> list[str]:
        """Short descriptions of how this femur departs from an ideal, untilted scan."""
        a, sp, sc = self.anatomy, self.specimen, self.scan
        out = [f"trabecular design {a.group}", f"size {a.size:g}", f"voxel {sc.voxel_um:g} um",
               f"{sc.bit_depth}-bit", "distal first" if sc.distal_first else "distal last"]
        if sc.tilt_deg > 0:
            out.append(f"tilt {sc.tilt_deg:g} deg toward {sc.tilt_azimuth_deg:g} deg")
        if sc.spin_deg % 360:
            out.append(f"spin {sc.spin_deg:g} deg")
        off = math.hypot(*sp.bone_offset_mm) + math.hypot(*sc.tube_offset_mm)
        if off > 0:
            out.append(f"off centre (bone {tuple(sp.bone_offset_mm)}, tube "
                       f"{tuple(sc.tube_offset_mm)} mm)")
        if not a.plate_present:
            out.append("no growth plate (adult, closed)")
        else:
            shape = "flat plate" if a.plate_shape == "flat" else \
                f"{a.plate_shape} plate {a.plate_amplitude_mm:g} mm high"
            out.append(f"{shape}, {a.plate_thickness_mm:g} mm thick")
            if a.plate_tilt_deg > 0:
                out.append(f"plate tilted {a.plate_tilt_deg:g} deg to the shaft")
            if a.bridged_fraction > 0:
                out.append(f"bridges {100 * a.bridged_fraction:g} %")
            if a.bridged_fraction > 0.5:
                out.append("mostly closed plate")
            if a.plate_thickness_mm <= 0.08:
                out.append("thin plate")
            if a.primary_bv_tv <= 0.3 or a.cartilage_grey >= 74:
                out.append(f"faint plate (primary spongiosa {100 * a.primary_bv_tv:g} %, "
                           f"cartilage grey {a.cartilage_grey:g})")
        d = a.design
        if d.bv_tv <= 0.1:
            out.append(f"sparse bone (BV/TV {100 * d.bv_tv:g} %)")
        if sp.bubbles:
            out.append(f"{sp.bubbles} bubbles")
        if sp.soft_tissue_coverage > 0 and sp.soft_tissue_mm > 0:
            out.append(f"muscle remnants {100 * sp.soft_tissue_coverage:g} % up to "
                       f"{sp.soft_tissue_mm:g} mm")
        if sp.foam_end:
            out.append(f"foam at the {sp.foam_end} end")
        if sc.rings:
            out.append(f"{sc.rings} rings")
        if sc.specks:
            out.append(f"{sc.specks} specks")
        if sc.round_roi:
            out.append("round ROI")
        if sc.cupping_grey > 0:
            out.append(f"cupping {sc.cupping_grey:g}")
        if sc.cs_window is not None and tuple(sc.cs_window) != REFERENCE_CS_WINDOW:
            out.append(f"CS window {sc.cs_window[0]:g}..{sc.cs_window[1]:g}")
        if sc.fov_margin_mm < 0:
            out.append("field of view cuts the tube")
        return out

    def truth_morphometry(self) -> dict[str, float]:
        """BV/TV (%), Tb.Th, Tb.Sp (mm), Tb.N (1/mm) and the rest of
        :func:`ctmorph.morphometry.trabecular_morphometry` of the truth bone in the truth VOI.

        Computed once (cached) on the VOI's bounding box plus 0.3 mm of context, with the
        endocortical region as the marrow space (the cortex bounds marrow), spacing in mm.
        Empty dict without a VOI.
        """
        if self.morphometry_cache is not None:
            return dict(self.morphometry_cache)
        if self.voi is None or self.voi.n_voxels == 0:
            self.morphometry_cache = {}
            return {}
        from ...morphometry import trabecular_morphometry

        idx = np.nonzero(self.voi_mask.any(axis=(1, 2)))[0]
        iy = np.nonzero(self.voi_mask.any(axis=(0, 2)))[0]
        ix = np.nonzero(self.voi_mask.any(axis=(0, 1)))[0]
        m = int(math.ceil(0.3 / self.spacing[0]))
        box = tuple(slice(max(0, int(r[0]) - m), min(n, int(r[-1]) + 1 + m))
                    for r, n in zip((idx, iy, ix), self.labels.shape, strict=True))
        lab = self.labels[box]
        res = trabecular_morphometry(lab >= TRAB, self.voi_mask[box], spacing=self.spacing,
                                     marrow_space=(lab >= MARROW) & (lab <= BRIDGE))
        self.morphometry_cache = {k: float(v) for k, v in res.items()}
        return dict(self.morphometry_cache)

    def params(self) -> dict[str, Any]:
        """Everything needed to reproduce and describe the femur (JSON-ready)."""
        return {
            "seed": int(self.seed),
            "anatomy": jsonable(asdict(self.anatomy)),
            "design": jsonable(asdict(self.anatomy.design)),
            "specimen": jsonable(asdict(self.specimen)),
            "scan_settings": jsonable(asdict(self.scan)),
            "cs_window": [float(v) for v in self.cs_window],
        }

    def truth_record(self) -> dict[str, Any]:
        """JSON-ready truth: parameters, frame, reference, VOI, departures and the layout
        (without timings, so the record is the same on every run)."""
        nz, ny, nx = self.labels.shape
        first = int(self.scan.first_section)
        rec: dict[str, Any] = {
            **self.params(),
            "shape": [nz, ny, nx],
            "voxel_um": self.voxel_um,
            "bit_depth": int(self.scan.bit_depth),
            "distal_end": self.distal_end,
            "first_section": first,
            "axis_direction_zyx": jsonable(self.axis_direction),
            "axis_point_mm": jsonable(self.axis_point_mm),
            "axis_tilt_deg": round(self.axis_tilt_deg, 4),
            "anatomical_origin_mm": jsonable(self.origin_mm),
            "anatomical_rotation": jsonable(self.rotation),
            "reference": None if self.reference is None else jsonable(asdict(self.reference)),
            "ref_slice": None if self.reference is None else self.reference.section_number,
            "voi": None if self.voi is None else jsonable(asdict(self.voi)),
            "departures": self.departures(),
            "layout": jsonable({k: v for k, v in self.layout.items() if k != "seconds"}),
        }
        if self.voi is not None:
            rec["voi_first_slice"] = self.voi.voi_first_slice
            rec["voi_last_slice"] = self.voi.voi_last_slice
        return rec

    def write_nrecon(self, folder: str | os.PathLike[str], *, file_type: str | None = None
                     ) -> Path:
        """Write the scan as an NRecon folder (log with voxel size, CS window, round-ROI flag).

        Parameters
        ----------
        folder : str or path
            The scan folder; its name is the scan name.
        file_type : {'bmp', 'tif', 'png'}, optional
            Default: 8-bit BMP, 16-bit TIFF.

        Returns
        -------
        pathlib.Path
        """
        from ...io.writer import write_nrecon_folder

        ft = file_type or ("bmp" if self.scan.bit_depth == 8 else "tif")
        return write_nrecon_folder(
            folder, self.grey, voxel_size_um=self.voxel_um,
            first_section=int(self.scan.first_section), index_length=int(self.scan.index_length),
            file_type=ft, cs_window=self.cs_window, round_roi=bool(self.scan.round_roi),
        )


def jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return round(f, 6) + 0.0 if math.isfinite(f) else None
    return v
