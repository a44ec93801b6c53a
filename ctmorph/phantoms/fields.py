"""Building blocks shared by the phantom generators (:mod:`.femur`, :mod:`.realistic`).

Random fields for trabecular structure (:func:`sheet_field`, :func:`gaussian_noise_field`,
:class:`GridField`), smooth ramps (:func:`smoothstep`), rotations (:func:`rotation_taking_z_to`),
a scan artefact (:func:`ring_profile`) and atomic output of a scan folder
(:func:`replace_folder_atomic`). Arrays and vectors are in ``(z, y, x)`` order.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "speck_positions",
    "round_roi_zeros",
    "GridField",
    "gaussian_noise_field",
    "replace_folder_atomic",
    "ring_profile",
    "rotation_taking_z_to",
    "sheet_field",
    "smoothstep",
]


def smoothstep(x: np.ndarray | float) -> np.ndarray | float:
    """Cubic ramp ``3 t² - 2 t³`` of ``t = clip(x, 0, 1)``: 0 below 0, 1 above 1, smooth between.

    Parameters
    ----------
    x : float or ndarray
        Argument (dimensionless).

    Returns
    -------
    float or ndarray
        Values in ``[0, 1]``, of the type and shape of ``x``.
    """
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def sheet_field(field: np.ndarray) -> np.ndarray:
    """``f / sqrt(|grad f|² + eps²)``: about the distance to the zero surface of ``f``.

    So ``|result| < T`` gives sheets of nearly uniform thickness ``2 T`` (in grid samples)
    instead of sheets that thin out where ``f`` is steep. ``eps`` (a third of the median
    gradient) keeps the shallow places from ballooning.

    Parameters
    ----------
    field : (Z, Y, X) ndarray of float32
        A smooth random field on a grid of equal spacing along every axis.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Signed distance (in grid samples) to the zero surface of ``field``, approximately.
    """
    grads = np.gradient(field)
    g2 = grads[0] ** 2
    for g in grads[1:]:
        g2 += g**2
    del grads
    eps2 = np.float32((0.33 * float(np.median(np.sqrt(g2[::2, ::2, ::2])))) ** 2)
    g2 += eps2
    return (field / np.sqrt(g2)).astype(np.float32)


def ring_profile(
    rng: np.random.Generator, ny: int, nx: int, n: int, amplitude: float
) -> np.ndarray:
    """Ring artefacts of a reconstruction: ``n`` concentric rings about the image centre.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the radii and amplitudes.
    ny, nx : int
        Slice size in pixels; the rings are centred on the image centre (the rotation centre).
    n : int
        Number of rings, Gaussian profiles of sigma 0.7 px at random radii (3-48 % of the
        smaller slice size).
    amplitude : float
        Largest ring amplitude in grey values; each ring gets ±(0.5-1) x ``amplitude``.

    Returns
    -------
    (Y, X) ndarray of float32
        Grey values to add to every slice.
    """
    yc, xc = (ny - 1) / 2.0, (nx - 1) / 2.0
    r = np.hypot(np.arange(ny)[:, None] - yc, np.arange(nx)[None, :] - xc)
    out = np.zeros((ny, nx), dtype=np.float64)
    radii = rng.uniform(0.03, 0.48, n) * min(ny, nx)
    amps = amplitude * rng.uniform(0.5, 1.0, n) * rng.choice([-1.0, 1.0], n)
    for ri, ai in zip(radii, amps, strict=True):
        out += ai * np.exp(-0.5 * ((r - ri) / 0.7) ** 2)
    return out.astype(np.float32)


def rotation_taking_z_to(direction: Sequence[float] | np.ndarray) -> np.ndarray:
    """Smallest rotation taking the z axis to ``direction``.

    Parameters
    ----------
    direction : (3,) array_like of float
        Target direction ``(z, y, x)``, any length > 0.

    Returns
    -------
    (3, 3) ndarray of float
        Rotation matrix acting on ``(z, y, x)`` column vectors (a rotation about an axis in the
        x-y plane; for ``direction = -z`` the half turn about x).
    """
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    e = np.array([1.0, 0.0, 0.0])
    v = np.cross(e, u)
    s, c = float(np.linalg.norm(v)), float(e @ u)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([-1.0, -1.0, 1.0])
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx * ((1.0 - c) / s**2)


def gaussian_noise_field(
    rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]
) -> np.ndarray:
    """White noise filtered by a Gaussian (periodic boundaries), standardised.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the noise.
    shape : sequence of int
        Grid shape.
    sigma : float or sequence of float
        Filter sigma in grid samples (per axis).

    Returns
    -------
    ndarray of float32
        Zero mean and unit standard deviation over the grid, so ``scipy.special.ndtri(p)`` is
        (about) its ``p`` quantile.
    """
    noise = rng.standard_normal(tuple(int(n) for n in shape), dtype=np.float32)
    out = ndimage.gaussian_filter(noise, sigma, mode="wrap", truncate=3.0)
    out -= np.float32(out.mean())
    out /= np.float32(max(float(out.std()), 1e-12))
    return out


class GridField:
    """A scalar field sampled on a regular grid in mm, read at any point by linear interpolation.

    Parameters
    ----------
    values : (Nz, Ny, Nx) ndarray of float32
        Samples; sample ``(i, j, k)`` sits at ``origin + (i, j, k) * spacing``.
    origin : (3,) sequence of float
        Position (mm) of sample ``(0, 0, 0)``.
    spacing : float or (3,) sequence of float
        Grid spacing (mm) along each axis.

    Notes
    -----
    Points outside the grid take the value of the nearest edge sample. The grid lives in the
    frame of the object it describes (mm, independent of any scan), so the same field reads
    the same at every voxel size.
    """

    def __init__(self, values: np.ndarray, origin: Sequence[float],
                 spacing: float | Sequence[float]) -> None:
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.origin = np.asarray(origin, dtype=np.float64).reshape(3)
        sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
        self.spacing = sp.copy()

    @classmethod
    def covering(cls, lo: Sequence[float], hi: Sequence[float],
                 spacing: float | Sequence[float],
                 make: Callable[[tuple[int, int, int]], np.ndarray]) -> GridField:
        """A grid of ``spacing`` mm (one value, or one per axis) covering the box ``lo .. hi``
        (mm, with half a sample to spare on every side), values ``make(shape)``."""
        lo_a = np.asarray(lo, dtype=np.float64)
        hi_a = np.asarray(hi, dtype=np.float64)
        sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
        shape = tuple(int(math.ceil((h - l_) / d)) + 2 for l_, h, d in zip(lo_a, hi_a, sp,
                                                                             strict=True))
        return cls(make(shape), lo_a - sp / 2.0, sp)  # type: ignore[arg-type]

    def __call__(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Field values at points ``(z, y, x)`` (mm, 1-D arrays of one length), float32."""
        coords = np.empty((3, np.size(z)), dtype=np.float32)
        for a, v in enumerate((z, y, x)):
            np.subtract(v, np.float32(self.origin[a]), out=coords[a], casting="unsafe")
            coords[a] *= np.float32(1.0 / self.spacing[a])
        return ndimage.map_coordinates(self.values, coords, order=1, mode="nearest",
                                       output=np.float32)

    @property
    def nbytes(self) -> int:
        """Memory of the samples in bytes."""
        return int(self.values.nbytes)


def replace_folder_atomic(out_dir: Path, name: str, write: Callable[[Path], Any]) -> None:
    """Write a folder atomically: ``write(folder)`` on a temporary folder beside
    ``out_dir / name``, then rename it into place (replacing an earlier one).

    Parameters
    ----------
    out_dir : pathlib.Path
        Existing parent folder.
    name : str
        Name of the folder to (re)place.
    write : callable
        Called with the temporary folder's path (not yet existing: ``write`` creates it).
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir))
    try:
        write(staging / name)
        target = out_dir / name
        old = None
        if target.exists():
            old = out_dir / f".{name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(staging / name, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def round_roi_zeros(grey: np.ndarray) -> None:
    """NRecon's round ROI, in place: exact zeros (no data) outside the reconstruction circle
    inscribed in each slice, at least 1 inside it."""
    _, ny, nx = grey.shape
    yc, xc = (ny - 1) / 2.0, (nx - 1) / 2.0
    r2 = (np.arange(ny)[:, None] - yc) ** 2 + (np.arange(nx)[None, :] - xc) ** 2
    inside = r2 <= (min(ny, nx) / 2.0) ** 2
    grey[:, ~inside] = 0
    np.maximum(grey, 1, out=grey, where=inside[None])


def speck_positions(rng: np.random.Generator, labels: np.ndarray, n: int, round_roi: bool, *,
                    below: int, z_margin: int, tries: int
                    ) -> list[tuple[int, int, int, int, float]]:
    """``n`` bright specks ``(z, y, x, cube size 1-3, grey 200-255)`` where every label within
    4 voxels in-plane (``z_margin`` slices along z) is at most ``below`` (no tissue near), inside
    the reconstruction circle with ``round_roi``; at most ``tries`` draws per speck."""
    nz, ny, nx = labels.shape
    yc, xc, rad = (ny - 1) / 2.0, (nx - 1) / 2.0, min(ny, nx) / 2.0 - 4.0
    out: list[tuple[int, int, int, int, float]] = []
    for _ in range(tries * max(n, 1)):
        if len(out) == n:
            break
        size = int(rng.integers(1, 4))
        z = int(rng.integers(0, nz - size + 1))
        y = int(rng.integers(4, ny - size - 4))
        x = int(rng.integers(4, nx - size - 4))
        if round_roi and math.hypot(y - yc, x - xc) > rad - size:
            continue
        around = labels[max(0, z - z_margin): z + size + z_margin, y - 4: y + size + 4,
                        x - 4: x + size + 4]
        if (around <= below).all():
            out.append((z, y, x, size, float(rng.uniform(200.0, 255.0))))
    return out
