"""The sample femur, stage by stage: check the parameters (:class:`FemurSpec`), lay out the
cross-section and growth plate, draw and calibrate the trabecular fields, label the tissues,
find the truth and reconstruct the grey values (:func:`make_femur`)."""

from __future__ import annotations

import logging
import time
from typing import Any

from .design import VOI_HEIGHT_MM, VOI_OFFSET_MM, FemurSpec, RandomStreams
from .fields import femur_fields
from .geometry import FemurGeometry, femur_geometry
from .labels import SecondaryProfile, femur_labels
from .scan import femur_grey
from .truth import FemurPhantom, FemurTruth, voi_truth

__all__ = ["make_femur"]

logger = logging.getLogger(__name__)


def make_femur(
    *,
    group: str = "sham",
    seed: int = 0,
    voxel_um: float = 9.0,
    shape_yx: tuple[int, int] = (256, 256),
    length_mm: float = 4.2,
    distal_first: bool = True,
    plate_unevenness_mm: float = 0.04,
    plate_thickness_mm: float = 0.15,
    plate_tilt_deg: float = 0.0,
    epiphysis_mm: float = 0.75,
    bv_tv: float | None = None,
    bone_width_mm: float | None = None,
    blur_vox: float = 0.7,
    noise_sd: float = 6.0,
    axis_tilt_deg: float = 0.0,
    axis_azimuth_deg: float = 0.0,
    center_offset_mm: tuple[float, float] = (0.0, 0.0),
    plate_bridged_fraction: float = 0.0,
    specks: int = 0,
    rings: int = 0,
    ring_amplitude: float = 40.0,
    round_roi: bool = False,
    bit_depth: int = 8,
    voi_offset_mm: float = VOI_OFFSET_MM,
    voi_height_mm: float = VOI_HEIGHT_MM,
) -> FemurPhantom:
    """Build a synthetic rat distal femur scan (deterministic for a given ``seed``).

    Parameters
    ----------
    group : {'sham', 'OVX+Exos', 'OVX'}
        Sets the metaphyseal BV/TV (30 / 18 / 10 % in the truth VOI), the fraction of
        perforated trabeculae, the trabecular spacing and the epiphyseal density.
    seed : int
        Seed of every random choice; the same seed gives identical arrays.
    voxel_um : float
        Isotropic voxel size in µm.
    shape_yx : (int, int)
        Slice size in pixels. The shaft is 0.84 of the field of view wide by default (1.94 mm
        at 256 px of 9 µm) and the condyles 8 % wider.
    length_mm : float
        Scanned length along the bone in mm (number of slices = round(length / voxel)).
    distal_first : bool
        True: slice 0 is distal (``distal_end='first'``); False: the stack is reversed.
    plate_unevenness_mm : float
        Largest deviation (mm) of the wavy growth-plate mid-surface from its mean plane.
    plate_thickness_mm : float
        Cartilage thickness along the bone axis (mm).
    plate_tilt_deg : float
        Tilt of the growth plate about the y axis (degrees).
    epiphysis_mm : float
        Distance (mm) from the condyle tips to the mean distal surface of the cartilage.
    bv_tv : float, optional
        Override of the group's metaphyseal BV/TV target (fraction, 0.02-0.6).
    bone_width_mm : float, optional
        Mediolateral periosteal width of the shaft in mm (default 0.84 of the field of view).
    blur_vox : float
        Partial-volume Gaussian blur sigma in voxels.
    noise_sd : float
        Additive noise SD in grey values.
    axis_tilt_deg : float
        Angle (degrees, 0-15) between the bone's long axis and the slice normal. The whole
        bone (and the soft tissue around it) is rotated about the centre of the volume: the
        labels of the untilted femur are sampled (nearest) at rotated coordinates, then blur
        and noise are applied in the scan frame. The truth rotates with it: ``ref_index`` is
        the slice of the truth reference point on the bone axis, ``params['ref_point_mm']``
        that point, ``params['axis_direction_zyx']`` the axis (distal to proximal, array
        order), and :meth:`FemurPhantom.voi_mask` the rotated truth VOI (slices perpendicular
        to the bone axis).
    axis_azimuth_deg : float
        In-plane direction (degrees from +x towards +y) towards which the proximal end leans.
    center_offset_mm : (float, float)
        Shift (y, x) in mm of the bone axis from the image centre (a bone touching or crossing
        the field-of-view edge).
    plate_bridged_fraction : float
        Fraction (0-0.5) of the growth-plate area where bone bridges across the cartilage
        (discs of 0.04-0.1 mm diameter through the whole cartilage thickness).
    specks : int
        Number of bright specks (isolated cubes of 1-3 voxels, grey 200-255) in air and soft
        tissue, at least 4 voxels from bone.
    rings : int
        Number of ring artefacts: concentric rings about the image centre (the rotation
        centre), about 1.6 voxels wide, the same in every slice.
    ring_amplitude : float
        Largest ring amplitude in 8-bit grey values (signs alternate at random).
    round_roi : bool
        NRecon ``ON_ROUND`` reconstruction: grey exactly 0 outside the circle inscribed in the
        slice (no data), at least 1 inside.
    bit_depth : {8, 16}
        8: uint8 grey; 16: uint16 grey under the same CS window (8-bit grey × 65535 / 255,
        rounded after noise, so finer quantisation).
    voi_offset_mm, voi_height_mm : float
        Placement of the truth VOI (mm proximal of the truth reference, and length). The
        trabecular design (BV/TV profile) always follows the standard 1.0-3.0 mm VOI.

    Returns
    -------
    FemurPhantom
    """
    spec = FemurSpec(
        group=group, seed=seed, voxel_um=voxel_um, shape_yx=shape_yx, length_mm=length_mm,
        distal_first=distal_first, plate_unevenness_mm=plate_unevenness_mm,
        plate_thickness_mm=plate_thickness_mm, plate_tilt_deg=plate_tilt_deg,
        epiphysis_mm=epiphysis_mm, bv_tv=bv_tv, bone_width_mm=bone_width_mm, blur_vox=blur_vox,
        noise_sd=noise_sd, axis_tilt_deg=axis_tilt_deg, axis_azimuth_deg=axis_azimuth_deg,
        center_offset_mm=center_offset_mm, plate_bridged_fraction=plate_bridged_fraction,
        specks=specks, rings=rings, ring_amplitude=ring_amplitude, round_roi=round_roi,
        bit_depth=bit_depth, voi_offset_mm=voi_offset_mm, voi_height_mm=voi_height_mm,
    )
    spec.check()
    t_start = time.perf_counter()
    shape, vox = spec.shape, spec.vox
    streams = RandomStreams.from_seed(seed)
    geometry = femur_geometry(spec, streams)
    # random fields, kept on their coarse grids and upsampled slab by slab
    fields = femur_fields(spec.design, shape, vox, geometry, streams)
    profile = SecondaryProfile.for_scan(spec.target, fields.ref_mm_est, shape[0] * vox)
    labels = femur_labels(fields, geometry, profile, shape, vox, distal_first)
    truth = voi_truth(labels, spec)  # (rotates the labels of a tilted bone)
    grey = femur_grey(labels, distal_first, streams.departures, streams.noise, rings=rings,
                      ring_amplitude=ring_amplitude, specks=specks, round_roi=round_roi,
                      blur_vox=blur_vox, noise_sd=noise_sd, bit_depth=bit_depth)
    logger.debug(
        "femur %s seed %d: %d slices, ref %d, VOI BV/TV %.3f (design %.3f) in %.2f s",
        group, seed, shape[0], truth.ref_index, truth.voi.bv_tv, spec.target,
        time.perf_counter() - t_start,
    )
    return FemurPhantom(
        grey=grey,
        bone_truth=truth.bone_truth,
        labels=labels,
        ref_index=truth.ref_index,
        distal_end="first" if distal_first else "last",
        voxel_um=float(voxel_um),
        voi_truth=truth.voi,
        params=_design_record(spec, geometry, truth),
        voi_mask_array=truth.voi_mask_array,
    )


def _design_record(spec: FemurSpec, geometry: FemurGeometry, truth: FemurTruth) -> dict[str, Any]:
    """:attr:`FemurPhantom.params`: the design parameters (lengths in mm, angles in degrees),
    the truth BV/TV of the VOI and the bone axis."""
    nz, ny, nx = spec.shape
    vox = spec.vox
    design = spec.design
    return {
        "group": spec.group,
        "seed": int(spec.seed),
        "voxel_um": float(spec.voxel_um),
        "shape": [nz, ny, nx],
        "length_mm": nz * vox,
        "distal_first": bool(spec.distal_first),
        "bv_tv_design": spec.target,
        "bv_tv_truth_voi": truth.voi.bv_tv,
        "cell_mm": design.cell_mm,
        "perforated_fraction": design.perforated,
        "epiphysis_bv_tv": design.epiphysis_bv_tv,
        "epiphysis_mm": spec.epiphysis_mm,
        "plate_thickness_mm": spec.plate_thickness_mm,
        "plate_unevenness_mm": spec.plate_unevenness_mm,
        "plate_tilt_deg": spec.plate_tilt_deg,
        "plate_mid_mm_from_distal": spec.plate_mid,
        "ref_mm_from_distal": truth.ref_k * vox,
        "bone_width_mm": geometry.width,
        "blur_vox": spec.blur_vox,
        "noise_sd": spec.noise_sd,
        "axis_tilt_deg": float(spec.axis_tilt_deg),
        "axis_azimuth_deg": float(spec.axis_azimuth_deg),
        "center_offset_mm": list(spec.shift_yx),
        "plate_bridged_fraction": float(spec.plate_bridged_fraction),
        "specks": int(spec.specks),
        "rings": int(spec.rings),
        "ring_amplitude": float(spec.ring_amplitude),
        "round_roi": bool(spec.round_roi),
        "bit_depth": int(spec.bit_depth),
        **truth.axis,
    }
