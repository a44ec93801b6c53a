"""Shared helpers of the femur analysis: argument checks and in-plane (per-slice) distance
and labelling, the operations every step works with."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage

from ..._kernels.edt import squared_edt_inplane
from ...errors import ConfigError

__all__ = ["DistalEnd", "as_bone", "length_mm", "check_distal_end", "bbox_yx", "inplane_sq_edt",
           "label_inplane"]

DistalEnd = Literal["first", "last"]



def as_bone(bone: np.ndarray) -> np.ndarray:
    arr = np.asarray(bone)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ConfigError(f"bone must be a non-empty (Z, Y, X) array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    raise ConfigError(f"bone must be a boolean (Z, Y, X) array, got dtype {arr.dtype}")


def length_mm(name: str, value: object, what: str, *, allow_zero: bool) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        x = float("nan")
    if not (math.isfinite(x) and (x >= 0 if allow_zero else x > 0)):
        raise ConfigError(f"{name} must be {what} (mm), got {value!r}")
    return x


def check_distal_end(distal_end: str, *, allow_auto: bool) -> str:
    allowed = ("auto", "first", "last") if allow_auto else ("first", "last")
    if distal_end not in allowed:
        raise ConfigError(f"distal_end must be one of {', '.join(allowed)}, got {distal_end!r}")
    return distal_end


def bbox_yx(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """In-plane bounding box of ``mask`` over all slices, grown by ``pad`` pixels."""
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    ny, nx = mask.shape[1:]
    return (
        slice(max(0, rows[0] - pad), min(ny, rows[-1] + pad + 1)),
        slice(max(0, cols[0] - pad), min(nx, cols[-1] + pad + 1)),
    )


def inplane_sq_edt(phase: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Squared 2-D Euclidean distance (mm²) from each phase pixel to the nearest background
    pixel of the same slice; 0 on background, ``inf`` in slices without background.

    The x and y passes of the 3-D kernel (:func:`~ctmorph._kernels.edt.squared_edt_inplane`).
    """
    ph = np.ascontiguousarray(phase, dtype=np.uint8)
    out = np.empty(ph.shape, dtype=np.float32)
    w2 = np.array([0.0, spacing[1] ** 2, spacing[2] ** 2], dtype=np.float64)
    squared_edt_inplane(ph, w2, out)
    return out


def label_inplane(mask: np.ndarray, *, full: bool = True) -> tuple[np.ndarray, int, np.ndarray]:
    """8-connected (``full``) or 4-connected components within each slice, never across
    slices.

    Returns the labels, their number and, per slice, the highest label used so far (labels
    are numbered in raster order, so the labels of slice ``z`` are
    ``last[z-1] + 1 .. last[z]``).
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True if full else ndimage.generate_binary_structure(2, 1)
    lab, n = ndimage.label(mask, structure=structure)
    last = np.maximum.accumulate(lab.reshape(lab.shape[0], -1).max(axis=1))
    return lab, n, last
