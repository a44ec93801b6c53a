"""grey ↔ attenuation ↔ density: each scan's grey through its own CS window, attenuation through
the study's phantom line (see :mod:`ctmorph.calibration`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from ..errors import CalibrationError, ConfigError
from ..io import Scan
from .model import Calibration

__all__ = [
    "scan_window",
    "grey_to_attenuation",
    "attenuation_to_grey",
    "grey_to_density",
    "density_to_grey",
    "check_window",
    "check_gmax",
]

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------
# grey <-> attenuation <-> density
# ---------------------------------------------------------------------------------------------


def check_window(scan_window: Sequence[float] | None) -> tuple[float, float]:
    if scan_window is None:
        raise CalibrationError(
            "no CS window: the scan's log lacks 'Minimum/Maximum for CS to Image Conversion', "
            "so its grey values cannot be converted to attenuation or density"
        )
    try:
        lo, hi = (float(v) for v in scan_window)
    except (TypeError, ValueError):
        raise CalibrationError(f"CS window must be (min, max), got {scan_window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise CalibrationError(f"CS window must be finite with min < max, got {scan_window!r}")
    return lo, hi


def check_gmax(gmax: int) -> int:
    if isinstance(gmax, bool) or not isinstance(gmax, int | np.integer) or gmax <= 0:
        raise ConfigError(f"gmax must be the full-scale grey value (255, 65535), got {gmax!r}")
    return int(gmax)


def scan_window(scan: Scan) -> tuple[float, float]:
    """The scan's CS window, or a :class:`CalibrationError` naming the folder.

    Parameters
    ----------
    scan : Scan
        An opened reconstruction folder.

    Returns
    -------
    (float, float)
        ``(cs_min, cs_max)``: attenuation (NRecon CS units) at grey 0 and at ``scan.gmax``.
    """
    if scan.cs_window is None:
        if scan.log is not None:
            why = "its log has no"
        else:
            reason = f" ({scan.no_log_reason})" if scan.no_log_reason else ""
            why = f"has no reconstruction log{reason}, so no"
        raise CalibrationError(
            f"{scan.path}: {why} 'Minimum/Maximum for CS to Image Conversion' window; cannot "
            "convert its grey values to density"
        )
    try:
        return check_window(scan.cs_window)
    except CalibrationError as exc:
        raise CalibrationError(f"{scan.path}: {exc}") from None


def grey_to_attenuation(
    grey: float | np.ndarray, scan_window: Sequence[float], gmax: int
) -> float | np.ndarray:
    """Grey value -> attenuation through a scan's CS window.

    Parameters
    ----------
    grey : float or ndarray
        Grey values of the scan's slices (0..gmax; fractional values such as means are fine).
    scan_window : (float, float)
        The scan's ``(cs_min, cs_max)`` from its log, NRecon CS units.
    gmax : int
        Full-scale grey value of the slices: 255 (8-bit) or 65535 (16-bit).

    Returns
    -------
    float or ndarray of float64
        ``cs_min + grey / gmax * (cs_max - cs_min)``, NRecon CS units.

    Examples
    --------
    >>> grey_to_attenuation(255, (0.0, 0.1), 255)
    0.1
    >>> grey_to_attenuation(32768, (-0.01, 0.09), 65535)  # doctest: +ELLIPSIS
    0.0400007...
    """
    lo, hi = check_window(scan_window)
    gmax = check_gmax(gmax)
    att = lo + np.asarray(grey, dtype=np.float64) * ((hi - lo) / gmax)
    return float(att) if att.ndim == 0 else att


def attenuation_to_grey(
    attenuation: float | np.ndarray, scan_window: Sequence[float], gmax: int
) -> float | np.ndarray:
    """Attenuation -> (fractional) grey value of a scan; inverse of :func:`grey_to_attenuation`.

    Values outside the window give grey values outside ``0..gmax``; nothing is clipped.
    """
    lo, hi = check_window(scan_window)
    gmax = check_gmax(gmax)
    grey = (np.asarray(attenuation, dtype=np.float64) - lo) * (gmax / (hi - lo))
    return float(grey) if grey.ndim == 0 else grey


def grey_to_density(
    grey: float | np.ndarray, calibration: Calibration, scan_window: Sequence[float], gmax: int
) -> float | np.ndarray:
    """Grey value of a scan -> density, g/cm³ HA.

    Parameters
    ----------
    grey : float or ndarray
        Grey values of the scan.
    calibration : Calibration
        The phantom line.
    scan_window : (float, float)
        The scan's own CS window (not the phantoms').
    gmax : int
        255 or 65535.

    Returns
    -------
    float or ndarray of float64
        g/cm³ HA.
    """
    return calibration.density(grey_to_attenuation(grey, scan_window, gmax))


def density_to_grey(
    density: float, calibration: Calibration, scan_window: Sequence[float], gmax: int
) -> float:
    """Density (g/cm³ HA) -> the grey value it has in one scan; for ``--threshold-density``.

    Parameters
    ----------
    density : float
        g/cm³ HA.
    calibration : Calibration
        The phantom line.
    scan_window : (float, float)
        The scan's own CS window, NRecon CS units.
    gmax : int
        255 or 65535.

    Returns
    -------
    float
        Fractional grey value; segment bone as ``grey > value``. A value outside ``0..gmax``
        is returned as is (with a warning): nothing or everything of the scan is above it.
    """
    density = float(density)
    if not math.isfinite(density):
        raise ConfigError(f"density threshold must be a finite number of g/cm³, got {density!r}")
    grey = float(attenuation_to_grey(calibration.attenuation(density), scan_window, gmax))
    if not 0.0 <= grey <= gmax:
        logger.warning(
            "density %g g/cm³ HA is grey %.1f, outside this scan's grey range 0..%d (CS window %s)",
            density,
            grey,
            gmax,
            tuple(scan_window),
        )
    return grey


