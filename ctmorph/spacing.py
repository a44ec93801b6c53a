"""The one spacing convention: ``spacing=(dz, dy, dx)`` in mm, in array-axis order."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import ConfigError

__all__ = ["normalize_spacing"]


def normalize_spacing(spacing: float | Sequence[float], ndim: int = 3) -> tuple[float, ...]:
    """Return spacing as a tuple of ``ndim`` positive finite floats.

    Parameters
    ----------
    spacing : float or sequence of float
        Voxel size per axis in mm, in array-axis order ``(dz, dy, dx)``; a scalar means
        isotropic voxels.
    ndim : int
        Number of array dimensions.

    Returns
    -------
    tuple of float
        ``ndim`` voxel sizes in mm.

    Raises
    ------
    ConfigError
        If the value is not one positive finite number or ``ndim`` of them.
    """
    if isinstance(spacing, int | float):
        values = (float(spacing),) * ndim
    else:
        try:
            values = tuple(float(s) for s in spacing)
        except (TypeError, ValueError):
            raise ConfigError(
                f"spacing must be a number or {ndim} numbers (mm), got {spacing!r}"
            ) from None
    if len(values) != ndim:
        raise ConfigError(f"spacing must have {ndim} values (dz, dy, dx) in mm, got {spacing!r}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"spacing values must be positive and finite (mm), got {spacing!r}")
    return values
