"""The shape of a sample femur: its cross-section (pixel centres in mm from the bone axis), the
periosteal radius and cortical thickness along the bone, the growth-plate surfaces and the
bony bridges through the plate (:func:`femur_geometry`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..fields import smoothstep
from .design import (
    AIR,
    CORTEX_MM,
    EPI_PLATE_MM,
    EPI_SHELL_MM,
    RING_MM,
    SIGMA_WAVE_MM,
    SOFT,
    TIP_MM,
    FemurSpec,
    RandomStreams,
)

__all__ = ["FemurGeometry", "femur_geometry", "plate_bridges"]


@dataclass(eq=False)
class FemurGeometry:
    """Cross-section and growth plate of a femur (per pixel ``(Y, X)`` arrays, lengths in mm;
    distances along the bone from the distal end of the scan).

    Attributes
    ----------
    width : float
        Mediolateral periosteal width of the shaft (mm).
    a_shaft, b_shaft : float
        Mediolateral (x) and anteroposterior (y) semi-axes of the shaft (mm).
    plate_mid, plate_thickness_mm : float
        Mean distance of the plate's mid-surface from the distal end, and the cartilage
        thickness along the bone (mm).
    rho, r_shaft : (Y, X) ndarray
        Distance of each pixel centre from the bone axis, and the shaft's periosteal radius in
        its direction (mm).
    cos2, sin2, cort_var, bump, dbump : (Y, X) ndarray
        ``cos² θ``, ``sin² θ`` of the pixel direction ``θ``; the cortical thickness factor
        around the bone; the intercondylar notch (a Gaussian dent around ``θ = 90°``) and
        ``|d bump / d θ|``.
    base : (Y, X) ndarray of uint8
        Labels outside the bone (soft tissue in an ellipse, air around it).
    s_dist, s_prox, s_epi : (Y, X) ndarray of float32
        Where the cartilage starts and ends, and where the epiphyseal bone plate starts (mm).
    bridges : (Y, X) ndarray of bool or None
        Where bone bridges the cartilage (None: nowhere).
    """

    width: float
    a_shaft: float
    b_shaft: float
    plate_mid: float
    plate_thickness_mm: float
    rho: np.ndarray
    r_shaft: np.ndarray
    cos2: np.ndarray
    sin2: np.ndarray
    cort_var: np.ndarray
    bump: np.ndarray
    dbump: np.ndarray
    base: np.ndarray
    s_dist: np.ndarray
    s_prox: np.ndarray
    s_epi: np.ndarray
    bridges: np.ndarray | None
    _cache: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False
    )

    def outer_radius(self, d: float) -> tuple[np.ndarray, np.ndarray]:
        """Periosteal radius (mm) per pixel direction at distance ``d`` (mm), and the factor
        turning a normal wall thickness into a radial one (the notch walls are oblique).

        The condyles are 8 % wider than the shaft, narrowing over 1 mm proximal of the plate;
        the notch is 22 % deep at the distal end, gone from 0.55 mm. The last result is kept.
        """
        plate_mid = self.plate_mid
        cond = 1.0 + 0.08 * (1.0 - smoothstep((d - plate_mid) / 1.0)) if d > plate_mid else 1.08
        depth = 0.22 * (1.0 - smoothstep((d - TIP_MM - 0.35) / 0.2))
        key = (round(float(cond), 5), round(float(depth), 5))
        if key not in self._cache:
            a = self.a_shaft * key[0]
            b = self.b_shaft * (1.0 + 0.6 * (key[0] - 1.0))
            r_ell = 1.0 / np.sqrt(self.cos2 / a**2 + self.sin2 / b**2)
            r = r_ell * (1.0 - key[1] * self.bump)
            slope = key[1] * self.dbump / np.maximum(1.0 - key[1] * self.bump, 1e-3)
            self._cache.clear()
            self._cache[key] = (r, self.cort_var * np.sqrt(1.0 + slope**2))
        return self._cache[key]

    def cortex_thickness(self, d: float) -> float:
        """Cortical thickness (mm, normal to the surface) at distance ``d`` (mm): the
        epiphyseal shell, the perichondrial ring at the plate, then the metaphyseal cortex
        thickening exponentially."""
        if d < self.plate_mid - self.plate_thickness_mm:
            return EPI_SHELL_MM
        s = d - self.plate_mid
        if s < self.plate_thickness_mm:
            return RING_MM
        t0, t1, lam = CORTEX_MM
        return t0 + (t1 - t0) * (1.0 - math.exp(-(s - self.plate_thickness_mm) / lam))


def femur_geometry(spec: FemurSpec, streams: RandomStreams) -> FemurGeometry:
    """The cross-section and growth plate of the femur ``spec`` describes.

    Pixel centres in mm from the bone axis (the image centre shifted by ``center_offset_mm``);
    the shaft is an ellipse ``bone_width_mm`` wide (default 0.84 of the field of view), 0.86 as
    deep; the plate's mid-surface lies ``plate_mid`` mm from the distal end, undulating by up
    to ``plate_unevenness_mm`` and tilted by ``plate_tilt_deg`` about y. Draws from
    ``streams.geometry``, ``streams.wave`` and (with bridges) ``streams.departures``.
    """
    _, ny, nx = spec.shape
    vox = spec.vox
    plate_mid = spec.plate_mid
    width = 0.84 * min(nx, ny) * vox if spec.bone_width_mm is None else float(spec.bone_width_mm)
    a_shaft = width / 2.0  # mediolateral (x) semi-axis
    b_shaft = 0.86 * a_shaft  # anteroposterior (y)
    yy = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2.0) * np.float32(vox)
    xx = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2.0) * np.float32(vox)
    shift_y, shift_x = spec.shift_yx
    if shift_y or shift_x:  # (no arithmetic at all by default: identical arrays)
        yy = yy - np.float32(shift_y)
        xx = xx - np.float32(shift_x)
    ygrid, xgrid = np.meshgrid(yy, xx, indexing="ij")
    rho = np.hypot(ygrid, xgrid)
    theta = np.arctan2(ygrid, xgrid)
    cos2, sin2 = np.cos(theta) ** 2, np.sin(theta) ** 2
    phase = streams.geometry.uniform(0.0, 2.0 * np.pi, 2)
    cort_var = 1.0 + 0.15 * np.cos(theta - phase[0]) + 0.08 * np.cos(2.0 * theta - phase[1])
    # posterior intercondylar notch: a Gaussian dent in the radius around theta = +90 deg
    dth = np.angle(np.exp(1j * (theta - np.pi / 2.0))).astype(np.float32)
    notch_w = 0.28
    bump = np.exp(-((dth / notch_w) ** 2))
    dbump = np.abs(2.0 * dth / notch_w**2 * bump)  # |d bump / d theta|
    soft = (xgrid / (0.48 * nx * vox)) ** 2 + (ygrid / (0.46 * ny * vox)) ** 2 <= 1.0
    base = np.where(soft, np.uint8(SOFT), np.uint8(AIR))

    # growth plate surfaces (distance from the distal end of the scan, mm)
    wave = ndimage.gaussian_filter(
        streams.wave.standard_normal((ny, nx)).astype(np.float32), SIGMA_WAVE_MM / vox,
        mode="wrap",
    )
    r_shaft = 1.0 / np.sqrt(cos2 / a_shaft**2 + sin2 / b_shaft**2)
    wave /= max(float(np.abs(wave[rho < 0.8 * r_shaft]).max()), 1e-12)
    mid = (plate_mid + spec.plate_unevenness_mm * wave
           + math.tan(math.radians(spec.plate_tilt_deg)) * xgrid)
    s_dist = (mid - spec.plate_thickness_mm / 2.0).astype(np.float32)  # cartilage starts
    s_prox = (mid + spec.plate_thickness_mm / 2.0).astype(np.float32)  # cartilage ends
    s_epi = s_dist - np.float32(EPI_PLATE_MM)  # epiphyseal bone plate starts
    # departures draw from their own stream, so the default femur is unchanged
    fraction = spec.plate_bridged_fraction
    bridges = (plate_bridges(streams.departures, rho, r_shaft, vox, fraction)
               if fraction > 0 else None)
    return FemurGeometry(
        width=width, a_shaft=a_shaft, b_shaft=b_shaft, plate_mid=plate_mid,
        plate_thickness_mm=spec.plate_thickness_mm, rho=rho, r_shaft=r_shaft, cos2=cos2,
        sin2=sin2, cort_var=cort_var, bump=bump, dbump=dbump, base=base, s_dist=s_dist,
        s_prox=s_prox, s_epi=s_epi, bridges=bridges,
    )


def plate_bridges(
    rng: np.random.Generator, rho: np.ndarray, r_shaft: np.ndarray, vox: float, fraction: float
) -> np.ndarray:
    """Where bone bridges the growth-plate cartilage.

    Parameters
    ----------
    rng : numpy.random.Generator
        Stream to draw the discs from.
    rho, r_shaft : (Y, X) ndarray
        Distance of each pixel from the bone axis and the shaft radius in its direction (mm).
    vox : float
        Pixel size in mm.
    fraction : float
        Fraction of the plate's interior (pixels within 0.85 of the shaft radius) to cover.

    Returns
    -------
    (Y, X) ndarray of bool
        Discs 0.04-0.1 mm across covering ``fraction`` of the interior.
    """
    inside = rho < 0.85 * r_shaft
    n_in = int(np.count_nonzero(inside))
    out = np.zeros(rho.shape, dtype=bool)
    if n_in == 0:
        return out
    cand = np.flatnonzero(inside.ravel())
    ny, nx = rho.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    for _ in range(10_000):
        if np.count_nonzero(out & inside) >= fraction * n_in:
            break
        k = int(cand[rng.integers(0, cand.size)])
        cy, cx = divmod(k, nx)
        r = 0.5 * float(rng.uniform(0.04, 0.10)) / vox
        ri = int(math.ceil(r))
        ys, xs = slice(max(0, cy - ri), cy + ri + 1), slice(max(0, cx - ri), cx + ri + 1)
        out[ys, xs] |= (yy[ys, xs] - cy) ** 2 + (xx[ys, xs] - cx) ** 2 <= r * r
    return out
