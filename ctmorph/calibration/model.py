"""The calibration record: rod measurements, the fitted line, JSON in and out, densities as
typed."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._atomic import atomic_write_text
from ..errors import CalibrationError

__all__ = [
    "Calibration",
    "RodMeasurement",
    "save_calibration",
    "load_calibration",
    "parse_densities",
]

logger = logging.getLogger(__name__)

StrPath = str | PathLike[str]


_FORMAT = "ctmorph.calibration"
_FORMAT_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Calibration objects
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RodMeasurement:
    """One HA rod found in a phantom scan.

    Attributes
    ----------
    folder : str
        The phantom reconstruction folder.
    scan : str
        Its scan name.
    density_g_cm3 : float or None
        Nominal HA density, g/cm³ (None until assigned by :func:`calibrate`).
    mean_attenuation, sd_attenuation : float
        Mean and SD over the rod core, NRecon CS units.
    mean_grey : float
        Mean grey value over the core, in the folder's own grey scale.
    n_voxels : int
        Core voxels averaged.
    n_slices : int
        Slices the core spans (rod end caps and their partial-volume zone excluded).
    first_section, last_section : int
        Section numbers of the first and last core slice.
    centre_yx_mm : (float, float)
        Rod centre in the slice, mm from the top-left corner.
    diameter_mm, core_diameter_mm : float
        Equivalent diameters (from areas) of the rod and of its measured core, mm.
    cs_window : (float, float)
        The folder's CS window.
    gmax : int
        The folder's full-scale grey value.
    threshold_attenuation : float
        Attenuation that separated the rod from its surroundings.
    qc_picture : str or None
        PNG of the rod with its outline and measured core.
    """

    folder: str
    scan: str
    density_g_cm3: float | None
    mean_attenuation: float
    sd_attenuation: float
    mean_grey: float
    n_voxels: int
    n_slices: int
    first_section: int
    last_section: int
    centre_yx_mm: tuple[float, float]
    diameter_mm: float
    core_diameter_mm: float
    cs_window: tuple[float, float]
    gmax: int
    threshold_attenuation: float
    qc_picture: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return {
            "folder": self.folder,
            "scan": self.scan,
            "density_g_cm3": self.density_g_cm3,
            "mean_attenuation": self.mean_attenuation,
            "sd_attenuation": self.sd_attenuation,
            "mean_grey": self.mean_grey,
            "n_voxels": self.n_voxels,
            "n_slices": self.n_slices,
            "first_section": self.first_section,
            "last_section": self.last_section,
            "centre_yx_mm": list(self.centre_yx_mm),
            "diameter_mm": self.diameter_mm,
            "core_diameter_mm": self.core_diameter_mm,
            "cs_window": list(self.cs_window),
            "gmax": self.gmax,
            "threshold_attenuation": self.threshold_attenuation,
            "qc_picture": self.qc_picture,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RodMeasurement:
        """Inverse of :meth:`to_dict`."""
        density = data.get("density_g_cm3")
        return cls(
            folder=str(data["folder"]),
            scan=str(data["scan"]),
            density_g_cm3=None if density is None else float(density),
            mean_attenuation=float(data["mean_attenuation"]),
            sd_attenuation=float(data["sd_attenuation"]),
            mean_grey=float(data["mean_grey"]),
            n_voxels=int(data["n_voxels"]),
            n_slices=int(data["n_slices"]),
            first_section=int(data["first_section"]),
            last_section=int(data["last_section"]),
            centre_yx_mm=tuple(float(v) for v in data["centre_yx_mm"]),  # type: ignore[arg-type]
            diameter_mm=float(data["diameter_mm"]),
            core_diameter_mm=float(data["core_diameter_mm"]),
            cs_window=tuple(float(v) for v in data["cs_window"]),  # type: ignore[arg-type]
            gmax=int(data["gmax"]),
            threshold_attenuation=float(data["threshold_attenuation"]),
            qc_picture=data.get("qc_picture"),
        )


@dataclass(frozen=True)
class Calibration:
    """The attenuation -> density line of a study, with what it was measured on.

    Attributes
    ----------
    slope : float
        g/cm³ HA per attenuation unit (NRecon CS units); positive.
    intercept : float
        g/cm³ HA at attenuation 0.
    r_squared : float
        Coefficient of determination of the fit (1 for two rods).
    rods : tuple of RodMeasurement
        The rods, in order of increasing density.
    settings : dict
        Reconstruction settings of the phantom scans (:meth:`ctmorph.io.SkyscanLog.settings`
        without the per-scan CS window); the :data:`CHECKED_SETTINGS` keys agree between them.
    parameters : dict
        Rod-detection parameters used.
    software : str
        ctmorph version that made the fit.
    source : str or None
        File the calibration was loaded from (not saved).
    """

    slope: float
    intercept: float
    r_squared: float
    rods: tuple[RodMeasurement, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    software: str = __version__
    source: str | None = None

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        for name in ("slope", "intercept"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise CalibrationError(f"{where}calibration {name} must be finite, got {value!r}")
        if not self.slope > 0:
            raise CalibrationError(
                f"{where}calibration slope must be positive (density rises with attenuation), "
                f"got {self.slope!r}"
            )

    def density(self, attenuation: float | np.ndarray) -> float | np.ndarray:
        """Attenuation (NRecon CS units) -> density, g/cm³ HA."""
        out = self.slope * np.asarray(attenuation, dtype=np.float64) + self.intercept
        return float(out) if out.ndim == 0 else out

    def attenuation(self, density: float | np.ndarray) -> float | np.ndarray:
        """Density (g/cm³ HA) -> attenuation, NRecon CS units."""
        out = (np.asarray(density, dtype=np.float64) - self.intercept) / self.slope
        return float(out) if out.ndim == 0 else out

    def summary(self) -> str:
        """One line for logs and the methods paragraph."""
        rods = ", ".join(f"{r.density_g_cm3:g}" for r in self.rods if r.density_g_cm3 is not None)
        return (
            f"density [g/cm³ HA] = {self.slope:.6g} × attenuation {self.intercept:+.6g} "
            f"(R² = {self.r_squared:.4f}; HA rods {rods or '?'} g/cm³)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (the calibration file's content)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "model": "density_g_cm3_HA = slope * attenuation + intercept",
            "attenuation_unit": "NRecon CS units (as the log's CS to Image Conversion window)",
            "slope": self.slope,
            "intercept": self.intercept,
            "r_squared": self.r_squared,
            "rods": [r.to_dict() for r in self.rods],
            "settings": dict(self.settings),
            "parameters": dict(self.parameters),
            "software": self.software,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Calibration:
        """Inverse of :meth:`to_dict`; :class:`CalibrationError` naming ``source`` if invalid."""
        where = source or "<calibration>"
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise CalibrationError(f"{where}: not a ctmorph calibration file")
        version = data.get("format_version")
        if version != _FORMAT_VERSION:
            raise CalibrationError(
                f"{where}: calibration format version {version!r} is not supported "
                f"(this ctmorph reads version {_FORMAT_VERSION})"
            )
        try:
            rods = tuple(RodMeasurement.from_dict(r) for r in data.get("rods", []))
            return cls(
                slope=float(data["slope"]),
                intercept=float(data["intercept"]),
                r_squared=float(data["r_squared"]),
                rods=rods,
                settings=dict(data.get("settings", {})),
                parameters=dict(data.get("parameters", {})),
                software=str(data.get("software", "")),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where}: malformed calibration file ({exc!r})") from None


def save_calibration(calibration: Calibration, path: StrPath) -> Path:
    """Write ``calibration`` as JSON, atomically (a reader never sees a half-written file).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    text = json.dumps(calibration.to_dict(), indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(path, text)
    logger.info("wrote calibration %s", path)
    return path


def load_calibration(path: StrPath) -> Calibration:
    """Read a calibration JSON written by :func:`save_calibration`.

    Raises
    ------
    CalibrationError
        If the file is missing, not JSON, or not a valid calibration (message names the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read calibration ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: calibration file is not valid JSON ({exc})") from None
    return Calibration.from_dict(data, source=str(path))


def parse_densities(
    text: str | Iterable[float], *, folders: int | None = None
) -> tuple[float, ...]:
    """``"0.25,0.75"`` (or numbers) -> ``(0.25, 0.75)``, g/cm³ HA.

    Parameters
    ----------
    text : str or iterable of float
        Densities separated by commas, or the numbers.
    folders : int, optional
        The number of phantom folders the densities are for: each holds at least one rod, so
        it needs at least one density.

    Returns
    -------
    tuple of float

    Raises
    ------
    CalibrationError
        If a value is not a finite number >= 0, there are fewer densities than ``folders``
        (``2 phantom folders but 1 density given (--densities 0.25)``), or fewer than two.
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    values = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise CalibrationError(
                f"densities must be numbers in g/cm³ HA separated by commas, got {item!r}"
            ) from None
        if not (math.isfinite(value) and value >= 0):
            raise CalibrationError(f"densities must be finite and >= 0 g/cm³ HA, got {item!r}")
        values.append(value)
    if folders is not None and len(values) < folders:
        given = ",".join(f"{v:g}" for v in values)
        raise CalibrationError(
            f"{folders} phantom folder{'s' if folders != 1 else ''} but {len(values)} "
            f"densit{'y' if len(values) == 1 else 'ies'} given (--densities {given})"
        )
    if len(values) < 2:
        raise CalibrationError(
            f"a calibration line needs at least two rod densities, got {len(values)}"
        )
    return tuple(values)


