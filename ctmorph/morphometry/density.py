"""BMD and TMD of a VOI (g/cm³ HA) through a density calibration (:mod:`ctmorph.calibration`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..calibration.convert import check_gmax, check_window, grey_to_density
from ..calibration.model import Calibration
from ..errors import ConfigError
from .zsource import ArraySource

__all__ = [
    "density_metrics",
    "density_metrics_chunked",
]

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------
# BMD and TMD
# ---------------------------------------------------------------------------------------------


def _eroded(bone: np.ndarray, region: np.ndarray, radius: float) -> np.ndarray:
    """Bone voxels farther than ``radius`` voxels (Euclidean, centre to centre) from any non-bone
    voxel, within the bounding box of ``region``. Bone outside the box is context: the box edge
    and the image border are not surfaces."""
    if radius <= 0:
        return bone & region
    if not region.any():
        return np.zeros_like(region)
    pad = int(math.ceil(radius)) + 1
    box_list = []
    for axis in range(region.ndim):
        others = tuple(a for a in range(region.ndim) if a != axis)
        idx = np.flatnonzero(region.any(axis=others))
        box_list.append(slice(max(idx[0] - pad, 0), min(idx[-1] + 1 + pad, region.shape[axis])))
    box = tuple(box_list)
    sub = bone[box]
    out = np.zeros_like(region)
    if sub.all():
        out[box] = region[box]
        return out
    out[box] = (ndimage.distance_transform_edt(sub) > radius) & region[box]
    return out


def density_metrics(
    grey: np.ndarray,
    bone: np.ndarray,
    voi: np.ndarray,
    *,
    scan_window: Sequence[float],
    gmax: int,
    calibration: Calibration,
    tmd_erosion_vox: float = 1,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """BMD and TMD of a VOI, g/cm³ HA.

    Parameters
    ----------
    grey : (Z, Y, X) ndarray
        Raw (unsmoothed) grey values of the scan.
    bone : (Z, Y, X) ndarray of bool
        Segmented bone. Bone outside the VOI is context for the erosion.
    voi : (Z, Y, X) ndarray of bool
        The volume of interest.
    scan_window : (float, float)
        The scan's own CS window (``Scan.cs_window``), NRecon CS units.
    gmax : int
        255 or 65535 (``Scan.gmax``).
    calibration : Calibration
        The phantom line.
    tmd_erosion_vox : float
        Bone voxels within this distance (voxels, Euclidean between centres) of a non-bone voxel
        are left out of TMD, to keep the partial-volume rim out: 1 removes the surface layer
        (as a 6-connected erosion), 0 keeps all bone voxels.
    valid : (Z, Y, X) ndarray of bool, optional
        Voxels with data (``grey != 0`` for round-ROI scans); None: all.

    Returns
    -------
    dict
        ``{'BMD': float, 'TMD': float}`` in g/cm³ HA. BMD: mean density of all VOI voxels with
        data, bone and marrow. TMD: mean density of the eroded bone voxels of the VOI; NaN (with
        a warning) when no bone voxel survives the erosion.

    Raises
    ------
    ConfigError
        Shapes differ, the VOI has no voxel with data, or ``tmd_erosion_vox`` < 0.
    CalibrationError
        No or invalid CS window.

    Notes
    -----
    Densities are linear in grey, so the mean density is the density of the mean grey value,
    converted through the scan's CS window and the calibration line (Bouxsein et al. 2010).
    Computed by :func:`density_metrics_chunked` (the one implementation; its sums are exact,
    so the block size changes nothing).
    """
    grey = np.asarray(grey)
    bone = np.asarray(bone, dtype=bool)
    voi = np.asarray(voi, dtype=bool)
    if not grey.shape == bone.shape == voi.shape:
        raise ConfigError(
            f"grey {grey.shape}, bone {bone.shape} and voi {voi.shape} must have one shape"
        )
    region = voi
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != voi.shape:
            raise ConfigError(f"valid {valid.shape} and voi {voi.shape} must have one shape")
        region = voi & valid
    return density_metrics_chunked(
        ArraySource(bone, region, grey=grey), scan_window=scan_window, gmax=gmax,
        calibration=calibration, tmd_erosion_vox=tmd_erosion_vox)


def _density_sums(grey: np.ndarray, bone: np.ndarray, region: np.ndarray,
                  radius: float) -> np.ndarray:
    """``[grey sum, voxels]`` of ``region`` and of its eroded bone (:func:`_eroded`), float64.

    Grey values are integers, so every partial sum is an exact float64 integer (below 2**53
    for any scan: 1e11 voxels of 65535): sums of blocks add up to the whole sum exactly.
    """
    tissue = _eroded(bone, region, radius)
    return np.array([
        np.sum(grey, where=region, dtype=np.float64), np.count_nonzero(region),
        np.sum(grey, where=tissue, dtype=np.float64), np.count_nonzero(tissue),
    ], dtype=np.float64)


def _densities(sums: np.ndarray, window: tuple[float, float], gmax: int,
               calibration: Calibration, tmd_erosion_vox: float) -> dict[str, float]:
    """BMD and TMD (g/cm³ HA) from :func:`_density_sums`."""
    bmd_sum, n_voi, tmd_sum, n_tissue = (float(v) for v in sums)
    if n_voi == 0:
        raise ConfigError("the VOI has no voxel with data; BMD is undefined")
    if n_tissue:
        tmd = float(grey_to_density(tmd_sum / n_tissue, calibration, window, gmax))
    else:
        logger.warning(
            "TMD undefined: no bone voxel of the VOI lies deeper than %g voxels inside bone",
            tmd_erosion_vox,
        )
        tmd = math.nan
    return {"BMD": float(grey_to_density(bmd_sum / n_voi, calibration, window, gmax)),
            "TMD": tmd}


#: Voxels per block of :func:`density_metrics_chunked` (scipy's EDT takes ~20 B per voxel).
_DENSITY_BLOCK_VOXELS = 4_000_000


def density_metrics_chunked(
    src: Any,
    *,
    scan_window: Sequence[float],
    gmax: int,
    calibration: Calibration,
    tmd_erosion_vox: float = 1,
    no_data_zero: bool = False,
    chunk_slices: int | None = None,
) -> dict[str, float]:
    """BMD and TMD (g/cm³ HA) of a slab read block by block, in bounded memory.

    Parameters
    ----------
    src : ZSource with ``read_grey``
        A :class:`~ctmorph.morphometry.zsource.ZSource` (``shape``; ``read(z0, z1)`` giving
        ``bone`` and ``voi``) that also has ``read_grey(z0, z1)``: the raw grey values of
        slices ``[z0, z1)``.
    no_data_zero : bool
        Grey 0 means no data (round-ROI scans): ``valid = grey != 0``.
    chunk_slices : int, optional
        Slices per block (default: about 4 M voxels).
    scan_window, gmax, calibration, tmd_erosion_vox
        As for :func:`density_metrics`.

    Returns
    -------
    dict
        ``{'BMD': float, 'TMD': float}`` in g/cm³ HA, equal to :func:`density_metrics` on the
        whole arrays.

    Notes
    -----
    Whether a bone voxel survives the TMD erosion depends only on the voxels within
    ``tmd_erosion_vox`` of it, so each block reads ``ceil(tmd_erosion_vox) + 1`` slices of
    context each side (the whole version's box padding) and counts only its own slices. The
    sums are of integers, exact in float64, so the result is identical, not merely close.
    """
    if not (math.isfinite(tmd_erosion_vox) and tmd_erosion_vox >= 0):
        raise ConfigError(f"tmd_erosion_vox must be >= 0 voxels, got {tmd_erosion_vox!r}")
    window = check_window(scan_window)
    gmax = check_gmax(gmax)
    nz, ny, nx = (int(v) for v in src.shape)
    if chunk_slices is None:
        chunk_slices = max(1, _DENSITY_BLOCK_VOXELS // max(1, ny * nx))
    if int(chunk_slices) < 1:
        raise ConfigError(f"chunk_slices must be >= 1, got {chunk_slices!r}")
    halo = int(math.ceil(tmd_erosion_vox)) + 1
    sums = np.zeros(4, dtype=np.float64)
    for z0 in range(0, nz, int(chunk_slices)):
        z1 = min(z0 + int(chunk_slices), nz)
        lo, hi = max(z0 - halo, 0), min(z1 + halo, nz)
        blk = src.read(lo, hi)
        region = blk.voi
        region[: z0 - lo] = False  # context slices: bone for the erosion, never counted
        region[z1 - lo:] = False
        if not region.any():
            continue
        grey = src.read_grey(lo, hi)
        if no_data_zero:
            region &= grey != 0
        sums += _density_sums(grey, blk.bone, region, float(tmd_erosion_vox))
    return _densities(sums, window, gmax, calibration, tmd_erosion_vox)
