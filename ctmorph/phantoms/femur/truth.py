"""A sample femur and its truth: the growth-plate reference, the truth VOI and its BV/TV, and,
for a bone tilted from the slice normal, the rotation of the labels and the VOI
(:func:`voi_truth`); the phantom returned to callers (:class:`FemurPhantom`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from ..fields import rotation_taking_z_to
from .design import CART, CORT, MARROW, TRAB, FemurSpec

__all__ = ["VoiTruth", "FemurPhantom", "FemurTruth", "tilt_volume", "voi_truth"]


@dataclass(frozen=True)
class VoiTruth:
    """The design trabecular VOI of a phantom (array indices along z, ``[z0, z1)``).

    Attributes
    ----------
    z0, z1 : int
        Slice range of the VOI: ``offset_mm`` .. ``offset_mm + height_mm`` proximal of the truth
        reference slice (clipped to the scan; see ``complete``).
    offset_mm, height_mm : float
        VOI placement in mm.
    complete : bool
        False when the scan ends before the VOI does.
    bv_tv : float
        BV/TV (fraction) of :attr:`FemurPhantom.bone_truth` in the true endocortical region of
        the VOI slices (NaN when the VOI is empty).
    bv_tv_design : float
        Design target (fraction) the field was calibrated to.
    """

    z0: int
    z1: int
    offset_mm: float
    height_mm: float
    complete: bool
    bv_tv: float
    bv_tv_design: float


@dataclass(frozen=True, eq=False)
class FemurPhantom:
    """A synthetic rat distal femur with its truth.

    Attributes
    ----------
    grey : (Z, Y, X) ndarray of uint8 or uint16
        Reconstructed grey values (8-bit: air ~10, soft tissue/marrow/cartilage ~60-68, bone
        ~200-215, Gaussian partial-volume blur, additive noise; 16-bit: the same × 257).
    bone_truth : (Z, Y, X) ndarray of bool
        Trabecular and cortical bone before blur and noise.
    labels : (Z, Y, X) ndarray of uint8
        Tissue class per voxel, see :data:`~ctmorph.phantoms.femur.LABELS`.
    ref_index : int
        Truth reference slice (array index): the first slice, moving proximally from the distal
        end, that holds no growth-plate cartilage. For a tilted bone (``axis_tilt_deg``), the
        slice holding the truth reference point on the bone axis (``params['ref_point_mm']``).
    distal_end : {'first', 'last'}
        Which end of the array (slice 0 or slice Z-1) is distal.
    voxel_um : float
        Isotropic voxel size in µm.
    voi_truth : VoiTruth
        The design VOI and its truth BV/TV.
    params : dict
        Design parameters (group, seed, geometry in mm, BV/TV targets, departures). Always
        ``axis_direction_zyx`` (unit vector of the bone axis from distal to proximal in array
        order) and ``ref_point_mm`` (the truth reference point on the axis, (z, y, x) in mm
        from the centre of voxel 0), so reference errors can be measured along the axis.
    voi_mask_array : (Z, Y, X) ndarray of bool or None
        Truth VOI of a tilted bone in the scan frame (None: the VOI is the endocortical truth
        of slices ``voi_truth.z0 .. z1 - 1``); use :meth:`voi_mask`.
    """

    grey: np.ndarray
    bone_truth: np.ndarray
    labels: np.ndarray
    ref_index: int
    distal_end: Literal["first", "last"]
    voxel_um: float
    voi_truth: VoiTruth
    params: dict[str, Any] = field(default_factory=dict)
    voi_mask_array: np.ndarray | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(dz, dy, dx)`` in mm."""
        v = self.voxel_um / 1000.0
        return (v, v, v)

    @property
    def cortex_truth(self) -> np.ndarray:
        """(Z, Y, X) bool: cortical bone (shell, ring and metaphyseal/diaphyseal cortex)."""
        return self.labels == CORT

    @property
    def endocortical_truth(self) -> np.ndarray:
        """(Z, Y, X) bool: everything inside the endocortical surface (marrow, cartilage and
        trabecular bone)."""
        return (self.labels >= MARROW) & (self.labels <= TRAB)

    def voi_mask(self) -> np.ndarray:
        """(Z, Y, X) bool: the true endocortical region restricted to the truth VOI slices
        (for a tilted bone: to the slab perpendicular to its axis, in the scan frame)."""
        if self.voi_mask_array is not None:
            return self.voi_mask_array.copy()
        out = np.zeros(self.labels.shape, dtype=bool)
        z0, z1 = self.voi_truth.z0, self.voi_truth.z1
        out[z0:z1] = self.endocortical_truth[z0:z1]
        return out


@dataclass(frozen=True, eq=False)
class FemurTruth:
    """The truth of a labelled femur (see :func:`voi_truth`).

    Attributes
    ----------
    ref_k : int
        Reference as a distance index from the distal end (untilted bone).
    ref_index : int
        Reference slice (array index), see :attr:`FemurPhantom.ref_index`.
    voi : VoiTruth
        The truth VOI and its BV/TV.
    bone_truth : (Z, Y, X) ndarray of bool
        Trabecular and cortical bone.
    axis : dict
        ``axis_direction_zyx`` and ``ref_point_mm`` (mm) for :attr:`FemurPhantom.params`.
    voi_mask_array : (Z, Y, X) ndarray of bool or None
        Truth VOI of a tilted bone (None without tilt).
    """

    ref_k: int
    ref_index: int
    voi: VoiTruth
    bone_truth: np.ndarray
    axis: dict[str, Any]
    voi_mask_array: np.ndarray | None


def tilt_volume(
    lab_df: np.ndarray, voi_b: np.ndarray, tilt_deg: float, azimuth_deg: float, ref_k: int,
    axis_yx: tuple[float, float], vox: float, distal_first: bool,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Rotate the distal-first labels and truth VOI of an untilted femur about the volume
    centre so the bone axis makes ``tilt_deg`` with the slice normal.

    Nearest-neighbour sampling of the untilted volume at rotated coordinates (labels stay
    labels; beyond the volume the edge values continue: air, soft tissue, the shaft).

    Parameters
    ----------
    lab_df : (Z, Y, X) ndarray of uint8
        Labels, distal first.
    voi_b : (Z, Y, X) ndarray of uint8
        Truth VOI (0/1), distal first.
    tilt_deg, azimuth_deg : float
        Tilt of the axis from the slice normal and the in-plane direction (degrees from +x
        towards +y) towards which the proximal end leans.
    ref_k : int
        Reference slice of the untilted bone (distal first).
    axis_yx : (float, float)
        Where the bone axis crosses a slice (pixel coordinates).
    vox : float
        Voxel size in mm.
    distal_first : bool
        Stack order of the returned record.

    Returns
    -------
    record : dict
        ``ref_index`` (in the stack order), ``axis_direction_zyx`` and ``ref_point_mm`` (mm).
    rotated : (Z, Y, X) ndarray of uint8
        The rotated labels, distal first.
    voi : (Z, Y, X) ndarray of bool
        The rotated VOI mask, distal first.
    """
    t, a = math.radians(tilt_deg), math.radians(azimuth_deg)
    u = np.array([math.cos(t), math.sin(t) * math.sin(a), math.sin(t) * math.cos(a)])
    rot = rotation_taking_z_to(u)
    c = (np.array(lab_df.shape, dtype=np.float64) - 1.0) / 2.0
    # scan index p -> untilted index c + R^T (p - c)
    matrix, offset = rot.T, c - rot.T @ c
    rotated = ndimage.affine_transform(lab_df, matrix, offset=offset, order=0, mode="nearest",
                                       output=np.uint8)
    voi = ndimage.affine_transform(voi_b, matrix, offset=offset, order=0, mode="constant",
                                   cval=0, output=np.uint8).astype(bool)
    p_ref = c + rot @ (np.array([ref_k, axis_yx[0], axis_yx[1]]) - c)
    nz = lab_df.shape[0]
    z_ref = int(np.clip(round(float(p_ref[0])), 0, nz - 1))
    if not distal_first:
        p_ref[0] = nz - 1 - p_ref[0]
        u = u * np.array([-1.0, 1.0, 1.0])
    record = {
        "ref_index": z_ref if distal_first else nz - 1 - z_ref,
        "axis_direction_zyx": [float(v) for v in u],
        "ref_point_mm": [float(v) * vox for v in p_ref],
    }
    return record, rotated, voi


def voi_truth(labels: np.ndarray, spec: FemurSpec) -> FemurTruth:
    """The reference (first slice past the cartilage) and the truth VOI of a labelled femur.

    With an axis tilt (``spec.axis_tilt_deg``) the labels are rotated in place and the VOI is
    a mask.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of uint8
        Labels of the untilted femur in ``spec``'s stack order (rotated in place).
    spec : FemurSpec
        The femur's parameters (stack order, voxel size, VOI placement in mm, tilt, shift).

    Returns
    -------
    FemurTruth
    """
    distal_first, vox = spec.distal_first, spec.vox
    shift_y, shift_x = spec.shift_yx
    nz, ny, nx = labels.shape
    has_cart = np.flatnonzero((labels == CART).any(axis=(1, 2)))
    last_cart = int(has_cart.max()) if distal_first else nz - 1 - int(has_cart.min())
    ref_k = last_cart + 1
    n_off = int(round(spec.voi_offset_mm / vox))
    n_h = int(round(spec.voi_height_mm / vox))
    v0, v1 = ref_k + n_off, ref_k + n_off + n_h
    complete = v1 <= nz
    v0, v1 = min(v0, nz), min(v1, nz)
    voi_mask_array = None
    tilt: dict[str, Any] = {}
    if spec.axis_tilt_deg != 0:
        lab_df = labels if distal_first else labels[::-1]
        voi_b = np.zeros(labels.shape, dtype=np.uint8)
        part = lab_df[v0:v1]
        voi_b[v0:v1] = (part >= MARROW) & (part <= TRAB)
        axis_yx = ((ny - 1) / 2.0 + shift_y / vox, (nx - 1) / 2.0 + shift_x / vox)
        tilt, rotated, voi_df = tilt_volume(
            lab_df, voi_b, spec.axis_tilt_deg, spec.axis_azimuth_deg, ref_k, axis_yx, vox,
            distal_first,
        )
        lab_df[...] = rotated
        del rotated, voi_b
        voi_mask_array = voi_df if distal_first else np.ascontiguousarray(voi_df[::-1])
        del voi_df
        ref_index = tilt.pop("ref_index")
        zs = np.flatnonzero(voi_mask_array.any(axis=(1, 2)))
        z0, z1 = (int(zs[0]), int(zs[-1]) + 1) if zs.size else (0, 0)
        bone_truth = labels >= TRAB
        tv = int(np.count_nonzero(voi_mask_array))
        bv_truth = (float(np.count_nonzero(bone_truth & voi_mask_array) / tv) if tv
                    else float("nan"))
    else:
        ay, ax = shift_y / vox + (ny - 1) / 2.0, shift_x / vox + (nx - 1) / 2.0
        tilt = {
            "axis_direction_zyx": [1.0 if distal_first else -1.0, 0.0, 0.0],
            "ref_point_mm": [(ref_k if distal_first else nz - 1 - ref_k) * vox, ay * vox,
                             ax * vox],
        }
        if distal_first:
            ref_index, z0, z1 = ref_k, v0, v1
        else:
            ref_index, z0, z1 = nz - 1 - ref_k, nz - v1, nz - v0
        bone_truth = labels >= TRAB
        lab_voi = labels[z0:z1]
        endo_voi = (lab_voi >= MARROW) & (lab_voi <= TRAB)
        tv = int(np.count_nonzero(endo_voi))
        bv_truth = float(np.count_nonzero(lab_voi == TRAB) / tv) if tv else float("nan")

    voi = VoiTruth(
        z0=z0, z1=z1, offset_mm=float(spec.voi_offset_mm), height_mm=float(spec.voi_height_mm),
        complete=complete, bv_tv=bv_truth, bv_tv_design=spec.target,
    )
    return FemurTruth(ref_k=ref_k, ref_index=ref_index, voi=voi, bone_truth=bone_truth,
                      axis=tilt, voi_mask_array=voi_mask_array)
