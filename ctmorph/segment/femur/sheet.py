"""The growth plate's mid-surface: a sheet nearly free of bone, found by the bone it leaves out.

The growth-plate cartilage has the grey value of marrow, so what shows the plate is geometry:
a sheet 0.05-0.25 mm thick, free of bone but for bridges, spanning the whole marrow cavity,
between the dense bone of the epiphysis (distally) and of the primary spongiosa (proximally).
In real femurs the sheet is domed or W-shaped and tilted to the shaft, so a slice cuts it
obliquely and no single slice shows it; marrow spaces of sparse (OVX) bone, on the other hand,
leave slices nearly free of bone over long stretches. The search therefore follows the sheet
itself, on the scan's :class:`~.tiles.TileProfiles`:

1. **Planes** (:func:`search_planes`). For tilted planes (slopes up to :data:`MAX_TILT_DEG`,
   in steps keeping the plane within 0.15 mm across the bone, then 0.03 mm around the best),
   the bone fraction along the plane through every slice (:func:`~.tiles.surface_sums`).
   Random trabecular structure averages out over the cross-section; the cartilage sheet does
   not: on its plane the fraction dips between two high shoulders. The deepest dips, at least
   ``2 SHOULDER_MM`` apart, are the candidates.
2. **Bend** (:func:`bend`). Around a candidate plane, the quadratic surface (a dome, a saddle,
   a trough; up to :data:`MAX_BULGE_MM` at the rim) along which the dip is deepest.
3. **Wave** (:func:`wave`). Plus the W (or M) across the bone, up to :data:`MAX_WAVE_MM`,
   that deepens the dip further: the plate dips under each condyle and rises between them.
4. **Grow** (:func:`grow`). From the tiles whose own dip sits on that surface, the plate is
   followed tile by tile (:func:`grow_positions`, deepest dip first, at most :data:`STEP_MM`
   between neighbours), so it may take any smooth shape without a model; kept when it
   deepens the dip of the **flattened profile** (:func:`flattened_profile`): the bone
   fraction against the distance from the surface, all tiles together, which shows even a
   domed plate as one sharp dip.

:func:`sheet_score` ranks the fitted sheets; :mod:`.plate` turns the best into the growth
plate, its reference slice, its confidence and its flags. All lengths are in mm; slice
indices are of the working frame (the scan, or the scan resampled along the bone axis).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from .tiles import (
    SHOULDER_MM,
    TILE_MM,
    TileProfiles,
    dip_depth,
    smooth_on_grid,
    surface_sums,
    tile_fraction,
)

__all__ = [
    "MAX_TILT_DEG",
    "MAX_BULGE_MM",
    "MAX_WAVE_MM",
    "STEP_MM",
    "Surface",
    "Sheet",
    "search_planes",
    "bend",
    "wave",
    "grow",
    "grow_positions",
    "dip_centre",
    "flattened_profile",
    "fit_sheet",
    "profile_dip",
    "profile_edges",
    "sheet_score",
]

#: Largest tilt (degrees) of the plate's plane against the slices searched: up to 15° to the
#: shaft, plus what is left of the bone's own tilt after alignment.
MAX_TILT_DEG = 22.0
#: Gaussian sigma (mm) of the smoothing of the tile positions into the mid-surface.
_SURFACE_SIGMA_MM = 0.15
#: How far (mm) the plate may step from a tile to its neighbour when it is followed.
STEP_MM = 0.05


def _slope_grid(max_tilt_deg: float, width_mm: float, dz: float, tol_mm: float
                ) -> np.ndarray:
    """Slopes ``(P, 2)`` (slices per mm) with steps keeping a plane within ``tol_mm`` over
    ``width_mm``."""
    smax = math.tan(math.radians(max_tilt_deg))
    step = max(tol_mm / max(width_mm, 1e-9), 1e-3)
    n = int(math.ceil(smax / step))
    s = np.arange(-n, n + 1) * (smax / max(n, 1))
    sy, sx = np.meshgrid(s, s, indexing="ij")
    keep = np.hypot(sy, sx) <= smax + 1e-12
    return np.stack([sy[keep], sx[keep]], axis=-1) / dz


@dataclass(frozen=True)
class Surface:
    """A smooth surface of the search, in slices: ``z0 + a . u + u^T K u`` at the in-plane
    offset ``u`` (mm) from ``origin``, with ``K`` symmetric (``kyy``, ``kxx``, ``kxy``), plus
    an optional residual per tile.

    Attributes
    ----------
    z0 : float
        Slice at ``origin``.
    slope : (float, float)
        Slices per mm along y and x.
    curvature : (float, float, float)
        ``(kyy, kxx, kxy)``, slices per mm².
    origin : (float, float)
        Pivot (mm).
    dip : float
        Lower shoulder minus the bone fraction on the surface (summed over all tiles).
    fraction : float
        Bone fraction of the interior on the surface.
    residual : (T,) ndarray or None
        Per-tile correction (slices) after the local refinement.
    """

    z0: float
    slope: tuple[float, float]
    curvature: tuple[float, float, float]
    origin: tuple[float, float]
    dip: float
    fraction: float
    residual: np.ndarray | None = field(default=None, compare=False, repr=False)

    def shape_at(self, centres_mm: np.ndarray) -> np.ndarray:
        """The surface minus ``z0`` at tile centres ``(T, 2)`` mm (slices)."""
        u = np.asarray(centres_mm) - np.asarray(self.origin)
        ky, kx, kxy = self.curvature
        out = (u[:, 0] * self.slope[0] + u[:, 1] * self.slope[1]
               + ky * u[:, 0] ** 2 + kx * u[:, 1] ** 2 + 2 * kxy * u[:, 0] * u[:, 1])
        return out + (self.residual if self.residual is not None else 0.0)

    def at(self, centres_mm: np.ndarray) -> np.ndarray:
        """The surface (fractional slice) at tile centres ``(T, 2)`` mm."""
        return self.z0 + self.shape_at(centres_mm)


def _summed(tiles: TileProfiles, shapes: np.ndarray, z_lo: int, z_hi: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Bone fraction and dip depth ``(P, Z')`` along surfaces of offsets ``shapes`` ``(P, T)``
    (slices) through each slice ``z_lo .. z_hi - 1``."""
    dz = tiles.spacing[0]
    half = max(2, int(round(SHOULDER_MM / dz)))
    a, b = max(0, z_lo - half), min(tiles.shape[0], z_hi + half)
    out_b, out_i = surface_sums(tiles, shapes, a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        peak = out_i.max(axis=1, keepdims=True) if out_i.size else 0
        frac = np.where(out_i > np.maximum(0.3 * peak, 1), out_b / np.maximum(out_i, 1), np.nan)
    depth = dip_depth(frac, half)
    return frac[:, z_lo - a : z_hi - a], depth[:, z_lo - a : z_hi - a]


def _best(frac: np.ndarray, depth: np.ndarray) -> tuple[int, int, float, float]:
    """Index ``(p, z)`` of the deepest dip, its depth and fraction."""
    d = np.where(np.isnan(depth), -np.inf, depth)
    p, z = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(p), int(z), float(d[p, z]), float(frac[p, z])


def search_planes(tiles: TileProfiles, *, max_tilt_deg: float = MAX_TILT_DEG,
                  n_best: int = 4) -> list[Surface]:
    """The planes along which the bone fraction dips deepest, best first, more than
    ``SHOULDER_MM`` apart, at most ``n_best``: slopes coarse (the plane within 0.15 mm
    across the tiled width), then fine (0.03 mm) around each."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    centres = tiles.centres_mm()
    used = tiles.usable().any(axis=0)
    if not used.any():
        return []
    origin = centres[used].mean(axis=0)
    width = float(np.ptp(centres[used], axis=0).max()) + TILE_MM
    half = max(2, int(round(SHOULDER_MM / dz)))
    coarse = _slope_grid(max_tilt_deg, width, dz, 0.15)
    u = centres - origin
    frac, depth = _summed(tiles, coarse @ u.T, 0, nz)
    best = np.nanmax(np.where(np.isnan(depth), -np.inf, depth), axis=0)
    seeds: list[int] = []
    for z in np.argsort(-best):
        if not np.isfinite(best[z]) or best[z] <= 0 or len(seeds) >= n_best:
            break
        if all(abs(int(z) - s) > half for s in seeds):
            seeds.append(int(z))
    out: list[Surface] = []
    fine_step = max(0.03 / max(width, 1e-9), 1e-3) / dz
    for z in seeds:
        p = int(np.nanargmax(np.where(np.isnan(depth[:, z]), -np.inf, depth[:, z])))
        k = int(math.ceil(0.15 / max(width, 1e-9) / dz / fine_step))
        grid = np.arange(-k, k + 1) * fine_step
        gy, gx = np.meshgrid(coarse[p, 0] + grid, coarse[p, 1] + grid, indexing="ij")
        fine = np.stack([gy.ravel(), gx.ravel()], axis=-1)
        lo, hi = max(0, z - half), min(nz, z + half + 1)
        f2, d2 = _summed(tiles, fine @ u.T, lo, hi)
        q, zz, dip, fr = _best(f2, d2)
        out.append(Surface(float(lo + zz), (float(fine[q, 0]), float(fine[q, 1])),
                           (0.0, 0.0, 0.0), (float(origin[0]), float(origin[1])), dip, fr))
    out.sort(key=lambda s_: -s_.dip)
    return out


#: Largest plate undulation (mm, half of peak to trough) the curvature search allows.
MAX_BULGE_MM = 0.2


def _about(tiles: TileProfiles, origin: tuple[float, float]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Tile centres (mm), the usable tiles, their offsets from ``origin`` and the radius of
    the usable tiles about it (at least one tile)."""
    centres = tiles.centres_mm()
    used = tiles.usable().any(axis=0)
    u = centres - np.asarray(origin)
    return centres, used, u, max(float(np.sqrt((u[used] ** 2).sum(axis=1)).max()), TILE_MM)


def bend(tiles: TileProfiles, plane: Surface, *, steps: int = 7) -> Surface:
    """The quadratic surface near ``plane`` along which the dip is deepest: curvatures on a
    grid of ``steps`` values each (up to :data:`MAX_BULGE_MM` at the edge of the tiled
    width), the slopes and ``z0`` re-searched around the plane's."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    centres, used, u, radius = _about(tiles, plane.origin)
    kmax = MAX_BULGE_MM / radius**2 / dz
    ks = np.linspace(-kmax, kmax, steps)
    slope_step = 0.03 / radius / dz
    sl = np.array([-1, 0, 1]) * slope_step
    combos = np.array(np.meshgrid(ks, ks, ks / 2, sl, sl, indexing="ij")).reshape(5, -1).T
    shapes = (combos[:, 0:1] * u[:, 0] ** 2 + combos[:, 1:2] * u[:, 1] ** 2
              + 2 * combos[:, 2:3] * u[:, 0] * u[:, 1]
              + (plane.slope[0] + combos[:, 3:4]) * u[:, 0]
              + (plane.slope[1] + combos[:, 4:5]) * u[:, 1])
    shapes -= shapes[:, used].mean(axis=1, keepdims=True)  # keep z0 the surface's mean
    half = max(2, int(round(SHOULDER_MM / dz)))
    z = int(round(plane.z0))
    lo, hi = max(0, z - half), min(nz, z + half + 1)
    frac, depth = _summed(tiles, shapes, lo, hi)
    q, zz, dip, fr = _best(frac, depth)
    if dip <= plane.dip:
        return plane
    c = combos[q]
    # express the surface about the origin: z(u) = z0' + shapes[q](u)
    base = shapes[q] - (c[0] * u[:, 0] ** 2 + c[1] * u[:, 1] ** 2 + 2 * c[2] * u[:, 0] * u[:, 1]
                        + (plane.slope[0] + c[3]) * u[:, 0] + (plane.slope[1] + c[4]) * u[:, 1])
    z0 = lo + zz + float(base[0])
    return Surface(z0, (plane.slope[0] + c[3], plane.slope[1] + c[4]), (c[0], c[1], c[2]),
                   plane.origin, dip, fr)


#: Largest amplitude (mm) of the W (or M) the wave search allows: the growth plate dips
#: under the two condyles and rises between and beside them.
MAX_WAVE_MM = 0.15


def wave(tiles: TileProfiles, surface: Surface) -> Surface:
    """``surface`` plus the W (or M) across the bone along which the dip is deepest:
    ``A cos(2 pi s)`` with ``s`` the distance along a direction (every 30°) over the tiled
    radius, ``|A|`` up to :data:`MAX_WAVE_MM`; stored as the surface's per-tile residual."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    centres, used, u, radius = _about(tiles, surface.origin)
    base = surface.shape_at(centres)
    amps = np.linspace(-MAX_WAVE_MM, MAX_WAVE_MM, 9) / dz
    angles = np.radians(np.arange(0, 180, 30))
    waves = [np.zeros(u.shape[0])]
    for phi in angles:
        s_ = (u[:, 0] * math.sin(phi) + u[:, 1] * math.cos(phi)) / radius
        waves += [a * np.cos(2 * math.pi * s_) for a in amps if a != 0]
    waves_arr = np.array(waves)
    waves_arr -= waves_arr[:, used].mean(axis=1, keepdims=True)
    shapes = base[None, :] + waves_arr
    half = max(2, int(round(SHOULDER_MM / dz)))
    z = int(round(surface.z0))
    lo, hi = max(0, z - half), min(nz, z + half + 1)
    frac, depth = _summed(tiles, shapes, lo, hi)
    q, zz, dip, fr = _best(frac, depth)
    if q == 0 or dip <= surface.dip:
        return surface
    residual = (surface.residual if surface.residual is not None else 0.0) + waves_arr[q]
    return Surface(lo + zz, surface.slope, surface.curvature, surface.origin, dip, fr, residual)


@dataclass(frozen=True)
class Sheet:
    """The plate's mid-surface and its flattened profile.

    Attributes
    ----------
    surface : Surface
        The mid-surface (with its per-tile residual after the local refinement).
    offsets : (S,) ndarray of int
        Distances from the surface (slices, towards higher indices) of ``profile``.
    profile : (S,) ndarray of float
        Bone fraction of the interior at each distance, all tiles together.
    tiles_used : (T,) ndarray of bool
        Tiles with an interior at the surface.
    """

    surface: Surface
    offsets: np.ndarray
    profile: np.ndarray
    tiles_used: np.ndarray


def flattened_profile(tiles: TileProfiles, surface: Surface, reach_mm: float = 0.5
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bone fraction against the distance from ``surface`` (slices), all tiles together;
    and which tiles had an interior on the surface."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    n = int(round(reach_mm / dz))
    offsets = np.arange(-n, n + 1)
    at = surface.at(tiles.centres_mm())
    on_plate = np.isfinite(at)
    base = np.rint(np.where(on_plate, at, -1e9)).astype(np.int64)
    use = tiles.usable()
    cols = np.arange(base.size)
    prof = np.full(offsets.size, np.nan)
    for j, s in enumerate(offsets):
        z = base + s
        inside = (z >= 0) & (z < nz)
        zz, tt = z[inside], cols[inside]
        u = use[zz, tt]
        i_sum = tiles.inner[zz, tt][u].sum()
        if i_sum > 0:
            prof[j] = tiles.bone[zz, tt][u].sum() / i_sum
    on = (base >= 0) & (base < nz)
    used = np.zeros(base.size, dtype=bool)
    used[on] = use[base[on], cols[on]]
    return offsets, prof, used


def grow(tiles: TileProfiles, surface: Surface, contrast: float) -> Surface:
    """Follow the plate tile by tile from where ``surface`` sits on it, so it may take any
    smooth shape (a W, a rim that rises) without a model, and never jumps to another dip.

    Seeds are the tiles with a dip of at least ``contrast`` within 2 slices of ``surface``;
    the plate then grows from them (:func:`grow_positions`). Tiles never reached (no dip
    continuous with the plate) are not on it (``residual`` NaN there, so
    :func:`flattened_profile` leaves them out).
    """
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    frac = tile_fraction(tiles, 1)
    half = max(2, int(round(SHOULDER_MM / dz)))
    depth = dip_depth(frac.T, half)  # (T, Z)
    base = surface.at(tiles.centres_mm())
    seeds: dict[int, tuple[float, float]] = {}
    for t in np.flatnonzero(np.isfinite(base)):
        lo, hi = max(0, int(round(base[t])) - 2), min(nz, int(round(base[t])) + 3)
        d = depth[t, lo:hi]
        if d.size and np.any(np.isfinite(d)) and np.nanmax(d) >= contrast:
            k = int(np.nanargmax(d))
            seeds[int(t)] = (float(d[k]), dip_centre(frac[lo:hi, t], k) + lo)
    pos = grow_positions(frac, depth, tiles.grid, seeds, 0.5 * contrast,
                         max(2, int(round(STEP_MM / dz))))
    grown = smooth_on_grid(pos, np.isfinite(pos).astype(float), tiles.grid, 1.0)
    residual = np.where(np.isfinite(pos), grown - surface.z0 - surface.shape_at(
        tiles.centres_mm()) + (surface.residual if surface.residual is not None else 0.0),
        np.nan)
    return Surface(surface.z0, surface.slope, surface.curvature, surface.origin, surface.dip,
                   surface.fraction, residual)


def grow_positions(frac: np.ndarray, depth: np.ndarray, grid: tuple[int, int],
                   seeds: dict[int, tuple[float, float]], min_dip: float, step: int
                   ) -> np.ndarray:
    """The plate's position in each tile it reaches, grown from ``seeds``.

    Parameters
    ----------
    frac : (Z, T) ndarray
        Bone fraction per slice and tile.
    depth : (T, Z) ndarray
        Its dip depth (:func:`dip_depth`).
    grid : (int, int)
        Tile grid.
    seeds : dict
        ``{tile: (dip depth, position)}`` of the tiles known to be on the plate.
    min_dip : float
        Shallowest dip a tile may join with.
    step : int
        Slices the plate may step between neighbouring tiles.

    Returns
    -------
    (T,) ndarray of float
        Position (slice, fractional) of the plate in each tile, NaN where not reached. A
        priority queue adds, deepest dip first, the neighbours of accepted tiles at the
        deepest dip within ``step`` slices of the mean of their accepted neighbours.
    """

    nz = frac.shape[0]
    gy, gx = grid
    pos = np.full(gy * gx, np.nan)
    heap = [(-dip, t, z) for t, (dip, z) in seeds.items()]
    heapq.heapify(heap)
    while heap:
        _, t, z = heapq.heappop(heap)
        if np.isfinite(pos[t]):
            continue
        pos[t] = z
        ty, tx = divmod(t, gx)
        for ny in range(max(0, ty - 1), min(gy, ty + 2)):
            for nx in range(max(0, tx - 1), min(gx, tx + 2)):
                n = ny * gx + nx
                if np.isfinite(pos[n]):
                    continue
                nb = pos.reshape(gy, gx)[max(0, ny - 1) : ny + 2, max(0, nx - 1) : nx + 2]
                pred = int(round(float(np.nanmean(nb))))
                lo, hi = max(0, pred - step), min(nz, pred + step + 1)
                d = depth[n, lo:hi]
                if d.size == 0 or np.all(np.isnan(d)):
                    continue
                k = int(np.nanargmax(d))
                if d[k] >= min_dip:
                    heapq.heappush(heap, (-float(d[k]), n, dip_centre(frac[lo:hi, n], k) + lo))
    return pos


def dip_centre(f: np.ndarray, k: int) -> float:
    """Centre of the dip of profile ``f`` around index ``k``: the centroid of the fraction
    below half-way between its bottom and the highest value within the run of values below
    that level."""
    lo, hi = k, k
    f_hi = float(np.nanmax(f))
    level = 0.5 * (float(f[k]) + f_hi)
    while lo - 1 >= 0 and np.isfinite(f[lo - 1]) and f[lo - 1] < level:
        lo -= 1
    while hi + 1 < f.size and np.isfinite(f[hi + 1]) and f[hi + 1] < level:
        hi += 1
    w = level - f[lo : hi + 1]
    return float((np.arange(lo, hi + 1) * w).sum() / w.sum()) if w.sum() > 0 else float(k)


def fit_sheet(tiles: TileProfiles, plane: Surface) -> Sheet:
    """The plate's mid-surface around ``plane`` (curvature search, then the per-tile
    refinement) and its flattened profile (module notes, steps 3 and 4)."""
    dz = tiles.spacing[0]
    surf = wave(tiles, bend(tiles, plane))
    offsets, prof, used = flattened_profile(tiles, surf)
    contrast = profile_dip(prof, dz)
    if np.isfinite(contrast) and contrast > 0:
        cand = grow(tiles, surf, contrast)
        o2, p2, u2 = flattened_profile(tiles, cand)
        if u2.any() and profile_dip(p2, dz) >= contrast:
            surf, offsets, prof, used = cand, o2, p2, u2
    return Sheet(surf, offsets, prof, used)


def profile_dip(profile: np.ndarray, dz: float) -> float:
    """Depth of the dip of a flattened profile at its centre (within 0.1 mm)."""
    half = max(2, int(round(SHOULDER_MM / dz)))
    depth = dip_depth(profile, half)
    c = profile.size // 2
    w = max(1, int(round(0.1 / dz)))
    d = depth[max(0, c - w): c + w + 1]
    return float(np.nanmax(d)) if np.any(np.isfinite(d)) else -np.inf


def profile_edges(offsets: np.ndarray, prof: np.ndarray, dz: float, sign: int
           ) -> tuple[float, float, float, float, float, float]:
    """From a flattened profile: the bottom's offset and fraction, the shoulders (distal,
    proximal) and the edge offsets (distal, proximal; ``sign`` +1 when proximal is towards
    higher slices), each edge half-way up to its shoulder."""
    c = prof.size // 2
    w = max(1, int(round(0.1 / dz)))
    lo, hi = max(0, c - w), min(prof.size, c + w + 1)
    k0 = lo + int(np.nanargmin(prof[lo:hi]))
    f0 = float(prof[k0])
    half = max(2, int(round(SHOULDER_MM / dz)))

    def side(direction: int) -> tuple[float, float]:
        seg = prof[k0 :: direction][: half + 1]
        shoulder = float(np.nanmax(seg)) if np.any(np.isfinite(seg)) else f0
        level = f0 + 0.5 * (shoulder - f0)
        for j in range(1, seg.size):
            if seg[j] >= level:
                a, b = seg[j - 1], seg[j]
                frac = (level - a) / (b - a) if b != a else 0.0
                return shoulder, float(offsets[k0] + direction * (j - 1 + frac))
        return shoulder, float(offsets[k0] + direction * (seg.size - 1))

    s_prox, e_prox = side(sign)
    s_dist, e_dist = side(-sign)
    return float(offsets[k0]), f0, s_dist, s_prox, e_dist, e_prox



def sheet_score(profile: np.ndarray, dz: float) -> float:
    """How plate-like a flattened profile is: ``(lower shoulder - bottom) x (higher shoulder
    - bottom)``, 0 when the bottom holds half the bone of the higher shoulder or more.

    A growth plate is a layer nearly free of bone (but for bridges) between the dense bone of
    the epiphysis (or the epiphyseal bone plate) and of the primary spongiosa: both factors
    large, the second especially. Dips between trabeculae of sparse (OVX) bone have low
    shoulders on both sides; dips inside the dense epiphysis keep much bone at their bottom.
    """
    offsets = np.arange(profile.size) - profile.size // 2
    _, f0, s_dist, s_prox, _, _ = profile_edges(offsets, profile, dz, 1)
    lo, hi = min(s_dist, s_prox), max(s_dist, s_prox)
    if f0 >= 0.5 * hi:
        return 0.0
    return max(0.0, lo - f0) * max(0.0, hi - f0)
