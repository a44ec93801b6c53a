"""Density calibration: grey ↔ attenuation ↔ g/cm³ HA, the HA-rod phantom fit, BMD and TMD.

Bruker SkyScan labs scan hydroxyapatite (HA) rods of known density (typically 0.25 and
0.75 g/cm³ HA) with the same acquisition and reconstruction settings as the bones, and use
them to turn the reconstructed attenuation into mineral density (Bouxsein et al. 2010).

Two linear steps, kept apart on purpose:

1. **grey -> attenuation**, per scan, through the scan's own log window ``Minimum/Maximum for
   CS to Image Conversion`` = ``(cs_min, cs_max)``: ``att = cs_min + grey / gmax * (cs_max -
   cs_min)``, ``gmax`` = 255 (8-bit) or 65535 (16-bit). NRecon chooses the window per
   reconstruction, so the same grey value means different attenuations in different scans.
2. **attenuation -> density**, one line for the study, fitted on the phantom rods:
   ``density = slope * att + intercept`` (g/cm³ HA).

The fit is therefore made on attenuation, never on raw grey, and phantoms and bones may have
been reconstructed with different windows and bit depths.

Units. "Attenuation" here is the reconstructed linear attenuation coefficient in NRecon's CS
units, i.e. the units of the window values written in the log (CT-Analyser shows the same
numbers as "attenuation coefficient"). ctmorph never converts that unit: calibration and
samples come from the same NRecon, so it cancels. Because those values depend on the voxel size
as well as on kV, filter, beam-hardening correction, smoothing and ring correction, a calibration
only applies to scans with the same settings (:data:`CHECKED_SETTINGS`, :func:`check_settings`).

Round-ROI reconstructions (``ON_ROUND``): exact zeros are "no data" and never enter a mean.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from . import __version__
from ._atomic import atomic_path, atomic_write_text
from .errors import CalibrationError, ConfigError
from .io import Scan, read_scan

__all__ = [
    "CHECKED_SETTINGS",
    "Calibration",
    "RodMeasurement",
    "calibrate",
    "find_rods",
    "check_settings",
    "density_metrics",
    "density_metrics_chunked",
    "grey_to_attenuation",
    "attenuation_to_grey",
    "grey_to_density",
    "density_to_grey",
    "scan_window",
    "parse_densities",
    "save_calibration",
    "load_calibration",
]

logger = logging.getLogger(__name__)

StrPath = str | PathLike[str]

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
_FORMAT = "ctmorph.calibration"
_FORMAT_VERSION = 1
# Rod detection.
_HIST_SLICES = 48  # slices sampled for the threshold and the rod footprints
_FOOTPRINT_FRACTION = 0.5  # a rod is bright in at least this fraction of the sampled slices
_BRIGHT_FRACTION = 0.2  # threshold: background + this fraction of (bright level - background)
_NOISE_SIGMAS = 5.0  # ... but at least this many background noise SDs above the background
_MIN_FILL = 0.9  # area / hole-filled area: below, the object is a tube wall, not a rod
_MIN_SOLIDITY = 0.85  # area / convex-hull area: below, touching rods or not a cylinder
_FULL_SECTION = 0.9  # a slice shows the whole rod when its area >= this x the median area
_MIN_CORE_VOXELS = 30
_MIN_INNER_BACKGROUND = 0.1  # rods inside an object need a medium filling >= 10 % of it


# ---------------------------------------------------------------------------------------------
# grey <-> attenuation <-> density
# ---------------------------------------------------------------------------------------------


def _check_window(scan_window: Sequence[float] | None) -> tuple[float, float]:
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


def _check_gmax(gmax: int) -> int:
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
        return _check_window(scan.cs_window)
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
    lo, hi = _check_window(scan_window)
    gmax = _check_gmax(gmax)
    att = lo + np.asarray(grey, dtype=np.float64) * ((hi - lo) / gmax)
    return float(att) if att.ndim == 0 else att


def attenuation_to_grey(
    attenuation: float | np.ndarray, scan_window: Sequence[float], gmax: int
) -> float | np.ndarray:
    """Attenuation -> (fractional) grey value of a scan; inverse of :func:`grey_to_attenuation`.

    Values outside the window give grey values outside ``0..gmax``; nothing is clipped.
    """
    lo, hi = _check_window(scan_window)
    gmax = _check_gmax(gmax)
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


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _norm_text(value: Any) -> str:
    return "".join(str(value).split()).lower()


def _same_setting(key: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float):
        rel, abs_ = _TOLERANCE.get(key, (1e-9, 1e-9))
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return _norm_text(a) == _norm_text(b)


def _scan_settings(scan: Scan) -> dict[str, Any]:
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
        if not _same_setting(key, mine, theirs):
            out.append(f"{key}: scan {_show(mine)}, calibration {_show(theirs)}")
    return out


def _show(value: Any) -> str:
    return "not stated" if value is None else repr(value)


# ---------------------------------------------------------------------------------------------
# Rod detection
# ---------------------------------------------------------------------------------------------


@dataclass
class _Rod:
    """Working state of one rod during detection (slice coordinates in voxels)."""

    footprint: np.ndarray  # (h, w) bool, the rod in its crop
    crop: tuple[slice, slice]  # rod crop in slice coordinates
    inner_radius: float  # inscribed radius of the footprint, voxels
    margin: float  # core = voxels at least this far (voxels) from the rod edge in the slice
    threshold: float  # grey separating the rod from its surroundings
    area: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n: np.ndarray = field(default_factory=lambda: np.zeros(0))
    s1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    s2: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _smooth(grey: np.ndarray, valid: np.ndarray | None, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores no-data voxels (normalised convolution)."""
    img = grey.astype(np.float32)
    if sigma <= 0:
        return img
    if valid is None:
        return ndimage.gaussian_filter(img, sigma, mode="nearest")
    weight = ndimage.gaussian_filter(valid.astype(np.float32), sigma, mode="constant")
    num = ndimage.gaussian_filter(np.where(valid, img, 0), sigma, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 1e-3, num / weight, 0).astype(np.float32)


def _valid(scan: Scan, grey: np.ndarray) -> np.ndarray | None:
    return grey != 0 if scan.no_data_zero else None


def _sampled(
    scan: Scan, sample: np.ndarray, sigma: float, crop: tuple[slice, slice]
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(smoothed crop, valid crop or None) of each sampled slice."""
    for i in sample:
        grey = scan.read_slice(int(i))
        valid = _valid(scan, grey)
        v = None if valid is None else valid[crop]
        yield _smooth(grey[crop], v, sigma), v


def _otsu_bin(hist: np.ndarray) -> int:
    """Last bin of the lower class of Otsu's split of ``hist``."""
    p = hist.astype(np.float64)
    idx = np.arange(p.size, dtype=np.float64)
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * idx)
    total, mtotal = w0[-1], m0[-1]
    w1 = total - w0
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mtotal * w0 - total * m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    return int(np.argmax(between))


def _level_threshold(
    scan: Scan,
    sample: np.ndarray,
    sigma: float,
    crop: tuple[slice, slice],
    mask: np.ndarray | None,
    min_background_fraction: float = 0.0,
) -> float:
    """Grey threshold between a background and the bright objects on it.

    Background: the dominant peak of the darker Otsu class of the smoothed sampled slices
    (within ``mask``), its noise SD from the peak's upper half width; bright level: the 99.9th
    percentile. Threshold: background + max(5 SD, 20 % of bright - background). Raises
    :class:`CalibrationError` when nothing stands 10 SD out of the background, or when the
    background peak (± 3 SD) holds less than ``min_background_fraction`` of the voxels.
    """
    gmax = scan.gmax
    n_bins = min(gmax + 1, 4096)
    edges = np.linspace(-0.5, gmax + 0.5, n_bins + 1)
    hist = np.zeros(n_bins, dtype=np.int64)
    for smooth, valid in _sampled(scan, sample, sigma, crop):
        keep = mask if valid is None else (valid if mask is None else valid & mask)
        hist += np.histogram(smooth if keep is None else smooth[keep], bins=edges)[0]
    if hist.sum() == 0:
        raise CalibrationError(f"{scan.path}: no voxel with data; no HA rod can be found")
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = edges[1] - edges[0]
    mode = int(np.argmax(hist[: _otsu_bin(hist) + 1]))
    above = np.flatnonzero(hist[mode + 1 :] <= hist[mode] / 2.0)
    hwhm = (above[0] + 1) * width if above.size else width
    noise_sd = max(hwhm / 1.1774, width)  # HWHM of a Gaussian = 1.1774 SD
    cdf = np.cumsum(hist) / hist.sum()
    bright = centres[min(int(np.searchsorted(cdf, 0.999)), n_bins - 1)]
    background = centres[mode]
    excess = bright - background
    near = np.abs(centres - background) <= 3 * noise_sd
    if hist[near].sum() < min_background_fraction * hist.sum():
        raise CalibrationError(f"{scan.path}: no uniform background level")
    if excess < 2 * _NOISE_SIGMAS * noise_sd:
        raise CalibrationError(
            f"{scan.path}: no HA rod found: nothing stands out of the background (brightest "
            f"0.1 % at attenuation {_att(scan, bright):.4g}, background "
            f"{_att(scan, background):.4g} ± {_att_step(scan, noise_sd):.2g})"
        )
    return float(background + max(_NOISE_SIGMAS * noise_sd, _BRIGHT_FRACTION * excess))


def _att(scan: Scan, grey: float) -> float:
    return float(grey_to_attenuation(grey, scan_window(scan), scan.gmax))


def _att_step(scan: Scan, grey_step: float) -> float:
    lo, hi = scan_window(scan)
    return grey_step * (hi - lo) / scan.gmax


def _edt_padded(mask: np.ndarray) -> np.ndarray:
    """In-plane distance (voxels) to the nearest voxel outside ``mask``; the crop border is an
    edge too."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _where(scan: Scan, rod: _Rod) -> str:
    cy, cx = ndimage.center_of_mass(rod.footprint)
    vox_mm = scan.voxel_size_um / 1000.0
    y_mm, x_mm = (rod.crop[0].start + cy) * vox_mm, (rod.crop[1].start + cx) * vox_mm
    return f"({y_mm:.2f}, {x_mm:.2f}) mm"


def _bright_objects(
    scan: Scan,
    sample: np.ndarray,
    sigma: float,
    threshold: float,
    crop: tuple[slice, slice],
    mask: np.ndarray | None,
    *,
    min_diameter_vox: float,
    core_fraction: float,
    edge_margin_vox: float,
) -> list[_Rod]:
    """Solid regions above ``threshold`` in at least half of the sampled slices."""
    from skimage.measure import regionprops

    ny, nx = scan.shape[1:]
    y_off, x_off = crop[0].start or 0, crop[1].start or 0
    count = np.zeros(((crop[0].stop or ny) - y_off, (crop[1].stop or nx) - x_off), np.int32)
    for smooth, valid in _sampled(scan, sample, sigma, crop):
        bright = smooth > threshold
        if valid is not None:
            bright &= valid
        count += bright
    footprint = count >= _FOOTPRINT_FRACTION * len(sample)
    if mask is not None:
        footprint &= mask
    labels, _ = ndimage.label(footprint)
    pad = int(math.ceil(3 * sigma)) + 2
    min_area = math.pi * (min_diameter_vox / 2) ** 2
    rods = []
    for prop in regionprops(labels):
        if prop.area < min_area:
            continue
        y0, x0, y1, x1 = prop.bbox
        rod_crop = (
            slice(max(y_off + y0 - pad, 0), min(y_off + y1 + pad, ny)),
            slice(max(x_off + x0 - pad, 0), min(x_off + x1 + pad, nx)),
        )
        # The rod crop lies inside ``crop``: an inner object's crop is padded like its parent's.
        local = (
            slice(rod_crop[0].start - y_off, rod_crop[0].stop - y_off),
            slice(rod_crop[1].start - x_off, rod_crop[1].stop - x_off),
        )
        rod_fp = labels[local] == prop.label
        inner = float(_edt_padded(rod_fp).max())
        rod = _Rod(
            footprint=rod_fp,
            crop=rod_crop,
            inner_radius=inner,
            margin=max(float(edge_margin_vox), (1.0 - core_fraction) * inner),
            threshold=threshold,
        )
        fill = prop.area / prop.area_filled
        if fill < _MIN_FILL:
            logger.info(
                "%s: hollow bright object at %s ignored (a tube wall?): %.0f %% filled",
                scan.path,
                _where(scan, rod),
                100 * fill,
            )
            continue
        if prop.solidity < _MIN_SOLIDITY:
            raise CalibrationError(
                f"{scan.path}: bright object at {_where(scan, rod)} is not a single cylinder "
                f"(solidity {prop.solidity:.2f}); rods touching each other? Separate them or "
                "scan each rod in its own folder"
            )
        rods.append(rod)
    return rods


def _detect_rods(
    scan: Scan,
    sample: np.ndarray,
    sigma: float,
    threshold: float | None,
    *,
    min_diameter_vox: float,
    core_fraction: float,
    edge_margin_vox: float,
) -> list[_Rod]:
    """Rods of a phantom scan: bright solid objects. Each object is searched again on its own
    background: when its interior holds bright objects standing clearly out of a uniform level
    (rods in a water-filled tube), those are the rods; otherwise (a rod, cupping or capping
    included: no narrow background peak) the object is the rod."""
    ny, nx = scan.shape[1:]
    whole = (slice(0, ny), slice(0, nx))
    kw = {
        "min_diameter_vox": min_diameter_vox,
        "core_fraction": core_fraction,
        "edge_margin_vox": edge_margin_vox,
    }
    fixed = threshold is not None
    if threshold is None:
        threshold = _level_threshold(scan, sample, sigma, whole, None)
    rods: list[_Rod] = []
    objects = _bright_objects(scan, sample, sigma, threshold, whole, None, **kw)
    if not objects:
        raise CalibrationError(
            f"{scan.path}: no HA rod found (no solid bright cylinder at least "
            f"{min_diameter_vox * scan.voxel_size_um / 1000:.3g} mm across above attenuation "
            f"{_att(scan, threshold):.4g} in half of the slices)"
        )
    for obj in objects:
        inner: list[_Rod] = []
        if not fixed:
            try:
                t_in = _level_threshold(
                    scan, sample, sigma, obj.crop, obj.footprint, _MIN_INNER_BACKGROUND
                )
                inner = _bright_objects(scan, sample, sigma, t_in, obj.crop, obj.footprint, **kw)
            except CalibrationError:
                inner = []
            if inner:
                logger.debug(
                    "%s: object at %s holds %d rods on its own background",
                    scan.path,
                    _where(scan, obj),
                    len(inner),
                )
        rods.extend(inner or [obj])
    return rods


def _rod_masks(
    grey_crop: np.ndarray,
    valid_crop: np.ndarray | None,
    rod: _Rod,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(rod section, rod core) of one slice crop: the bright components touching the rod's
    footprint with their holes filled, and their voxels at least ``rod.margin`` from the
    section's edge."""
    bright = _smooth(grey_crop, valid_crop, sigma) > rod.threshold
    if valid_crop is not None:
        bright &= valid_crop
    labels, n = ndimage.label(bright)
    if n == 0:
        empty = np.zeros_like(bright)
        return empty, empty
    keep = np.unique(labels[rod.footprint & bright])
    # Holes are noise dips: filling them keeps the core selection independent of the noise.
    section = ndimage.binary_fill_holes(np.isin(labels, keep[keep > 0]))
    if valid_crop is not None:
        section &= valid_crop
    core = section & (_edt_padded(section) >= rod.margin)
    return section, core


def find_rods(
    phantom_dir: StrPath | Scan,
    *,
    core_fraction: float = 0.6,
    edge_margin_vox: float = 3.0,
    min_rod_diameter_mm: float = 0.5,
    threshold_attenuation: float | None = None,
    smooth_sigma_vox: float = 1.5,
) -> list[RodMeasurement]:
    """Find the HA rods of one phantom scan and measure their core attenuation.

    Parameters
    ----------
    phantom_dir : path or Scan
        NRecon reconstruction folder of the phantom (one or several upright rods).
    core_fraction : float
        The measured core reaches this fraction of the rod's inscribed radius (0.6: the
        central 60 %), to keep the partial-volume rim and cupping at the edge out.
    edge_margin_vox : float
        ... and stays at least this many voxels inside the rod's edge in every slice; slices
        within this distance of a rod end cap are left out too.
    min_rod_diameter_mm : float
        Bright objects smaller than this (mm) are not rods (specks, dust).
    threshold_attenuation : float, optional
        Attenuation (NRecon CS units) separating the rods from their surroundings. Default:
        from the histogram, the background level plus the larger of 5 noise SDs and 20 % of the
        way to the brightest voxels.
    smooth_sigma_vox : float
        Gaussian smoothing (voxels, in-plane) for finding rods; the measurement uses raw grey.

    Returns
    -------
    list of RodMeasurement
        In order of increasing mean attenuation, ``density_g_cm3`` None.

    Raises
    ------
    CalibrationError
        The scan has no CS window; no rod found; a rod is not a single cylinder; a rod core
        has too few voxels.

    Notes
    -----
    A rod is a solid region bright in at least half of (up to 48 evenly spaced) slices, hollow
    regions (tube walls) excluded; a region whose inside shows bright objects standing out of
    a uniform level (rods in a water-filled tube) is searched again on that level. In every
    slice the rod's section is thresholded on the
    smoothed image and its core is the voxels whose in-plane distance to the section's edge is
    at least ``max(edge_margin_vox, (1 - core_fraction) * inscribed radius)``; slices that do
    not show the whole section (end caps) and their ``edge_margin_vox`` neighbours are
    dropped. The rod value is the mean raw grey of the core converted through the CS window.
    """
    scan = phantom_dir if isinstance(phantom_dir, Scan) else read_scan(phantom_dir)
    return [
        m
        for m, _ in _measure_rods(
            scan,
            core_fraction=core_fraction,
            edge_margin_vox=edge_margin_vox,
            min_rod_diameter_mm=min_rod_diameter_mm,
            threshold_attenuation=threshold_attenuation,
            smooth_sigma_vox=smooth_sigma_vox,
        )
    ]


def _measure_rods(
    scan: Scan,
    *,
    core_fraction: float,
    edge_margin_vox: float,
    min_rod_diameter_mm: float,
    threshold_attenuation: float | None,
    smooth_sigma_vox: float,
) -> list[tuple[RodMeasurement, dict[str, Any]]]:
    """Rods with their measurements and QC crops (``image``, ``section``, ``core``)."""
    if not 0 < core_fraction <= 1:
        raise ConfigError(f"core_fraction must be in (0, 1], got {core_fraction!r}")
    if not edge_margin_vox >= 0:
        raise ConfigError(f"edge_margin_vox must be >= 0 voxels, got {edge_margin_vox!r}")
    if not min_rod_diameter_mm > 0:
        raise ConfigError(f"min_rod_diameter_mm must be > 0 mm, got {min_rod_diameter_mm!r}")
    window = scan_window(scan)
    gmax = scan.gmax
    nz = scan.shape[0]
    sigma = float(smooth_sigma_vox)
    sample = np.unique(np.linspace(0, nz - 1, min(nz, _HIST_SLICES)).round().astype(int))

    threshold = None
    if threshold_attenuation is not None:
        threshold = float(attenuation_to_grey(threshold_attenuation, window, gmax))
    vox_mm = scan.voxel_size_um / 1000.0
    rods = _detect_rods(
        scan,
        sample,
        sigma,
        threshold,
        min_diameter_vox=min_rod_diameter_mm / vox_mm,
        core_fraction=core_fraction,
        edge_margin_vox=edge_margin_vox,
    )
    # Full pass: per slice and rod, section area and core sums (shifted for precision).
    for rod in rods:
        rod.area, rod.n = np.zeros(nz, np.int64), np.zeros(nz, np.int64)
        rod.s1, rod.s2 = np.zeros(nz), np.zeros(nz)
    for z in range(nz):
        grey = scan.read_slice(z)
        valid = _valid(scan, grey)
        for rod in rods:
            g = grey[rod.crop]
            section, core = _rod_masks(g, None if valid is None else valid[rod.crop], rod, sigma)
            values = g[core].astype(np.float64) - rod.threshold
            rod.area[z] = np.count_nonzero(section)
            rod.n[z] = values.size
            rod.s1[z] = values.sum()
            rod.s2[z] = np.square(values).sum()

    results = []
    for rod in rods:
        where = _where(scan, rod)
        present = rod.area > 0
        full = rod.area >= _FULL_SECTION * np.median(rod.area[present])
        m_z = int(math.ceil(edge_margin_vox))
        kept = ndimage.binary_erosion(full, iterations=m_z, border_value=1) if m_z else full
        kept &= rod.n > 0
        n_total = int(rod.n[kept].sum())
        if n_total < _MIN_CORE_VOXELS:
            raise CalibrationError(
                f"{scan.path}: rod at {where} has only {n_total} core voxels (rod too short or "
                "too thin for the core margin); lower core_fraction/edge_margin_vox"
            )
        s1, s2 = float(rod.s1[kept].sum()), float(rod.s2[kept].sum())
        mean_shifted = s1 / n_total
        var = max(s2 / n_total - mean_shifted**2, 0.0) * n_total / max(n_total - 1, 1)
        mean_grey = mean_shifted + rod.threshold
        step = (window[1] - window[0]) / gmax
        zs = np.flatnonzero(kept)
        z_mid = int(zs[len(zs) // 2])
        grey = scan.read_slice(z_mid)
        valid = _valid(scan, grey)
        g = grey[rod.crop]
        section, core = _rod_masks(g, None if valid is None else valid[rod.crop], rod, sigma)
        cy, cx = ndimage.center_of_mass(rod.footprint)
        n_kept = int(kept.sum())
        measurement = RodMeasurement(
            folder=str(scan.path),
            scan=scan.name,
            density_g_cm3=None,
            mean_attenuation=float(grey_to_attenuation(mean_grey, window, gmax)),
            sd_attenuation=math.sqrt(var) * step,
            mean_grey=mean_grey,
            n_voxels=n_total,
            n_slices=n_kept,
            first_section=int(scan.sections[zs[0]]),
            last_section=int(scan.sections[zs[-1]]),
            centre_yx_mm=(
                float((rod.crop[0].start + cy) * vox_mm),
                float((rod.crop[1].start + cx) * vox_mm),
            ),
            diameter_mm=2.0 * math.sqrt(float(np.median(rod.area[full])) / math.pi) * vox_mm,
            core_diameter_mm=2.0 * math.sqrt(n_total / n_kept / math.pi) * vox_mm,
            cs_window=window,
            gmax=gmax,
            threshold_attenuation=_att(scan, rod.threshold),
        )
        qc = {"image": g, "section": section, "core": core, "section_no": int(scan.sections[z_mid])}
        results.append((measurement, qc))
        logger.info(
            "%s: rod at %s: attenuation %.5g ± %.2g over %d voxels in %d slices",
            scan.path,
            where,
            measurement.mean_attenuation,
            measurement.sd_attenuation,
            n_total,
            n_kept,
        )
    results.sort(key=lambda item: item[0].mean_attenuation)
    return results


# ---------------------------------------------------------------------------------------------
# Calibration fit
# ---------------------------------------------------------------------------------------------


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = slope * x + intercept``; (slope, intercept, R²)."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    slope = float(np.sum((x - xm) * (y - ym)) / sxx)
    intercept = float(ym - slope * xm)
    ss_tot = float(np.sum((y - ym) ** 2))
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    return slope, intercept, 1.0 - ss_res / ss_tot


def _check_phantom_settings(scans: Sequence[Scan]) -> dict[str, Any]:
    first = _scan_settings(scans[0])
    for other in scans[1:]:
        theirs = _scan_settings(other)
        for key in CHECKED_SETTINGS:
            if not _same_setting(key, first.get(key), theirs.get(key)):
                raise CalibrationError(
                    f"phantom folders disagree on reconstruction settings: {scans[0].path} has "
                    f"{key}={_show(first.get(key))}, {other.path} has {key}="
                    f"{_show(theirs.get(key))}; calibrate only with scans reconstructed alike"
                )
    return {k: v for k, v in first.items() if k not in ("cs_min", "cs_max")}


def calibrate(
    phantom_dirs: StrPath | Sequence[StrPath],
    densities: Sequence[float] | str,
    *,
    core_fraction: float = 0.6,
    edge_margin_vox: float = 3.0,
    min_rod_diameter_mm: float = 0.5,
    threshold_attenuation: float | None = None,
    smooth_sigma_vox: float = 1.5,
    qc_dir: StrPath | None = None,
) -> Calibration:
    """Fit the attenuation -> g/cm³ HA line on scans of HA rods.

    Parameters
    ----------
    phantom_dirs : path or sequence of paths
        NRecon reconstruction folders of the phantom rods: one rod per folder, or several rods
        in one folder, or a mix. Each folder's grey values are converted to attenuation through
        its own CS window, so the folders may have different windows and bit depths.
    densities : sequence of float or str
        Nominal HA densities in g/cm³ (``"0.25,0.75"`` accepted), one per rod, in folder order;
        for a folder holding several rods, its densities in increasing order (they are matched
        to its rods by increasing attenuation).
    core_fraction, edge_margin_vox, min_rod_diameter_mm, threshold_attenuation, smooth_sigma_vox
        Rod detection, see :func:`find_rods`.
    qc_dir : path, optional
        Folder for one QC picture per rod (``<scan>_rod<k>.png``: the rod's middle core slice,
        its detected outline and the measured core). None: no pictures.

    Returns
    -------
    Calibration
        ``density = slope * attenuation + intercept``; least squares when there are more than
        two rods (R² reported), the line through both when there are two.

    Raises
    ------
    CalibrationError
        One line naming the folder: phantom folders reconstructed with different settings
        (:data:`CHECKED_SETTINGS`), a folder without a CS window, no rod found, fewer or more
        rods than densities, densities of a multi-rod folder not increasing, all densities
        equal, or a non-monotonic fit (a denser rod attenuating no more than a lighter one).

    Examples
    --------
    >>> cal = calibrate(["HA025", "HA075"], [0.25, 0.75])  # doctest: +SKIP
    >>> cal.density(0.05)  # doctest: +SKIP
    """
    if isinstance(phantom_dirs, str | PathLike):
        phantom_dirs = [phantom_dirs]
    if not phantom_dirs:
        raise CalibrationError("no phantom folder given")
    densities = parse_densities(densities, folders=len(phantom_dirs))
    scans = [read_scan(d) for d in phantom_dirs]
    for scan in scans:
        scan_window(scan)
    settings = _check_phantom_settings(scans)
    params = {
        "core_fraction": core_fraction,
        "edge_margin_vox": edge_margin_vox,
        "min_rod_diameter_mm": min_rod_diameter_mm,
        "threshold_attenuation": threshold_attenuation,
        "smooth_sigma_vox": smooth_sigma_vox,
    }
    found = [_measure_rods(scan, **params) for scan in scans]

    counts = [len(f) for f in found]
    if sum(counts) != len(densities):
        per_folder = ", ".join(f"{s.path}: {c}" for s, c in zip(scans, counts, strict=True))
        raise CalibrationError(
            f"{len(densities)} densities given but {sum(counts)} HA rods found ({per_folder}); "
            "give one density per rod"
        )
    rods: list[RodMeasurement] = []
    qcs: list[dict[str, Any]] = []
    k = 0
    for scan, items in zip(scans, found, strict=True):
        mine = densities[k : k + len(items)]
        k += len(items)
        if len(mine) > 1 and any(b <= a for a, b in zip(mine, mine[1:], strict=False)):
            raise CalibrationError(
                f"{scan.path}: holds {len(items)} rods; give their densities in increasing "
                f"order (got {', '.join(f'{d:g}' for d in mine)})"
            )
        for (measurement, qc), density in zip(items, mine, strict=True):
            rods.append(replace(measurement, density_g_cm3=density))
            qcs.append(qc)

    att = np.array([r.mean_attenuation for r in rods])
    dens = np.array([r.density_g_cm3 for r in rods], dtype=np.float64)
    if np.ptp(dens) == 0:
        raise CalibrationError(f"all rods have the same density ({dens[0]:g} g/cm³); need two")
    for a in rods:
        for b in rods:
            if a.density_g_cm3 < b.density_g_cm3 and a.mean_attenuation >= b.mean_attenuation:
                raise CalibrationError(
                    f"non-monotonic calibration: the {a.density_g_cm3:g} g/cm³ rod ({a.folder}) "
                    f"attenuates {a.mean_attenuation:.5g}, not less than the "
                    f"{b.density_g_cm3:g} g/cm³ rod ({b.folder}) at {b.mean_attenuation:.5g}; "
                    "are the densities given in the folders' order?"
                )
    slope, intercept, r2 = _fit_line(att, dens)
    if not slope > 0:  # guarded by the monotonicity check; kept for safety
        raise CalibrationError(f"calibration slope {slope:.4g} is not positive")
    if len(rods) > 2 and r2 < 0.99:
        logger.warning("calibration fit R² = %.4f over %d rods: check the rods", r2, len(rods))

    order = np.argsort(dens, kind="stable")
    rods = [rods[i] for i in order]
    qcs = [qcs[i] for i in order]
    if qc_dir is not None:
        rods = _write_rod_pictures(Path(qc_dir), rods, qcs)
    calibration = Calibration(
        slope=slope,
        intercept=intercept,
        r_squared=r2,
        rods=tuple(rods),
        settings=settings,
        parameters=params,
    )
    logger.info("%s", calibration.summary())
    return calibration


def _write_rod_pictures(
    folder: Path, rods: Sequence[RodMeasurement], qcs: Sequence[dict[str, Any]]
) -> list[RodMeasurement]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    seen: dict[str, int] = {}
    for rod, qc in zip(rods, qcs, strict=True):
        seen[rod.scan] = seen.get(rod.scan, 0) + 1
        path = folder / f"{rod.scan}_rod{seen[rod.scan]}.png"
        fig, ax = plt.subplots(figsize=(4.5, 4.8))
        ax.imshow(qc["image"], cmap="gray", interpolation="nearest")
        ax.contour(qc["section"], levels=[0.5], colors=["#ffb000"], linewidths=0.8)
        if qc["core"].any():
            ax.contour(qc["core"], levels=[0.5], colors=["#00c8ff"], linewidths=0.8)
        ax.set_title(
            f"{rod.scan}: {rod.density_g_cm3:g} g/cm³ HA, section {qc['section_no']}\n"
            f"attenuation {rod.mean_attenuation:.5g} ± {rod.sd_attenuation:.2g} "
            f"({rod.n_voxels} voxels, {rod.n_slices} slices)\n"
            "orange: rod outline, blue: measured core",
            fontsize=7,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
        plt.close(fig)
        out.append(replace(rod, qc_picture=str(path)))
    return out


# ---------------------------------------------------------------------------------------------
# BMD and TMD
# ---------------------------------------------------------------------------------------------


def _eroded(bone: np.ndarray, region: np.ndarray, radius: float) -> np.ndarray:
    """Bone voxels farther than ``radius`` voxels (Euclidean, centre to centre) from any non-bone
    voxel, within the bounding box of ``region``. Bone outside the box is context: the box edge
    and the image border are not surfaces."""
    if radius <= 0:
        return bone & region
    if not region.any():
        return np.zeros_like(region)
    pad = int(math.ceil(radius)) + 1
    box_list = []
    for axis in range(region.ndim):
        others = tuple(a for a in range(region.ndim) if a != axis)
        idx = np.flatnonzero(region.any(axis=others))
        box_list.append(slice(max(idx[0] - pad, 0), min(idx[-1] + 1 + pad, region.shape[axis])))
    box = tuple(box_list)
    sub = bone[box]
    out = np.zeros_like(region)
    if sub.all():
        out[box] = region[box]
        return out
    out[box] = (ndimage.distance_transform_edt(sub) > radius) & region[box]
    return out


def density_metrics(
    grey: np.ndarray,
    bone: np.ndarray,
    voi: np.ndarray,
    *,
    scan_window: Sequence[float],
    gmax: int,
    calibration: Calibration,
    tmd_erosion_vox: float = 1,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """BMD and TMD of a VOI, g/cm³ HA.

    Parameters
    ----------
    grey : (Z, Y, X) ndarray
        Raw (unsmoothed) grey values of the scan.
    bone : (Z, Y, X) ndarray of bool
        Segmented bone. Bone outside the VOI is context for the erosion.
    voi : (Z, Y, X) ndarray of bool
        The volume of interest.
    scan_window : (float, float)
        The scan's own CS window (``Scan.cs_window``), NRecon CS units.
    gmax : int
        255 or 65535 (``Scan.gmax``).
    calibration : Calibration
        The phantom line.
    tmd_erosion_vox : float
        Bone voxels within this distance (voxels, Euclidean between centres) of a non-bone voxel
        are left out of TMD, to keep the partial-volume rim out: 1 removes the surface layer
        (as a 6-connected erosion), 0 keeps all bone voxels.
    valid : (Z, Y, X) ndarray of bool, optional
        Voxels with data (``grey != 0`` for round-ROI scans); None: all.

    Returns
    -------
    dict
        ``{'BMD': float, 'TMD': float}`` in g/cm³ HA. BMD: mean density of all VOI voxels with
        data, bone and marrow. TMD: mean density of the eroded bone voxels of the VOI; NaN (with
        a warning) when no bone voxel survives the erosion.

    Raises
    ------
    ConfigError
        Shapes differ, the VOI has no voxel with data, or ``tmd_erosion_vox`` < 0.
    CalibrationError
        No or invalid CS window.

    Notes
    -----
    Densities are linear in grey, so the mean density is the density of the mean grey value,
    converted through the scan's CS window and the calibration line (Bouxsein et al. 2010).
    """
    grey = np.asarray(grey)
    bone = np.asarray(bone, dtype=bool)
    voi = np.asarray(voi, dtype=bool)
    if not grey.shape == bone.shape == voi.shape:
        raise ConfigError(
            f"grey {grey.shape}, bone {bone.shape} and voi {voi.shape} must have one shape"
        )
    if not (math.isfinite(tmd_erosion_vox) and tmd_erosion_vox >= 0):
        raise ConfigError(f"tmd_erosion_vox must be >= 0 voxels, got {tmd_erosion_vox!r}")
    window = _check_window(scan_window)
    gmax = _check_gmax(gmax)
    region = voi
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != voi.shape:
            raise ConfigError(f"valid {valid.shape} and voi {voi.shape} must have one shape")
        region = voi & valid
    sums = _density_sums(grey, bone, region, float(tmd_erosion_vox))
    return _densities(sums, window, gmax, calibration, tmd_erosion_vox)


def _density_sums(grey: np.ndarray, bone: np.ndarray, region: np.ndarray,
                  radius: float) -> np.ndarray:
    """``[grey sum, voxels]`` of ``region`` and of its eroded bone (:func:`_eroded`), float64.

    Grey values are integers, so every partial sum is an exact float64 integer (below 2**53
    for any scan: 1e11 voxels of 65535): sums of blocks add up to the whole sum exactly.
    """
    tissue = _eroded(bone, region, radius)
    return np.array([
        np.sum(grey, where=region, dtype=np.float64), np.count_nonzero(region),
        np.sum(grey, where=tissue, dtype=np.float64), np.count_nonzero(tissue),
    ], dtype=np.float64)


def _densities(sums: np.ndarray, window: tuple[float, float], gmax: int,
               calibration: Calibration, tmd_erosion_vox: float) -> dict[str, float]:
    """BMD and TMD (g/cm³ HA) from :func:`_density_sums`."""
    bmd_sum, n_voi, tmd_sum, n_tissue = (float(v) for v in sums)
    if n_voi == 0:
        raise ConfigError("the VOI has no voxel with data; BMD is undefined")
    if n_tissue:
        tmd = float(grey_to_density(tmd_sum / n_tissue, calibration, window, gmax))
    else:
        logger.warning(
            "TMD undefined: no bone voxel of the VOI lies deeper than %g voxels inside bone",
            tmd_erosion_vox,
        )
        tmd = math.nan
    return {"BMD": float(grey_to_density(bmd_sum / n_voi, calibration, window, gmax)),
            "TMD": tmd}


#: Voxels per block of :func:`density_metrics_chunked` (scipy's EDT takes ~20 B per voxel).
_DENSITY_BLOCK_VOXELS = 4_000_000


def density_metrics_chunked(
    src: Any,
    *,
    scan_window: Sequence[float],
    gmax: int,
    calibration: Calibration,
    tmd_erosion_vox: float = 1,
    no_data_zero: bool = False,
    chunk_slices: int | None = None,
) -> dict[str, float]:
    """:func:`density_metrics` of a slab read block by block: the same numbers, bounded memory.

    Parameters
    ----------
    src : ZSource with ``read_grey``
        A :class:`~ctmorph.morphometry.zsource.ZSource` (``shape``; ``read(z0, z1)`` giving
        ``bone`` and ``voi``) that also has ``read_grey(z0, z1)``: the raw grey values of
        slices ``[z0, z1)``.
    no_data_zero : bool
        Grey 0 means no data (round-ROI scans): ``valid = grey != 0``.
    chunk_slices : int, optional
        Slices per block (default: about 4 M voxels).
    scan_window, gmax, calibration, tmd_erosion_vox
        As for :func:`density_metrics`.

    Returns
    -------
    dict
        ``{'BMD': float, 'TMD': float}`` in g/cm³ HA, equal to :func:`density_metrics` on the
        whole arrays.

    Notes
    -----
    Whether a bone voxel survives the TMD erosion depends only on the voxels within
    ``tmd_erosion_vox`` of it, so each block reads ``ceil(tmd_erosion_vox) + 1`` slices of
    context each side (the whole version's box padding) and counts only its own slices. The
    sums are of integers, exact in float64, so the result is identical, not merely close.
    """
    if not (math.isfinite(tmd_erosion_vox) and tmd_erosion_vox >= 0):
        raise ConfigError(f"tmd_erosion_vox must be >= 0 voxels, got {tmd_erosion_vox!r}")
    window = _check_window(scan_window)
    gmax = _check_gmax(gmax)
    nz, ny, nx = (int(v) for v in src.shape)
    if chunk_slices is None:
        chunk_slices = max(1, _DENSITY_BLOCK_VOXELS // max(1, ny * nx))
    if int(chunk_slices) < 1:
        raise ConfigError(f"chunk_slices must be >= 1, got {chunk_slices!r}")
    halo = int(math.ceil(tmd_erosion_vox)) + 1
    sums = np.zeros(4, dtype=np.float64)
    for z0 in range(0, nz, int(chunk_slices)):
        z1 = min(z0 + int(chunk_slices), nz)
        lo, hi = max(z0 - halo, 0), min(z1 + halo, nz)
        blk = src.read(lo, hi)
        region = blk.voi
        region[: z0 - lo] = False  # context slices: bone for the erosion, never counted
        region[z1 - lo:] = False
        if not region.any():
            continue
        grey = src.read_grey(lo, hi)
        if no_data_zero:
            region &= grey != 0
        sums += _density_sums(grey, blk.bone, region, float(tmd_erosion_vox))
    return _densities(sums, window, gmax, calibration, tmd_erosion_vox)
