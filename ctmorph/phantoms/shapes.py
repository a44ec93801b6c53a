"""Analytic test volumes with known morphometry.

All shapes are boolean ``(Z, Y, X)`` arrays; sizes and positions are in voxels. Each function
documents the analytic truth its volume carries, so tests, docs and benchmarks share one set
of shapes (STYLE.md, "Geometry with known answers").
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "plates",
    "tilted_plates",
    "rod_lattice",
    "ball",
    "random_spheres",
    "torus",
    "cube_with_cavity",
    "random_trabecular",
    "grey_from_mask",
]


def _shape3(shape: int | tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(shape, int):
        return (shape, shape, shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be an int or three ints, got {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def plates(
    shape: int | tuple[int, int, int],
    thickness: int,
    gap: int,
    *,
    axis: int = 0,
    offset: int = 0,
) -> np.ndarray:
    """Parallel plates normal to ``axis``, repeating with period ``thickness + gap``.

    Truth (voxel units, volume unbounded along the plates): BV/TV = t / (t + s),
    Tb.Th = t, Tb.Sp = s, Tb.N = 1 / (t + s), BS/BV = 2 / t, SMI = 0, DA = 1.

    Parameters
    ----------
    shape : int or (3,) tuple of int
        Volume shape in voxels.
    thickness, gap : int
        Plate thickness ``t`` and gap ``s`` in voxels.
    axis : int
        Axis the plates are normal to.
    offset : int
        Shift of the pattern along ``axis`` in voxels (the pattern may be cut anywhere).
    """
    shp = _shape3(shape)
    period = thickness + gap
    coord = (np.arange(shp[axis]) + offset) % period < thickness
    view = [1, 1, 1]
    view[axis] = shp[axis]
    return np.broadcast_to(coord.reshape(view), shp).copy()


def tilted_plates(
    shape: int | tuple[int, int, int],
    thickness: float,
    gap: float,
    normal: tuple[float, float, float],
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Parallel plates with an arbitrary unit normal, voxelised by voxel-centre sampling.

    ``thickness`` and ``gap`` are in the units of ``spacing`` (voxel units by default); the
    normal is given as ``(nz, ny, nx)`` in physical space. Truth: as :func:`plates`.
    """
    shp = _shape3(shape)
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    z, y, x = np.meshgrid(
        *(np.arange(s) * d for s, d in zip(shp, spacing, strict=True)), indexing="ij"
    )
    h = n[0] * z + n[1] * y + n[2] * x
    return np.mod(h, thickness + gap) < thickness


def rod_lattice(
    shape: int | tuple[int, int, int],
    pitch: int,
    diameter: float,
    *,
    axes: tuple[int, ...] = (0, 1, 2),
) -> np.ndarray:
    """Cubic lattice of cylindrical rods along ``axes`` with period ``pitch`` voxels.

    Rod centre lines sit at voxel centres ``pitch // 2 + k * pitch``. A rod is the set of voxels
    whose centre is within ``diameter / 2`` of the centre line. For the full 3-axis lattice the
    connectivity density is one independent loop per cell: Conn.D = 2 / pitch³ in the infinite
    lattice (Euler characteristic per cell = 1 node - 3 rods = -2), SMI ≈ 3 away from the nodes.
    """
    shp = _shape3(shape)
    centre = pitch // 2
    r2 = (diameter / 2.0) ** 2
    grids = np.meshgrid(*(np.arange(s) for s in shp), indexing="ij")
    d = [((g - centre + pitch / 2.0) % pitch) - pitch / 2.0 for g in grids]
    out = np.zeros(shp, dtype=bool)
    for ax in axes:
        others = [d[i] for i in range(3) if i != ax]
        out |= others[0] ** 2 + others[1] ** 2 <= r2
    return out


def ball(shape: int | tuple[int, int, int], radius: float, centre=None) -> np.ndarray:
    """Voxels whose centre is within ``radius`` of ``centre`` (default: the volume centre)."""
    shp = _shape3(shape)
    c = np.array([(s - 1) / 2.0 for s in shp]) if centre is None else np.asarray(centre, float)
    grids = np.meshgrid(*(np.arange(s) for s in shp), indexing="ij")
    return sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True)) <= radius**2


def random_spheres(
    shape: int | tuple[int, int, int],
    radius: float,
    count: int,
    *,
    seed: int = 0,
    margin: float | None = None,
) -> np.ndarray:
    """Non-overlapping balls of one radius at random centres (rejection sampling, seeded).

    Balls keep a surface-to-surface distance of at least ``margin`` voxels (default 2) and stay
    inside the volume. Truth: Tb.Th = 2·radius, SMI = 4, χ = ``count``.
    """
    shp = _shape3(shape)
    rng = np.random.default_rng(seed)
    gap = 2.0 if margin is None else margin
    centres: list[np.ndarray] = []
    lo = np.full(3, radius + 1.0)
    hi = np.array(shp, dtype=float) - radius - 2.0
    tries = 0
    while len(centres) < count:
        tries += 1
        if tries > 100000:
            raise ValueError("could not place that many non-overlapping spheres")
        c = rng.uniform(lo, hi)
        if all(np.linalg.norm(c - o) >= 2 * radius + gap for o in centres):
            centres.append(c)
    out = np.zeros(shp, dtype=bool)
    for c in centres:
        out |= ball(shp, radius, c)
    return out


def torus(shape: int | tuple[int, int, int], major: float, minor: float) -> np.ndarray:
    """Solid torus around the z axis through the volume centre. Truth: χ = 0 (one handle)."""
    shp = _shape3(shape)
    c = [(s - 1) / 2.0 for s in shp]
    z, y, x = np.meshgrid(*(np.arange(s) - ci for s, ci in zip(shp, c, strict=True)),
                          indexing="ij")
    rho = np.sqrt(x**2 + y**2)
    return (rho - major) ** 2 + z**2 <= minor**2


def cube_with_cavity(shape: int | tuple[int, int, int], size: int, cavity: int) -> np.ndarray:
    """Solid cube of edge ``size`` centred in the volume with a closed cubic cavity of edge
    ``cavity`` at its centre. Truth: χ = 2 (one component, one cavity)."""
    shp = _shape3(shape)
    out = np.zeros(shp, dtype=bool)
    lo = [(s - size) // 2 for s in shp]
    out[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = True
    clo = [(s - cavity) // 2 for s in shp]
    out[clo[0]:clo[0] + cavity, clo[1]:clo[1] + cavity, clo[2]:clo[2] + cavity] = False
    return out


def random_trabecular(
    shape: int | tuple[int, int, int],
    *,
    bv_tv: float = 0.25,
    scale: float = 3.0,
    seed: int = 0,
) -> np.ndarray:
    """A random sponge: Gaussian-filtered white noise thresholded at the ``1 - bv_tv`` quantile.

    Not analytic; used for oracle comparisons and benchmarks. ``scale`` is the filter sigma in
    voxels and sets the trabecular size (thickness ≈ 2-3 × scale at BV/TV 0.2-0.3).
    """
    from scipy import ndimage

    shp = _shape3(shape)
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shp).astype(np.float32), scale,
                                    mode="wrap")
    return field > np.quantile(field, 1.0 - bv_tv)


def grey_from_mask(
    mask: np.ndarray,
    *,
    bone: float = 200.0,
    background: float = 60.0,
    blur: float = 0.7,
    noise: float = 6.0,
    seed: int = 0,
    dtype=np.uint8,
) -> np.ndarray:
    """Turn a binary phantom into a grey image: two levels, Gaussian partial-volume blur of
    ``blur`` voxels, additive Gaussian noise of SD ``noise`` grey values, clipped to ``dtype``."""
    from scipy import ndimage

    img = np.where(mask, np.float32(bone), np.float32(background))
    if blur > 0:
        img = ndimage.gaussian_filter(img, blur, mode="nearest")
    if noise > 0:
        img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape).astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.rint(img), info.min, info.max).astype(dtype)
