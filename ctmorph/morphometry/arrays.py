"""Input helpers every morphometry module shares: mask validation, bounding boxes, block
sizes. Imports nothing else of :mod:`ctmorph.morphometry`, so every measure and
:mod:`.zsource` can import it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, SegmentationError
from ..spacing import normalize_spacing

__all__ = [
    "as_mask",
    "bounding_box",
    "crop",
    "check_chunk_slices",
    "prepare_masks",
]


def as_mask(mask, name: str = "mask", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``mask`` as a 3-D boolean array (no copy when it already is one).

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool or integer
        Nonzero means inside. Floating-point arrays are refused (a grey image passed by mistake).
    name : str
        Argument name used in error messages.
    shape : tuple of int, optional
        Required shape (to check that a VOI matches its image).

    Raises
    ------
    ConfigError
        If the array is not 3-D, has a non-integer dtype, or the wrong shape.
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ConfigError(f"{name} must be a 3-D (Z, Y, X) array, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(
                f"{name} must be a boolean (or 0/1 integer) array, got dtype {arr.dtype}; "
                "threshold grey images first"
            )
        arr = arr != 0
    if shape is not None and arr.shape != tuple(shape):
        raise ConfigError(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """``(z0, z1, y0, y1, x0, x1)``: the smallest box (half-open) holding every True voxel of a
    non-empty 3-D mask."""
    box: list[int] = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        box += [int(idx[0]), int(idx[-1]) + 1]
    return tuple(box)  # type: ignore[return-value]


def crop(a: np.ndarray, box: tuple[int, int, int, int, int, int]) -> np.ndarray:
    """View of ``a`` inside ``box`` (as returned by :func:`bounding_box`)."""
    z0, z1, y0, y1, x0, x1 = box
    return a[z0:z1, y0:y1, x0:x1]


def check_chunk_slices(chunk_slices) -> int | None:
    """``chunk_slices`` as a positive int (None stays None); ConfigError otherwise."""
    if chunk_slices is None:
        return None
    if isinstance(chunk_slices, bool) or not isinstance(chunk_slices, (int, np.integer)) \
            or chunk_slices < 1:
        raise ConfigError(f"chunk_slices must be a positive integer, got {chunk_slices!r}")
    return int(chunk_slices)


def prepare_masks(
    bone: np.ndarray, voi: np.ndarray | None, spacing: float | Sequence[float]
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """Validate ``bone``/``voi`` (3-D masks of one shape, see :func:`as_mask`), refuse an
    empty VOI and normalise ``spacing``; shared by connectivity, anisotropy and SMI.

    Returns C-contiguous bool arrays (``voi`` stays ``None`` for the whole volume) and
    ``(dz, dy, dx)`` in mm.
    """
    sp = normalize_spacing(spacing, 3)
    bone = np.ascontiguousarray(as_mask(bone, "bone"))
    if min(bone.shape) < 1:
        raise ConfigError(f"bone is empty, got shape {bone.shape}")
    if voi is not None:
        voi = np.ascontiguousarray(as_mask(voi, "voi", bone.shape))
        if not voi.any():
            raise SegmentationError("the VOI is empty (no voxel selected)")
    return bone, voi, sp  # type: ignore[return-value]

