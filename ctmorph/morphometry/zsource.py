"""A segmented slab read in z-blocks: what the bounded-memory morphometry works on.

The ``*_chunked`` functions of :mod:`ctmorph.morphometry` take a :class:`ZSource` instead of
whole arrays and read it a few slices at a time, so a VOI larger than memory can be measured.
Each returns what its whole-array counterpart returns for ``(bone, voi, marrow_space)`` =
the source's arrays: integer counts are identical, floating-point sums agree to rounding
(the order of summation differs).

:class:`ArraySource` wraps in-memory arrays (tests, small VOIs); the pipeline's own source
keeps the slab packed in memory or on disk.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from ..errors import ConfigError, SegmentationError
from .arrays import as_mask, bounding_box

__all__ = ["ArraySource", "Block", "ZSource", "block_ranges", "chunk_slices_for", "read_phase"]

#: Voxels per block read by the chunked functions when the caller gives no chunk size.
DEFAULT_BLOCK_VOXELS = 8_000_000


class Block(NamedTuple):
    """Slices ``[z0, z1)`` of a source: new C-contiguous bool arrays of shape
    ``(z1 - z0, Y, X)``. ``marrow_space`` is where marrow can be (all True when the source
    has none: marrow everywhere outside bone)."""

    bone: np.ndarray
    voi: np.ndarray
    marrow_space: np.ndarray


class ZSource(Protocol):
    """A (Z, Y, X) segmented slab readable slice range by slice range."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` in voxels."""
        ...

    def read(self, z0: int, z1: int) -> Block:
        """Bone, VOI and marrow space of slices ``[z0, z1)``, ``0 <= z0 <= z1 <= Z``."""
        ...

    def voi_box(self) -> tuple[int, int, int, int, int, int]:
        """Bounding box ``(z0, z1, y0, y1, x0, x1)`` (exclusive ends) of the VOI; raises
        :class:`~ctmorph.errors.SegmentationError` when the VOI is empty."""
        ...


class ArraySource:
    """A :class:`ZSource` over in-memory arrays.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
    voi : (Z, Y, X) ndarray of bool, optional
        Default: the whole volume.
    marrow_space : (Z, Y, X) ndarray of bool, optional
        Default: everywhere.
    grey : (Z, Y, X) ndarray, optional
        Raw grey values, for :meth:`read_grey` (density).
    """

    def __init__(self, bone, voi=None, marrow_space=None, grey=None) -> None:
        self.bone = as_mask(bone, "bone")
        shp = self.bone.shape
        self.voi = None if voi is None else as_mask(voi, "voi", shp)
        self.marrow_space = (None if marrow_space is None
                             else as_mask(marrow_space, "marrow_space", shp))
        self.grey = None if grey is None else np.asarray(grey)
        if self.grey is not None and self.grey.shape != shp:
            raise ConfigError(f"grey {self.grey.shape} and bone {shp} must have one shape")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.bone.shape)  # type: ignore[return-value]

    def read(self, z0: int, z1: int) -> Block:
        def part(a: np.ndarray | None) -> np.ndarray:
            if a is None:
                return np.ones((z1 - z0, *self.shape[1:]), dtype=bool)
            return np.ascontiguousarray(a[z0:z1]).copy()

        return Block(part(self.bone), part(self.voi), part(self.marrow_space))

    def read_phase(self, z0: int, z1: int, kind: str) -> np.ndarray:
        """One mask of slices ``[z0, z1)`` (see :func:`read_phase`) without building the
        others (no all-True VOI or marrow space when there is none)."""
        bone = self.bone[z0:z1]
        if kind == "bone":
            return bone.copy()
        if kind == "voi":
            if self.voi is None:
                return np.ones(bone.shape, dtype=bool)
            return self.voi[z0:z1].copy()
        if kind == "marrow":
            return ~bone if self.marrow_space is None else self.marrow_space[z0:z1] & ~bone
        if kind == "space":
            if self.marrow_space is None:
                return np.ones(bone.shape, dtype=bool)
            return self.marrow_space[z0:z1] | bone
        raise ValueError(f"unknown phase {kind!r}; expected one of {PHASES}")

    def read_grey(self, z0: int, z1: int) -> np.ndarray:
        """Raw grey values of slices ``[z0, z1)`` (a source made with ``grey``)."""
        if self.grey is None:
            raise ValueError("this source holds no grey values")
        return self.grey[z0:z1]

    def voi_box(self) -> tuple[int, int, int, int, int, int]:
        if self.voi is None:
            nz, ny, nx = self.shape
            if nz * ny * nx == 0:
                raise SegmentationError("the VOI is empty (no voxel selected)")
            return (0, nz, 0, ny, 0, nx)
        if not self.voi.any():
            raise SegmentationError("the VOI is empty (no voxel selected)")
        return bounding_box(self.voi)


#: What :func:`read_phase` can return.
PHASES = ("bone", "voi", "marrow", "space")


def read_phase(src: ZSource, z0: int, z1: int, kind: str) -> np.ndarray:
    """One mask of slices ``[z0, z1)`` of ``src`` as a new C-contiguous bool array:
    ``"bone"``, ``"voi"``, ``"marrow"`` (marrow space and not bone) or ``"space"`` (marrow
    space or bone). Uses the source's own ``read_phase`` when it has one (which builds just
    that mask), else :meth:`ZSource.read`."""
    own = getattr(src, "read_phase", None)
    if own is not None:
        return own(z0, z1, kind)
    blk = src.read(z0, z1)
    if kind == "bone":
        return blk.bone
    if kind == "voi":
        return blk.voi
    if kind == "marrow":
        return blk.marrow_space & ~blk.bone
    if kind == "space":
        return blk.marrow_space | blk.bone
    raise ValueError(f"unknown phase {kind!r}; expected one of {PHASES}")


def chunk_slices_for(shape: tuple[int, ...], voxels: int = DEFAULT_BLOCK_VOXELS) -> int:
    """Slices per block so one block holds about ``voxels`` voxels (at least 1)."""
    per_slice = max(1, int(np.prod(shape[1:])))
    return max(1, int(voxels) // per_slice)


def block_ranges(z0: int, z1: int, chunk_slices: int) -> list[tuple[int, int]]:
    """``[z0, z1)`` cut into consecutive ranges of at most ``chunk_slices`` slices."""
    step = max(1, int(chunk_slices))
    return [(s, min(z1, s + step)) for s in range(z0, z1, step)]
