"""Mean intercept length (MIL) fabric tensor and degree of anisotropy.

Public functions: :func:`anisotropy` (whole arrays) and :func:`anisotropy_chunked` (the same
result from a :class:`~ctmorph.morphometry.zsource.ZSource` read in z-blocks, in bounded
memory). The line sampling runs in :mod:`ctmorph._kernels.mil`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .._kernels.mil import GOLDEN_ANGLE, NO_LIMIT, mil_counts_window
from ..errors import ConfigError, SegmentationError
from ..spacing import normalize_spacing
from .arrays import check_chunk_slices, prepare_masks
from .zsource import ArraySource, ZSource, block_ranges, chunk_slices_for

__all__ = ["Fabric", "anisotropy", "anisotropy_chunked", "hemisphere_directions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Fabric:
    """MIL fabric of a bone VOI (see :func:`anisotropy` for the definitions).

    Attributes
    ----------
    DA : float
        Degree of anisotropy ``1 − μmin/μmax`` of the fitted MIL tensor ``M``
        (dimensionless, 0 isotropic, 1 fully anisotropic); equal to
        ``1 − (MIL_min / MIL_max)²``.
    eigenvalues : (3,) tuple of float
        Principal mean intercept lengths in mm, ascending: ``μ^(-1/2)`` for the eigenvalues
        μ of ``M`` (descending), i.e. the semi-axes of the fitted MIL ellipsoid and the
        eigenvalues of Cowin's fabric tensor ``H = M^(-1/2)``. ``inf`` where μ <= 0 (no
        intercepts along that axis).
    eigenvectors : (3,) tuple of (3,) tuples of float
        Unit principal directions ``(z, y, x)`` in physical space, one per eigenvalue, sign
        chosen so that the first non-zero component is positive.
    main_direction : (3,) tuple of float
        Direction of the longest MIL (the last eigenvector): the trabecular alignment.
    tensor : (3, 3) tuple of tuples of float
        The fitted quadratic form ``M`` in 1/mm², ``1/MIL(ω)² ≈ ωᵀ M ω``.
    directions : (n, 3) ndarray of float
        The line directions used (unit, ``(z, y, x)``, upper hemisphere ``z > 0``).
    mil : (n,) ndarray of float
        Measured MIL per direction in mm (``inf`` where no intercept was found).
    """

    DA: float
    eigenvalues: tuple[float, float, float]
    eigenvectors: tuple[tuple[float, float, float], ...]
    main_direction: tuple[float, float, float]
    tensor: tuple[tuple[float, float, float], ...]
    directions: np.ndarray
    mil: np.ndarray

    def as_dict(self) -> dict[str, float]:
        """Flat row of floats: ``DA``, ``MIL.min/mid/max`` (mm), ``MIL.dir.z/y/x``."""
        lo, mid, hi = self.eigenvalues
        dz, dy, dx = self.main_direction
        return {
            "DA": self.DA,
            "MIL.min": lo,
            "MIL.mid": mid,
            "MIL.max": hi,
            "MIL.dir.z": dz,
            "MIL.dir.y": dy,
            "MIL.dir.x": dx,
        }


def hemisphere_directions(n: int) -> np.ndarray:
    """``n`` near-uniform unit directions on the upper hemisphere (Fibonacci spiral).

    Direction ``i`` has ``z = 1 − (i + ½)/n`` and azimuth ``i`` times the golden angle, so
    each covers the same solid angle ``2π/n``. Returned as ``(n, 3)`` ``(z, y, x)`` rows.
    """
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - (i + 0.5) / n
    r = np.sqrt(1.0 - z * z)
    phi = i * GOLDEN_ANGLE
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


def _canonical_sign(vec: np.ndarray) -> np.ndarray:
    for c in vec:
        if abs(c) > 1e-12:
            return vec if c > 0 else -vec
    return vec


def anisotropy(
    bone: np.ndarray,
    voi: np.ndarray | None = None,
    *,
    spacing: float | Sequence[float],
    n_directions: int = 128,
    line_spacing: float | None = None,
    step: float | None = None,
    smooth: float = 0.7,
) -> Fabric:
    """Mean intercept length fabric tensor and degree of anisotropy (DA) of bone in a VOI.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    voi : (Z, Y, X) ndarray of bool, optional
        Volume of interest; ``None`` means the whole volume.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    n_directions : int
        Number of line directions on the hemisphere (fixed Fibonacci set, at least 9).
    line_spacing : float, optional
        Pitch of the square grid of parallel lines in mm; default 2 × the smallest voxel size.
    step : float, optional
        Sampling step along the lines in mm; default the smallest voxel size.
    smooth : float
        Gaussian sigma, in voxels along each axis, applied to the bone indicator before
        interpolation (0 samples the trilinear interpolant of the binary image). See Notes.

    Returns
    -------
    Fabric
        DA (dimensionless), principal MILs (mm), principal directions, main direction, the
        fitted tensor ``M`` (1/mm²) and the per-direction MIL. ``Fabric.as_dict()`` gives
        the flat CSV row.

    Raises
    ------
    ConfigError
        On invalid masks, spacing or sampling parameters.
    SegmentationError
        If the VOI is empty or contains no bone–marrow boundary.

    Notes
    -----
    **MIL.** For each direction ω of a fixed set of ``n_directions`` Fibonacci-spiral
    directions on the upper hemisphere (ω and −ω are the same line family), a square grid of
    parallel lines with pitch ``line_spacing`` covers the box spanned by the voxel centres
    (of the VOI's bounding box plus a context margin), turned about ω by a multiple of the
    golden angle that changes with the direction so that the grid never aliases with a
    periodic structure; each line is sampled every ``step`` mm in physical space
    (anisotropic voxels handled by ``spacing``). A sample belongs to the VOI when its
    nearest voxel does; the line length in the VOI is ``L(ω)`` and ``I(ω)`` is the number of
    bone–marrow intercepts, i.e. half the number of phase changes between consecutive
    samples (a change with one sample outside the VOI counts half, so the VOI wall is not a
    surface while bone outside the VOI still bounds the phases). ``MIL(ω) = L(ω) / I(ω)``
    is then the mean length of one bone + one marrow intercept: for parallel plates of
    period P it is ``P / |cos θ|`` (Harrigan & Mann 1984).

    **Sub-voxel boundary.** Counting changes of the raw voxel phase measures the staircase
    of voxel faces: by Cauchy–Crofton the intercept density is then
    ``Σ_a S_a |ω_a|`` with only the three axis normals, and a plate with normal (1, 1, 1)
    would look isotropic. The phase is therefore read from the trilinear interpolant at level
    ½ of the bone indicator, lightly Gaussian smoothed (``smooth`` voxels) to remove the
    remaining voxel-scale ripple. Structures thinner than about one voxel may vanish with
    smoothing; ``smooth=0`` keeps them at the price of a grid-axis bias on oblique surfaces.
    The principal MILs grow slightly with ``smooth`` (voxel-scale roughness no longer makes
    intercepts); DA is stable from ``smooth`` ≈ 0.7 on.

    **Tensor and DA.** ``1/MIL(ω)²`` is fitted by linear least squares with the quadratic
    form ``ωᵀ M ω`` (ellipsoid fit, Harrigan & Mann 1984), and ``DA = 1 − μmin/μmax`` with
    μ the eigenvalues of ``M`` — the tensor of the ellipsoid equation, as in BoneJ (Doube et
    al. 2010; Domander et al. 2021), so values compare with BoneJ's. In terms of the principal
    MILs (the eigenvalues of Cowin's fabric tensor ``H = M^(-1/2)``; Cowin 1985, Odgaard
    1997) ``DA = 1 − (MIL_min/MIL_max)²``; the ratio form ``1 − MIL_min/MIL_max`` is
    ``1 − sqrt(1 − DA)``. A non-positive μ (no intercepts along that axis, e.g. inside
    parallel plates) means an infinite MIL and DA = 1. ``main_direction`` is the eigenvector of the
    largest MIL; for parallel plates it is an (arbitrary) in-plane direction while the plate
    normal is the eigenvector of the smallest MIL (``eigenvectors[0]``).

    The result is deterministic: fixed directions and line grid, integer counts per
    direction, one thread per direction, so the numba thread count does not change it.

    References
    ----------
    Harrigan TP, Mann RW (1984). Characterization of microstructural anisotropy in orthotropic
    materials using a second rank tensor. J Mater Sci 19:761-767.

    Cowin SC (1985). The relationship between the elasticity tensor and the fabric tensor.
    Mech Mater 4:137-147.

    Odgaard A (1997). Three-dimensional methods for quantification of cancellous bone
    architecture. Bone 20:315-328.

    Doube M et al. (2010). BoneJ: free and extensible bone image analysis in ImageJ. Bone
    47:1076-1079. Domander R, Felder AA, Doube M (2021). BoneJ2 - refactoring established
    research software. Wellcome Open Res 6:37.

    González Á (2010). Measurement of areas on a sphere using Fibonacci and latitude-longitude
    lattices. Math Geosci 42:49-64.

    Computed by :func:`anisotropy_chunked` on the arrays read as one block (the one
    implementation; the counts, and so the result, do not depend on the block size).
    """
    bone, voi, sp = prepare_masks(bone, voi, spacing)
    return anisotropy_chunked(ArraySource(bone, voi), spacing=sp, n_directions=n_directions,
                              line_spacing=line_spacing, step=step, smooth=smooth,
                              chunk_slices=bone.shape[0])


def anisotropy_chunked(
    src: ZSource,
    *,
    spacing: float | Sequence[float],
    n_directions: int = 128,
    line_spacing: float | None = None,
    step: float | None = None,
    smooth: float = 0.7,
    chunk_slices: int | None = None,
) -> Fabric:
    """:func:`anisotropy` of a segmented slab read in z-blocks, in bounded memory.

    The per-direction counts are the same integers whatever the block size, so ``mil``, the
    tensor and ``DA`` are bitwise those of ``anisotropy(bone, voi, ...)`` of the source's
    arrays. The source's ``marrow_space`` is not used.

    Parameters
    ----------
    src : ZSource
        The slab: bone and VOI, ``(Z, Y, X)`` voxels.
    spacing, n_directions, line_spacing, step, smooth
        As for :func:`anisotropy` (mm, voxels).
    chunk_slices : int, optional
        Slices of the VOI box (plus margin) whose samples one block counts; default
        :func:`~ctmorph.morphometry.zsource.chunk_slices_for` of the source's shape. Each block
        reads ``2 * (r + int(step/dz) + 2)`` slices more (``r`` the Gaussian's radius).

    Returns
    -------
    Fabric
        As :func:`anisotropy`.

    Raises
    ------
    ConfigError
        On invalid spacing, sampling parameters or chunk size, or a slab thinner than 2 voxels.
    SegmentationError
        If the VOI is empty or contains no bone–marrow boundary.

    Notes
    -----
    The line grid is that of the whole VOI box (plus the context margin of
    :func:`anisotropy`). Block ``b`` owns the samples whose interpolation cell starts on its
    slices (padded z index ``int(q)`` in its range) and the pair of consecutive samples
    ending at each of them; it holds the Gaussian-smoothed field on its slices plus those of
    the previous sample, computed from its slices plus the Gaussian's radius on each side.
    A separable Gaussian filter with that halo gives bitwise the values of the whole filter;
    beyond the box ends the slices are repeated, which is what the whole version's edge
    padding and ``"nearest"`` mode do. Memory is a few blocks of float32 instead of two
    float32 copies of the whole box.
    """
    sp = normalize_spacing(spacing, 3)
    shape = tuple(int(n) for n in src.shape)
    if min(shape) < 1:
        raise ConfigError(f"bone is empty, got shape {shape}")
    vz0, vz1, vy0, vy1, vx0, vx1 = src.voi_box()
    h, ds = _sampling(sp, n_directions, line_spacing, step, smooth)
    if min(shape) < 2:
        raise ConfigError(f"anisotropy needs at least 2 voxels along each axis, got {shape}")
    chunk = check_chunk_slices(chunk_slices) or chunk_slices_for(shape)

    # the whole version's crop: VOI box + margin, clipped to the slab
    m = _margin(smooth)
    bz0, bz1 = max(vz0 - m, 0), min(vz1 + m, shape[0])
    by0, by1 = max(vy0 - m, 0), min(vy1 + m, shape[1])
    bx0, bx1 = max(vx0 - m, 0), min(vx1 + m, shape[2])
    nz, ny, nx = bz1 - bz0, by1 - by0, bx1 - bx0
    radius = int(4.0 * smooth + 0.5)  # scipy's Gaussian radius (truncate 4)
    reach = int(ds / sp[0]) + 2  # padded slices between a sample's cell and its predecessor's
    dirs = hemisphere_directions(int(n_directions))
    sp_arr = np.asarray(sp, dtype=np.float64)
    n_in = np.zeros(len(dirs), dtype=np.int64)
    crossings = np.zeros(len(dirs), dtype=np.int64)
    owned = block_ranges(1, nz + 1, chunk)  # padded z of the cells holding samples: 1..nz
    for b, (o0, o1) in enumerate(owned):
        w0, w1 = max(o0 - reach, 0), min(o1 + reach, nz + 2)  # padded slices the kernel reads
        voi_p, bone_p = _padded_window(src, (bz0, by0, by1, bx0, bx1), nz, w0, w1, radius)
        if not voi_p.any():
            continue  # neither the owned samples nor their predecessors are in the VOI
        field = bone_p.astype(np.float32)
        del bone_p
        if smooth > 0:
            field = ndimage.gaussian_filter(field, smooth, mode="nearest")
        field = np.ascontiguousarray(field[radius: radius + w1 - w0])
        full = bool(voi_p.all())
        if full:
            voi_p = np.zeros((1, 1, 1), dtype=np.uint8)
        a, c = mil_counts_window(
            field, voi_p, full, sp_arr, dirs, h, ds, 0.5, nz, ny, nx, w0,
            -NO_LIMIT if b == 0 else o0, NO_LIMIT if b == len(owned) - 1 else o1,
        )
        n_in += a
        crossings += c
        del field, voi_p
    log.debug("MIL counted in %d blocks of %d slices (box %dx%dx%d)", len(owned), chunk,
              nz, ny, nx)
    return _fabric(dirs, n_in, crossings, ds)


def _padded_window(
    src: ZSource,
    box: tuple[int, int, int, int, int],
    nz: int,
    w0: int,
    w1: int,
    radius: int,
) -> tuple[np.ndarray, np.ndarray]:
    """VOI of padded slices ``[w0, w1)`` and bone of ``[w0 - radius, w1 + radius)`` of the
    whole version's edge-padded box ``(z0, y0, y1, x0, x1)`` (``nz`` slices), as uint8.

    Padded slice ``p`` is box slice ``clip(p - 1, 0, nz - 1)``: the edge padding, and beyond
    it the Gaussian's ``"nearest"`` extension, of the whole version.
    """
    z0, y0, y1, x0, x1 = box
    rows = np.clip(np.arange(w0 - radius, w1 + radius) - 1, 0, nz - 1)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    blk = src.read(z0 + lo, z0 + hi)
    plane = ((0, 0), (1, 1), (1, 1))
    bone = np.pad(blk.bone[:, y0:y1, x0:x1][rows - lo].view(np.uint8), plane, mode="edge")
    voi = blk.voi[:, y0:y1, x0:x1][rows[radius: radius + w1 - w0] - lo]
    del blk
    return np.ascontiguousarray(np.pad(voi.view(np.uint8), plane, mode="edge")), bone


def _sampling(
    sp: tuple[float, float, float],
    n_directions: int,
    line_spacing: float | None,
    step: float | None,
    smooth: float,
) -> tuple[float, float]:
    """Check the sampling parameters; return the line pitch and the step in mm."""
    if not isinstance(n_directions, int | np.integer) or n_directions < 9:
        raise ConfigError(f"n_directions must be an integer >= 9, got {n_directions!r}")
    dmin = min(sp)
    h = 2.0 * dmin if line_spacing is None else float(line_spacing)
    ds = dmin if step is None else float(step)
    for name, val in (("line_spacing", h), ("step", ds)):
        if not (math.isfinite(val) and val > 0):
            raise ConfigError(f"{name} must be a positive length in mm, got {val!r}")
    if not (math.isfinite(smooth) and smooth >= 0):
        raise ConfigError(f"smooth must be a non-negative sigma in voxels, got {smooth!r}")
    return h, ds


def _margin(smooth: float) -> int:
    """Context in voxels kept around the VOI box: the Gaussian's radius (scipy's
    ``int(truncate * sigma + 0.5)`` with truncate 4) plus 2 for the interpolation."""
    return int(4.0 * smooth + 0.5) + 2


def _fabric(dirs: np.ndarray, n_in: np.ndarray, crossings: np.ndarray, ds: float) -> Fabric:
    """Fit the MIL tensor to the per-direction counts of :func:`~ctmorph._kernels.mil.mil_counts`
    (``ds`` the sample step in mm) and build the :class:`Fabric`."""
    length = n_in * ds  # mm of line in the VOI
    intercepts = crossings / 4.0  # crossings are counted twice, intercepts are pairs
    ok = length > 0
    if not (intercepts[ok] > 0).any():
        raise SegmentationError("no bone-marrow boundary in the VOI: anisotropy is undefined")
    inv_mil = np.where(ok, intercepts / np.where(ok, length, 1.0), 0.0)  # 1/mm
    with np.errstate(divide="ignore"):
        mil = np.where(inv_mil > 0, 1.0 / np.where(inv_mil > 0, inv_mil, 1.0), np.inf)
    w = dirs[ok]
    design = np.stack(
        [w[:, 0] ** 2, w[:, 1] ** 2, w[:, 2] ** 2,
         2 * w[:, 0] * w[:, 1], 2 * w[:, 0] * w[:, 2], 2 * w[:, 1] * w[:, 2]], axis=1,
    )
    m = np.linalg.lstsq(design, inv_mil[ok] ** 2, rcond=None)[0]
    tensor = np.array([[m[0], m[3], m[4]], [m[3], m[1], m[5]], [m[4], m[5], m[2]]])
    mu, vecs = np.linalg.eigh(tensor)  # ascending mu = descending MIL
    if mu[2] <= 0:
        raise SegmentationError("no bone-marrow boundary in the VOI: anisotropy is undefined")
    with np.errstate(divide="ignore"):
        principal = np.where(mu > 0, 1.0 / np.sqrt(np.clip(mu, 1e-300, None)), np.inf)
    da = 1.0 - max(mu[0], 0.0) / mu[2]
    order = [2, 1, 0]  # ascending MIL
    evs = tuple(tuple(float(c) for c in _canonical_sign(vecs[:, k])) for k in order)
    directions = dirs.copy()
    directions.flags.writeable = False
    mil.flags.writeable = False
    log.debug("MIL fabric: DA=%.4f principal MIL=%s mm", da, principal[order])
    return Fabric(
        DA=float(da),
        eigenvalues=tuple(float(principal[k]) for k in order),  # type: ignore[arg-type]
        eigenvectors=evs,
        main_direction=evs[2],
        tensor=tuple(tuple(float(c) for c in row) for row in tensor),  # type: ignore[arg-type]
        directions=directions,
        mil=mil,
    )
