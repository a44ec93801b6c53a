"""Reconstruction settings that must agree between the phantoms and every scan a calibration
is applied to."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..io import Scan

if TYPE_CHECKING:
    from .model import Calibration

__all__ = [
    "CHECKED_SETTINGS",
    "check_settings",
    "scan_settings",
    "same_setting",
    "show_setting",
]




#: Reconstruction settings (keys of :meth:`ctmorph.io.SkyscanLog.settings`) that must agree
#: between phantom scans, and between the calibration and every scan it is applied to.
CHECKED_SETTINGS = (
    "scanner",
    "source_voltage_kv",
    "filter",
    "beam_hardening_correction_percent",
    "smoothing",
    "ring_artifact_correction",
    "voxel_size_um",
)
# Numeric tolerances of the comparison: (relative, absolute). Voxel sizes of one protocol differ
# in the last digits between scans (geometry refinement), kV are integers in practice.
_TOLERANCE = {"voxel_size_um": (0.02, 0.0), "source_voltage_kv": (0.0, 0.5)}

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _norm_text(value: Any) -> str:
    return "".join(str(value).split()).lower()


def same_setting(key: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float):
        rel, abs_ = _TOLERANCE.get(key, (1e-9, 1e-9))
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return _norm_text(a) == _norm_text(b)


def scan_settings(scan: Scan) -> dict[str, Any]:
    return scan.log.settings() if scan.log is not None else {}


def check_settings(calibration: Calibration, scan_settings: Mapping[str, Any] | None) -> list[str]:
    """Reconstruction settings in which a scan differs from the calibration phantoms.

    Parameters
    ----------
    calibration : Calibration
        The study's calibration.
    scan_settings : mapping or None
        :meth:`ctmorph.io.SkyscanLog.settings` of the scan (None or empty: no log).

    Returns
    -------
    list of str
        One ``"<key>: scan <value>, calibration <value>"`` per :data:`CHECKED_SETTINGS` key
        that differs (a setting stated on one side only counts as different); empty when the
        calibration applies. Voxel sizes within 2 % and kV within 0.5 kV count as equal; text
        is compared ignoring case and blanks.
    """
    scan_settings = scan_settings or {}
    out = []
    for key in CHECKED_SETTINGS:
        mine, theirs = scan_settings.get(key), calibration.settings.get(key)
        if not same_setting(key, mine, theirs):
            out.append(f"{key}: scan {show_setting(mine)}, calibration {show_setting(theirs)}")
    return out


def show_setting(value: Any) -> str:
    return "not stated" if value is None else repr(value)


