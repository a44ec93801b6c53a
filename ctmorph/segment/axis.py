"""Bone long axis: a robust straight-line fit of per-slice centroids, and a resampled view of a
scan whose slices are perpendicular to that axis.

A femur is rarely mounted exactly along the scanner's rotation axis; a tilt of a few degrees
makes the growth plate cross several slices and turns slice distances into oblique ones.
:func:`fit_bone_axis` fits the axis to the centroids of the periosteal envelope of every slice
(the shaft is a tube, so its centroids lie on a line; the condyles and the notch between them
pull the distal centroids away, and are rejected as outliers). :class:`AlignedSource` then
presents the scan in a frame whose z is that axis, reading only the base slices each slab
needs, so the rest of the analysis (growth plate, VOI, morphometry) runs unchanged and its
distances are along the bone.

Frames and units: arrays are (z, y, x); positions are in mm with voxel ``(i, j, k)`` centred at
``(i dz, j dy, k dx)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, SegmentationError
from ..spacing import normalize_spacing

__all__ = [
    "BoneAxis",
    "SlabSource",
    "AlignedSource",
    "fit_bone_axis",
    "bone_axis_from_envelope",
    "mask_centroids",
    "rotation_to_axis",
]

logger = logging.getLogger(__name__)

_TUKEY_C = 4.685  # Tukey biweight tuning constant (95 % efficiency under Gaussian residuals)


@runtime_checkable
class SlabSource(Protocol):
    """A grey volume read slab by slab (:class:`ctmorph.io.Scan` is one)."""

    name: str
    shape: tuple[int, int, int]  # (Z, Y, X)
    dtype: np.dtype
    gmax: int
    spacing: tuple[float, float, float]  # mm
    no_data_zero: bool
    sections: np.ndarray  # section number per slice

    def read_slab(self, z0: int, z1: int) -> np.ndarray:  # grey (z1 - z0, Y, X)
        ...


@dataclass(frozen=True)
class BoneAxis:
    """A straight bone axis.

    Attributes
    ----------
    tilt_deg : float
        Angle (degrees) between the axis and the slice normal (the z axis), 0-90.
    direction : (3,) ndarray of float
        Unit vector ``(z, y, x)`` along the axis, pointing towards increasing z.
    point : (3,) ndarray of float
        A point on the axis ``(z, y, x)`` in mm (at the middle of the slices used).
    n_slices_used : int
        Slices that carried weight in the final fit.
    residual_mm : float
        Robust scale (1.4826 MAD) of the centroid distances from the axis, in mm.
    """

    tilt_deg: float
    direction: np.ndarray
    point: np.ndarray
    n_slices_used: int
    residual_mm: float = 0.0

    def at_z(self, z_mm: float | np.ndarray) -> np.ndarray:
        """Points ``(..., 3)`` (mm) of the axis at the given z (mm)."""
        z = np.asarray(z_mm, dtype=np.float64)
        t = (z - self.point[0]) / self.direction[0]
        return self.point + t[..., None] * self.direction


def mask_centroids(
    mask: np.ndarray, *, spacing: float | tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice centroid and area of a mask (e.g. the periosteal envelope).

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.

    Returns
    -------
    centroids_mm : (Z, 2) ndarray of float
        ``(y, x)`` centroid in mm (NaN in empty slices).
    area_mm2 : (Z,) ndarray of float
        Area of the mask in each slice (mm²).
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ConfigError(f"mask must be a (Z, Y, X) array, got shape {m.shape}")
    sp = normalize_spacing(spacing)
    n = np.count_nonzero(m, axis=(1, 2)).astype(np.float64)
    sy = m.sum(axis=2) @ np.arange(m.shape[1], dtype=np.float64)
    sx = m.sum(axis=1) @ np.arange(m.shape[2], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cen = np.stack([sy / n * sp[1], sx / n * sp[2]], axis=1)
    cen[n == 0] = np.nan
    return cen, n * sp[1] * sp[2]


def fit_bone_axis(
    centroids_mm: np.ndarray,
    weights_or_valid: np.ndarray,
    *,
    dz: float,
    z0_mm: float = 0.0,
    min_slices: int = 10,
    min_scale_mm: float | None = None,
    max_iter: int = 30,
) -> BoneAxis:
    """Robust straight-line fit of per-slice centroids against z.

    Model ``y(z) = a_y + b_y z``, ``x(z) = a_x + b_x z`` fitted by iteratively reweighted
    least squares with Tukey's biweight on the in-plane distance of each centroid from the
    line (scale: 1.4826 x the weighted median absolute distance, floored at ``min_scale_mm``).
    Slices whose centroid is far from the shaft's line (condyles with their notch, a patella,
    debris fused to the bone) get weight zero, so the fit follows the shaft.

    Parameters
    ----------
    centroids_mm : (Z, 2) ndarray of float
        ``(y, x)`` centroid of each slice in mm (NaN where the slice has none).
    weights_or_valid : (Z,) ndarray of bool or float
        Prior weight of each slice (e.g. ``area > 0.5 * median area``, or the area itself);
        0 / False excludes a slice.
    dz : float
        Slice spacing in mm (slice ``i`` is at ``z0_mm + i dz``).
    z0_mm : float
        z of slice 0 in mm.
    min_slices : int
        Fewest slices the final fit may rest on.
    min_scale_mm : float, optional
        Floor of the residual scale (default ``dz / 4``: centroids are not more precise).
    max_iter : int
        Reweighting iterations at most.

    Returns
    -------
    BoneAxis

    Raises
    ------
    ConfigError
        For arrays of the wrong shape or a bad ``dz``.
    SegmentationError
        If fewer than ``min_slices`` slices are usable.

    Notes
    -----
    Tukey's biweight (Beaton & Tukey 1974) with ``c = 4.685``; starts from the weighted
    least-squares line of the central half of the usable slices (the condyles sit at one end).
    """
    cen = np.asarray(centroids_mm, dtype=np.float64)
    w0 = np.asarray(weights_or_valid, dtype=np.float64)
    if cen.ndim != 2 or cen.shape[1] != 2:
        raise ConfigError(f"centroids_mm must be a (Z, 2) array, got shape {cen.shape}")
    if w0.shape != (cen.shape[0],):
        raise ConfigError(
            f"weights_or_valid must have shape ({cen.shape[0]},), got {w0.shape}"
        )
    if not (math.isfinite(dz) and dz > 0):
        raise ConfigError(f"dz must be a positive slice spacing (mm), got {dz!r}")
    if np.any(w0 < 0) or not np.all(np.isfinite(w0)):
        raise ConfigError("weights_or_valid must be finite and >= 0")
    floor = dz / 4.0 if min_scale_mm is None else float(min_scale_mm)
    z = z0_mm + np.arange(cen.shape[0], dtype=np.float64) * dz
    ok = (w0 > 0) & np.all(np.isfinite(cen), axis=1)
    idx = np.flatnonzero(ok)
    if idx.size < max(min_slices, 3):
        raise SegmentationError(
            f"cannot fit the bone axis: {idx.size} usable slices, need {max(min_slices, 3)}"
        )
    zz, yx, prior = z[idx], cen[idx], w0[idx]
    # start: the central half of the usable slices (away from either end)
    q = idx.size // 4
    w = np.zeros(idx.size)
    w[q : idx.size - q] = prior[q : idx.size - q]
    coef = _wls_line(zz, yx, w)
    scale = floor
    for _ in range(max_iter):
        r = np.hypot(*(yx - (coef[0] + coef[1] * zz[:, None])).T)
        scale = max(floor, 1.4826 * _weighted_median(r, prior))
        u = r / (_TUKEY_C * scale)
        w_new = prior * np.where(u < 1.0, (1.0 - u**2) ** 2, 0.0)
        if np.count_nonzero(w_new) < min_slices:
            break
        new = _wls_line(zz, yx, w_new)
        done = np.max(np.abs(new - coef)) < 1e-9
        coef, w = new, w_new
        if done:
            break
    n_used = int(np.count_nonzero(w))
    if n_used < min_slices:
        raise SegmentationError(
            f"cannot fit the bone axis: only {n_used} slices agree on a line, need "
            f"{min_slices}"
        )
    a, b = coef  # (2,) each: y and x intercept at z = 0 and slope
    d = np.array([1.0, b[0], b[1]])
    d /= np.linalg.norm(d)
    zm = float(np.average(zz, weights=w))
    point = np.array([zm, a[0] + b[0] * zm, a[1] + b[1] * zm])
    tilt = math.degrees(math.acos(min(1.0, float(d[0]))))
    r = np.hypot(*(yx - (a + b * zz[:, None])).T)
    resid = float(1.4826 * _weighted_median(r, w))
    logger.debug("bone axis: tilt %.2f deg from %d slices (residual %.4f mm)", tilt, n_used,
                 resid)
    return BoneAxis(tilt_deg=tilt, direction=d, point=point, n_slices_used=n_used,
                    residual_mm=resid)


def bone_axis_from_envelope(
    envelope: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    min_area_fraction: float = 0.5,
) -> BoneAxis:
    """Bone axis from the periosteal envelope of a scan (or of any tube-like mask).

    Slices whose envelope area is below ``min_area_fraction`` of the median non-empty area
    (the rounded condyle ends, slices that leave the field of view) are left out; the rest go
    to :func:`fit_bone_axis` weighted equally.

    Parameters
    ----------
    envelope : (Z, Y, X) ndarray of bool
        e.g. :func:`ctmorph.segment.periosteal_envelope` of the segmented bone.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    min_area_fraction : float
        See above.

    Returns
    -------
    BoneAxis
    """
    sp = normalize_spacing(spacing)
    cen, area = mask_centroids(envelope, spacing=sp)
    nonzero = area[area > 0]
    if nonzero.size == 0:
        raise SegmentationError("cannot fit the bone axis: the envelope is empty")
    valid = area >= min_area_fraction * float(np.median(nonzero))
    return fit_bone_axis(cen, valid, dz=sp[0])


def _wls_line(z: np.ndarray, yx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares ``yx ≈ a + b z``; returns ``[[a_y, a_x], [b_y, b_x]]``."""
    sw = float(w.sum())
    if sw <= 0:
        raise SegmentationError("cannot fit the bone axis: no slice carries weight")
    zm = float(w @ z) / sw
    m = (w @ yx) / sw
    dzv = z - zm
    szz = float(w @ dzv**2)
    if szz <= 0:
        raise SegmentationError("cannot fit the bone axis: the usable slices span no length")
    b = (w * dzv) @ (yx - m) / szz
    return np.array([m - b * zm, b])


def _weighted_median(v: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(v)
    cw = np.cumsum(w[order])
    if cw[-1] <= 0:
        return 0.0
    return float(v[order][np.searchsorted(cw, 0.5 * cw[-1])])


def rotation_to_axis(direction: np.ndarray) -> np.ndarray:
    """Smallest rotation (3 x 3, acting on ``(z, y, x)`` vectors) that takes the z axis onto
    ``direction`` (rotation about an in-plane axis, so in-plane orientation is kept)."""
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    if u[0] < 0:
        u = -u
    e = np.array([1.0, 0.0, 0.0])
    v = np.cross(e, u)
    s, c = float(np.linalg.norm(v)), float(e @ u)
    if s < 1e-12:
        return np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx * ((1.0 - c) / s**2)


class AlignedSource:
    """A slab source resampled so its z axis is the bone axis.

    Aligned voxel ``(k, j, i)`` sits at the base position (mm)
    ``P + R ((k - c_z) dz, (j - c_y) dy, (i - c_x) dx)``, where ``c = (shape - 1) / 2`` is
    the centre of the (unchanged) grid, ``R`` the smallest rotation taking z onto the axis
    and ``P`` the point of the axis at the z of the base's middle slice. So the axis runs
    through the centre of every aligned slice, slice ``k`` is perpendicular to it, and
    aligned slices are ``dz`` apart along it; the aligned volume has the base's shape and
    spacing. Values are interpolated (``order`` 1: trilinear) from the base; positions
    outside the base volume are 0 and mean "no data" (``no_data_zero`` is True).

    Parameters
    ----------
    base : SlabSource
        The scan in its own frame.
    axis : BoneAxis
        The bone axis in the base's mm coordinates (:func:`fit_bone_axis`).
    order : int
        Spline order of the interpolation (0 nearest, 1 linear).

    Attributes
    ----------
    sections : (Z,) ndarray of int
        For aligned slice ``k``, the base section nearest to the slice centre (the axis
        point of slice ``k``); so a reference slice found in the aligned frame is reported as
        the base section where the axis crosses it.
    base_z : (Z,) ndarray of float
        Base z index (fractional) of each aligned slice centre.
    rotation : (3, 3) ndarray
        ``R`` above.
    """

    def __init__(self, base: SlabSource, axis: BoneAxis, *, order: int = 1) -> None:
        if order not in (0, 1, 2, 3):
            raise ConfigError(f"order must be 0, 1, 2 or 3, got {order!r}")
        if not isinstance(axis, BoneAxis):
            raise ConfigError(f"axis must be a BoneAxis, got {type(axis).__name__}")
        self.base = base
        self.axis = axis
        self.order = int(order)
        self.name = base.name
        self.shape = tuple(int(v) for v in base.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(base.dtype)
        self.gmax = int(base.gmax)
        self.spacing = tuple(float(v) for v in base.spacing)  # type: ignore[assignment]
        self.no_data_zero = True
        self.rotation = rotation_to_axis(axis.direction)
        sp = np.asarray(self.spacing)
        centre = (np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0
        self._centre = centre
        self._pivot = axis.at_z(centre[0] * sp[0])  # mm
        # aligned index o -> base index: M o + off (M = S^-1 R S, S = diag(spacing))
        self._matrix = (self.rotation * sp[None, :]) / sp[:, None]
        self._offset = self._pivot / sp - self._matrix @ centre
        k = np.arange(self.shape[0], dtype=np.float64)
        self.base_z = self._matrix[0, 0] * k + (self._matrix[0, 1:] @ centre[1:]) + self._offset[0]
        nearest = np.clip(np.rint(self.base_z), 0, self.shape[0] - 1).astype(np.intp)
        self.sections = np.asarray(base.sections)[nearest]

    def __repr__(self) -> str:
        return (f"AlignedSource({self.name!r}, tilt {self.axis.tilt_deg:.2f} deg, "
                f"shape {self.shape})")

    def to_base_index(self, index: np.ndarray) -> np.ndarray:
        """Base ``(z, y, x)`` index (fractional) of aligned indices ``(..., 3)``."""
        o = np.asarray(index, dtype=np.float64)
        return o @ self._matrix.T + self._offset

    def base_range(self, z0: int, z1: int) -> tuple[int, int]:
        """Base slices ``[b0, b1)`` that :meth:`read_slab` ``(z0, z1)`` reads."""
        ny, nx = self.shape[1:]
        corners = np.array([[k, j, i] for k in (z0, z1 - 1) for j in (0, ny - 1)
                            for i in (0, nx - 1)], dtype=np.float64)
        bz = self.to_base_index(corners)[:, 0]
        b0 = max(0, int(math.floor(bz.min())) - 1)
        b1 = min(self.shape[0], int(math.ceil(bz.max())) + 2)
        return b0, max(b0, b1)

    def read_slice(self, i: int) -> np.ndarray:
        """Aligned slice ``i``: grey ``(Y, X)`` (as :meth:`ctmorph.io.Scan.read_slice`)."""
        return self.read_slab(i, i + 1)[0]

    def read_slab(self, z0: int, z1: int) -> np.ndarray:
        """Aligned slices ``z0 .. z1 - 1``: grey ``(z1 - z0, Y, X)`` of :attr:`dtype`.

        Reads only the base slices the slab's corners reach (:meth:`base_range`: about
        ``(z1 - z0) + Y dy tan(tilt) / dz`` slices), never the whole base volume.
        """
        nz, ny, nx = self.shape
        if not 0 <= z0 <= z1 <= nz:
            raise IndexError(f"slab {z0}:{z1} out of range for {self.name} ({nz} slices)")
        out = np.zeros((z1 - z0, ny, nx), dtype=self.dtype)
        if z1 == z0:
            return out
        b0, b1 = self.base_range(z0, z1)
        if b1 <= b0:
            return out
        src = self.base.read_slab(b0, b1).astype(np.float32)
        off = self._offset + self._matrix @ np.array([z0, 0.0, 0.0]) - np.array([b0, 0.0, 0.0])
        # interpolate with the edge values continued (no dark rim at the volume's faces);
        # what lies outside the base is set to no data below
        res = ndimage.affine_transform(src, self._matrix, offset=off, output_shape=out.shape,
                                       order=self.order, mode="nearest",
                                       prefilter=self.order > 1)
        # points outside the base are no data: exact zeros; inside, keep at least 1 so a
        # no-data test never hits real (interpolated) data
        inside = _inside_mask(self._matrix, off, out.shape, src.shape, b0, b1, nz)
        np.rint(res, out=res)
        np.clip(res, 1.0, float(self.gmax), out=res)
        res[~inside] = 0.0
        if self.base.no_data_zero:
            # base no-data (zeros) stays no-data: nearest-neighbour lookup of base zeros
            near = ndimage.affine_transform(src, self._matrix, offset=off,
                                            output_shape=out.shape, order=0, mode="nearest")
            res[near == 0] = 0.0
        out[...] = res
        return out


def _inside_mask(
    matrix: np.ndarray, off: np.ndarray, out_shape: tuple[int, ...], src_shape: tuple[int, ...],
    b0: int, b1: int, nz: int,
) -> np.ndarray:
    """Aligned voxels whose base position lies inside the base volume (within half a voxel
    of its outer voxel centres)."""
    k, j, i = (np.arange(n, dtype=np.float64) for n in out_shape)
    inside = np.ones(out_shape, dtype=bool)
    for ax, n in enumerate(src_shape):
        c = (off[ax] + matrix[ax, 0] * k[:, None, None] + matrix[ax, 1] * j[None, :, None]
             + matrix[ax, 2] * i[None, None, :])
        lo, hi = -0.5, n - 0.5
        if ax == 0:  # the slab read covers base slices b0..b1-1 of 0..nz-1
            lo, hi = -0.5 - b0, nz - 0.5 - b0
        inside &= (c >= lo) & (c <= hi)
    return inside
