"""Tile profiles: the interior and bone pixels of each slice counted per square tile.

The growth-plate search (:mod:`.sheet`, :mod:`.plate`) works on these counts alone, so a scan
of any size is reduced, chunk by chunk, to a ``(Z, T)`` table of a few MB: each slice's
interior (the envelope without its outer :data:`TILE_MARGIN_MM`) is cut into square tiles of
:data:`TILE_MM`, and per slice and tile the interior pixels and the bone pixels inside it are
counted (:class:`TileProfiles`). Summing the counts over the tiles a surface meets in each
slice (:func:`surface_sums`, a numba kernel with a slow reference) gives the bone fraction
along that surface; :func:`dip_depth` measures how deep a profile dips between its shoulders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..._kernels.plate import plane_sums
from .envelope import EnvelopeMaps

__all__ = [
    "TILE_MM",
    "SHOULDER_MM",
    "TILE_MARGIN_MM",
    "RIM_MARGIN_MM",
    "MIN_TILE_FILL",
    "FULL_TILE_FILL",
    "GAP_MM",
    "TileProfiles",
    "surface_sums",
    "surface_sums_reference",
    "dip_depth",
    "tile_fraction",
    "smooth_on_grid",
]

#: Tile edge (mm): a few trabeculae wide, so a tile's profile along z still shows its own dip.
TILE_MM = 0.1
#: Window (mm) on either side of a dip in which its shoulders (the bone of the epiphysis and
#: of the primary spongiosa) are looked for.
SHOULDER_MM = 0.3
#: Depth (mm) below the periosteal surface from which a pixel is interior for the tiles the
#: plate is searched and followed in (the cortex near the plate left out).
TILE_MARGIN_MM = 0.15
#: The same for the rim: once found, the plate is followed out to the thin cortical shell
#: around it, where a dome's or W's rim is often its most proximal part.
RIM_MARGIN_MM = 0.05
#: Smallest share of a tile's pixels that must be interior for its profile to count.
MIN_TILE_FILL = 0.5
#: Share of a tile's pixels interior from which the tile is wholly inside the bone.
FULL_TILE_FILL = 0.9
#: Longest run of slices (mm) across which a tile wholly inside the bone on both sides is
#: carried where the envelope is lost: the growth plate reaches the periosteal surface, so
#: slices through it may have no closed cortical ring (:meth:`TileProfiles.bridge_gaps`).
GAP_MM = 0.4

@dataclass
class TileProfiles:
    """Interior and bone pixels per slice and tile, accumulated chunk by chunk.

    Attributes
    ----------
    shape : (int, int, int)
        ``(Z, Y, X)`` of the working frame.
    spacing : (float, float, float)
        Voxel size (mm).
    tile_px : int
        Tile edge in pixels (:data:`TILE_MM` rounded, at least 2).
    inner, bone : (Z, T) ndarray of uint16
        Per slice and tile (row-major over the ``(Y // tile_px, X // tile_px)`` grid): the
        interior pixels, and the bone pixels inside the interior.
    bone_all : (Z, T) ndarray of uint16
        All bone pixels of the tile (for :meth:`bridge_gaps`).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    tile_px: int = 0
    inner: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    bone: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    bone_all: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not self.tile_px:
            self.tile_px = max(2, int(round(TILE_MM / min(self.spacing[1:]))))
        nz = self.shape[0]
        n = self.grid[0] * self.grid[1]
        if self.tile_px > 255:
            raise ValueError(f"tiles of {self.tile_px} pixels overflow the uint16 counts")
        for name in ("inner", "bone", "bone_all"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros((nz, n), dtype=np.uint16))

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles along y and x."""
        return self.shape[1] // self.tile_px, self.shape[2] // self.tile_px

    def centres_mm(self) -> np.ndarray:
        """``(T, 2)`` tile centres ``(y, x)`` in mm."""
        gy, gx = self.grid
        t = self.tile_px
        yy = (np.arange(gy) * t + (t - 1) / 2) * self.spacing[1]
        xx = (np.arange(gx) * t + (t - 1) / 2) * self.spacing[2]
        return np.stack(np.meshgrid(yy, xx, indexing="ij"), axis=-1).reshape(-1, 2)

    def add(self, z0: int, bone: np.ndarray, interior: np.ndarray) -> None:
        """Count slices ``z0 .. z0 + len(bone) - 1``: ``interior`` pixels, and ``bone``
        pixels inside the interior, per tile."""
        gy, gx = self.grid
        t = self.tile_px
        k = bone.shape[0]
        inner = interior[:, : gy * t, : gx * t]
        bone = bone[:, : gy * t, : gx * t]
        for name, mask in (("inner", inner), ("bone", inner & bone), ("bone_all", bone)):
            getattr(self, name)[z0 : z0 + k] = (
                mask.reshape(k, gy, t, gx, t).sum(axis=(2, 4)).reshape(k, -1))

    def add_maps(self, z0: int, bone: np.ndarray, maps: EnvelopeMaps,
                 margin_mm: float = TILE_MARGIN_MM) -> None:
        """Count slices from ``z0`` given their envelope maps: the interior is the envelope
        without its outer ``margin_mm`` (the cortex near the plate, partial volume)."""
        interior = np.zeros(bone.shape, dtype=bool)
        interior[:, maps.crop[0], maps.crop[1]] = maps.depth > np.float32(margin_mm)
        self.add(z0, bone, interior)

    def usable(self) -> np.ndarray:
        """``(Z, T)`` bool: tiles whose interior fills at least half of the tile."""
        return self.inner >= MIN_TILE_FILL * self.tile_px**2

    def bridge_gaps(self, max_gap_mm: float = GAP_MM) -> int:
        """Carry the interior across slices where the envelope is lost; returns how many
        (slice, tile) counts were filled.

        The growth plate reaches the periosteal surface, so where it crosses a slice the
        cortical ring may be open and the slice's envelope lost or shrunk to a fragment. A tile
        wholly inside the bone (:data:`FULL_TILE_FILL`) in slices at most ``max_gap_mm`` apart
        on both sides of a run where it is not counts as wholly interior in that run, with all
        of its bone. Every slice is judged from its own counts, so the result does not depend
        on how the slices were added; filling again changes nothing.
        """
        nz = self.shape[0]
        full = self.inner >= FULL_TILE_FILL * self.tile_px**2
        z = np.arange(nz)[:, None]
        last = np.maximum.accumulate(np.where(full, z, -1), axis=0)  # last full at or before
        nxt = np.minimum.accumulate(np.where(full, z, nz)[::-1], axis=0)[::-1]  # first after
        n = int(round(max_gap_mm / self.spacing[0]))
        gap = ~full & (last >= 0) & (nxt < nz) & (nxt - last - 1 <= n)
        self.inner[gap] = self.tile_px**2
        self.bone[gap] = self.bone_all[gap]
        return int(np.count_nonzero(gap))


def surface_sums(tiles: TileProfiles, shapes: np.ndarray, z_lo: int = 0,
                 z_hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bone and interior pixels summed over the tiles on each surface through each slice.

    Parameters
    ----------
    tiles : TileProfiles
    shapes : (P, T) ndarray of float
        Offset (slices) of tile ``t`` on surface ``p`` from the slice the surface is
        "through" (rounded to whole slices).
    z_lo, z_hi : int
        The slices the surfaces go through (default all).

    Returns
    -------
    bone, inner : (P, z_hi - z_lo) ndarray of int64
        Sums of the tiles that are :meth:`TileProfiles.usable` where the surface meets them;
        a surface leaving the stack adds nothing there.
    """
    nz = tiles.shape[0]
    z_hi = nz if z_hi is None else z_hi
    off = np.rint(np.asarray(shapes, dtype=np.float64)).astype(np.int64)
    lo_off = int(off.min()) if off.size else 0
    hi_off = int(off.max()) if off.size else 0
    a, b = max(0, z_lo + lo_off), min(nz, z_hi + hi_off)
    out_b = np.zeros((off.shape[0], max(0, z_hi - z_lo)), dtype=np.int64)
    out_i = np.zeros_like(out_b)
    if b <= a:
        return out_b, out_i
    use = tiles.usable()[a:b]
    cols = np.flatnonzero(use.any(axis=0))  # tiles never usable here add nothing
    # (tile, slice): each tile's profile contiguous for the kernel
    bone = np.ascontiguousarray(np.where(use, tiles.bone[a:b], 0)[:, cols].T.astype(np.int32))
    inner = np.ascontiguousarray(np.where(use, tiles.inner[a:b], 0)[:, cols].T.astype(np.int32))
    plane_sums(bone, inner, np.ascontiguousarray(off[:, cols]), z_lo - a, out_b, out_i)
    return out_b, out_i


def surface_sums_reference(tiles: TileProfiles, shapes: np.ndarray, z_lo: int = 0,
                           z_hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`surface_sums` the slow, obvious way (the test oracle of the kernel)."""
    nz, nt = tiles.bone.shape
    z_hi = nz if z_hi is None else z_hi
    off = np.rint(np.asarray(shapes, dtype=np.float64)).astype(np.int64)
    use = tiles.usable()
    out_b = np.zeros((off.shape[0], z_hi - z_lo), dtype=np.int64)
    out_i = np.zeros_like(out_b)
    for p in range(off.shape[0]):
        for t in range(nt):
            for z0 in range(z_lo, z_hi):
                z = z0 + off[p, t]
                if 0 <= z < nz and use[z, t]:
                    out_b[p, z0 - z_lo] += tiles.bone[z, t]
                    out_i[p, z0 - z_lo] += tiles.inner[z, t]
    return out_b, out_i


def dip_depth(fraction: np.ndarray, half: int) -> np.ndarray:
    """Depth of the dip at each position of profiles ``(..., Z)``: the lower of the highest
    values within ``half`` positions on either side, minus the value (NaN where a side has
    no value)."""
    f = np.asarray(fraction, dtype=np.float64)
    nz = f.shape[-1]
    pad = np.full(f.shape[:-1] + (half,), -np.inf)
    g = np.concatenate([pad, np.where(np.isnan(f), -np.inf, f), pad], axis=-1)
    win = np.lib.stride_tricks.sliding_window_view(g, half, axis=-1)
    left = win[..., :nz, :].max(axis=-1)  # f[z - half .. z - 1]
    right = win[..., half + 1 : half + 1 + nz, :].max(axis=-1)  # f[z + 1 .. z + half]
    shoulder = np.minimum(left, right)
    out = shoulder - f
    out[~np.isfinite(shoulder) | np.isnan(f)] = np.nan
    return out


def tile_fraction(tiles: TileProfiles, neighbourhood: int) -> np.ndarray:
    """``(Z, T)`` bone fraction of each tile with its neighbours within ``neighbourhood``
    tiles (NaN where the interior is too small)."""
    gy, gx = tiles.grid
    nz = tiles.shape[0]
    use = tiles.usable()
    b = np.where(use, tiles.bone, 0).reshape(nz, gy, gx).astype(np.float64)
    i = np.where(use, tiles.inner, 0).reshape(nz, gy, gx).astype(np.float64)
    size = (1, 2 * neighbourhood + 1, 2 * neighbourhood + 1)
    b = ndimage.uniform_filter(b, size=size, mode="constant")
    i = ndimage.uniform_filter(i, size=size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(i >= MIN_TILE_FILL * tiles.tile_px**2, b / np.maximum(i, 1e-9), np.nan)
    return f.reshape(nz, -1)


def smooth_on_grid(values: np.ndarray, weights: np.ndarray, grid: tuple[int, int],
                    sigma_tiles: float) -> np.ndarray:
    """Normalised Gaussian smoothing of tile values with weights (NaN where no weight)."""
    v = np.nan_to_num(values).reshape(grid)
    w = np.where(np.isfinite(values), weights, 0.0).reshape(grid)
    num = ndimage.gaussian_filter(v * w, sigma_tiles, mode="constant")
    den = ndimage.gaussian_filter(w, sigma_tiles, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-6, num / den, np.nan)
    return out.ravel()
