"""The NRecon reconstruction log: INI-like Windows text parsed section by section, keys
case-insensitive with the spellings of different NRecon versions (docs/DESIGN.md §5)."""


from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import ScanError
from .names import canon_ext

__all__ = [
    "SkyscanLog",
    "parse_log",
    "lenient_number",
]


StrPath = str | PathLike[str]

_SECTION_RE = re.compile(r"^\s*\[([^\]]+)\]\s*$")
# Keys (normalised: lower case, single spaces) that different NRecon versions spell differently.
# The first spelling of each group is the canonical one.
_ALIAS_GROUPS = (
    ("minimum for cs to image conversion", "mininum for cs to image conversion"),
    ("pixel size (um)", "pixel size (µm)"),
    ("image pixel size (um)", "image pixel size (µm)"),
    ("source current (ua)", "source current (µa)"),
    ("reconstruction program", "program"),
)
_ALIASES = {key: group for group in _ALIAS_GROUPS for key in group}
# Keys whose presence in [Reconstruction] marks an NRecon reconstruction log; sub-scan logs
# (``NAME~00.log``) also carry a [Reconstruction] section but with none of these keys.
_RECON_KEYS = ("pixel size (um)", "first section", "result file type", "sections count")


def _norm_key(key: str) -> str:
    return " ".join(key.split()).lower()



# ---------------------------------------------------------------------------------------------
# Log
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkyscanLog:
    """A parsed SkyScan/NRecon log.

    Parameters
    ----------
    path : pathlib.Path or None
        The log file (None for a log built from text).
    sections : mapping of str -> mapping of str -> str
        Section name as written (``'Reconstruction'``) -> {normalised key (lower case, single
        spaces) -> value string with surrounding blanks removed}. Keys repeated in different
        sections stay apart.

    Notes
    -----
    Properties are None when the log does not say; a value that is present but not a number
    where one is needed raises :class:`~ctmorph.errors.ScanError` naming the log and the key.
    """

    path: Path | None
    sections: Mapping[str, Mapping[str, str]]

    def _section(self, section: str) -> Mapping[str, str] | None:
        wanted = _norm_key(section)
        for name, values in self.sections.items():
            if _norm_key(name) == wanted:
                return values
        return None

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        """Value of ``key`` in ``section``, matched case-insensitively and through known aliases.

        Parameters
        ----------
        section : str
            Section name without brackets, e.g. ``'Reconstruction'``.
        key : str
            Key as NRecon writes it, e.g. ``'Minimum for CS to Image Conversion'`` (also finds the
            old misspelling ``'Mininum ...'``).
        default : str, optional
            Returned when the section or key is absent.

        Returns
        -------
        str or None
            The raw value string.
        """
        values = self._section(section)
        if values is None:
            return default
        norm = _norm_key(key)
        for candidate in _ALIASES.get(norm, (norm,)):
            if candidate in values:
                return values[candidate]
        return default

    def _number(self, section: str, key: str, kind: type[int] | type[float]) -> Any:
        raw = self.get(section, key)
        if raw is None or raw == "":
            return None
        try:
            value = kind(raw)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ScanError(f"{self._where()}: [{section}] {key}={raw!r} is not {what}") from None
        if kind is float and not math.isfinite(value):
            raise ScanError(f"{self._where()}: [{section}] {key}={raw!r} is not finite")
        return value

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "<log>"

    @property
    def scanner(self) -> str | None:
        """Scanner model, [System] ``Scanner`` (e.g. ``'Skyscan1172'``, ``'SkyScan1272'``)."""
        return self.get("System", "Scanner") or self.get("Reconstruction", "Dataset Origin")

    @property
    def voxel_size_um(self) -> float | None:
        """Reconstructed voxel size in µm, [Reconstruction] ``Pixel Size (um)``.

        Not [Acquisition] ``Image Pixel Size (um)``, which is the projection pixel.
        """
        return self._number("Reconstruction", "Pixel Size (um)", float)

    @property
    def first_section(self) -> int | None:
        """First reconstructed section number, [Reconstruction] ``First Section``."""
        return self._number("Reconstruction", "First Section", int)

    @property
    def last_section(self) -> int | None:
        """Last reconstructed section number, [Reconstruction] ``Last Section``."""
        return self._number("Reconstruction", "Last Section", int)

    @property
    def index_length(self) -> int | None:
        """Digits of the section index in slice names.

        [File name convention] ``Filename Index Length``, else the [Acquisition] one (which
        describes the projections and is only a hint for the slices).
        """
        for section in ("File name convention", "Acquisition"):
            value = self._number(section, "Filename Index Length", int)
            if value is not None:
                return value
        return None

    @property
    def prefix(self) -> str | None:
        """Slice file prefix, [File name convention] ``Filename Prefix`` (normally ``NAME_rec``)."""
        return self.get("File name convention", "Filename Prefix") or None

    @property
    def result_file_type(self) -> str | None:
        """Slice file extension in lower case (``'bmp'``, ``'tif'``, ``'png'``, ``'jpg'``)."""
        raw = self.get("Reconstruction", "Result File Type")
        return canon_ext(raw.strip()) if raw else None

    @property
    def cs_min(self) -> float | None:
        """Attenuation mapped to grey 0, [Reconstruction] ``Minimum for CS to Image Conversion``."""
        return self._number("Reconstruction", "Minimum for CS to Image Conversion", float)

    @property
    def cs_max(self) -> float | None:
        """Attenuation mapped to the top grey, ``Maximum for CS to Image Conversion``."""
        return self._number("Reconstruction", "Maximum for CS to Image Conversion", float)

    @property
    def round_roi(self) -> bool:
        """True for ``Reconstruction from ROI=ON_ROUND`` (exact zeros outside the circle)."""
        value = self.get("Reconstruction", "Reconstruction from ROI") or ""
        return value.strip().upper() == "ON_ROUND"

    @property
    def is_reconstruction_log(self) -> bool:
        """True when [Reconstruction] describes a reconstruction (not a scan or sub-scan log)."""
        return self.reconstruction_problem is None

    @property
    def reconstruction_problem(self) -> str | None:
        """Why the log describes no reconstruction (a scan or sub-scan log), or None if it does.

        Returns
        -------
        str or None
            ``'has no [Reconstruction] section'`` (a scan log), or ``'its [Reconstruction]
            section has none of ...'`` (a sub-scan log); None for a reconstruction log.
        """
        values = self._section("Reconstruction")
        if values is None:
            return "has no [Reconstruction] section"
        if not any(key in values for key in _RECON_KEYS):
            return (
                "its [Reconstruction] section has none of Pixel Size (um), First Section, "
                "Result File Type, Sections Count (a sub-scan log)"
            )
        return None

    def settings(self) -> dict[str, Any]:
        """Acquisition and reconstruction settings that matter for calibration and provenance.

        Returns
        -------
        dict
            Flat, JSON-serialisable, snake_case keys, None where the log is silent: ``scanner``,
            ``source_voltage_kv`` (kV), ``source_current_ua`` (µA), ``filter``,
            ``projection_pixel_size_um`` (µm), ``voxel_size_um`` (µm), ``smoothing``,
            ``smoothing_kernel``, ``ring_artifact_correction``,
            ``beam_hardening_correction_percent`` (%), ``filter_type_description``, ``cs_min``,
            ``cs_max`` (NRecon attenuation units), ``reconstruction_program``,
            ``program_version``, ``roi_mode`` (``'OFF'``, ``'ON'``, ``'ON_ROUND'``). Numbers
            that are not numbers in the log (anonymised ``####``) are kept as strings.
        """
        acq, rec = "Acquisition", "Reconstruction"
        version = self.get(rec, "Program Version")
        if version is not None:
            version = re.sub(r"^\s*version\s*:?\s*", "", version, flags=re.IGNORECASE)
        return {
            "scanner": self.scanner,
            "source_voltage_kv": lenient_number(self.get(acq, "Source Voltage (kV)"), float),
            "source_current_ua": lenient_number(self.get(acq, "Source Current (uA)"), float),
            "filter": self.get(acq, "Filter"),
            "projection_pixel_size_um": lenient_number(self.get(acq, "Image Pixel Size (um)"),
                                                       float),
            "voxel_size_um": lenient_number(self.get(rec, "Pixel Size (um)"), float),
            "smoothing": lenient_number(self.get(rec, "Smoothing"), int),
            "smoothing_kernel": self.get(rec, "Smoothing kernel"),
            "ring_artifact_correction": lenient_number(self.get(rec, "Ring Artifact Correction"),
                                                       int),
            "beam_hardening_correction_percent": lenient_number(
                self.get(rec, "Beam Hardening Correction (%)"), float
            ),
            "filter_type_description": self.get(rec, "Filter type description"),
            "cs_min": lenient_number(self.get(rec, "Minimum for CS to Image Conversion"), float),
            "cs_max": lenient_number(self.get(rec, "Maximum for CS to Image Conversion"), float),
            "reconstruction_program": self.get(rec, "Reconstruction Program"),
            "program_version": version,
            "roi_mode": self.get(rec, "Reconstruction from ROI"),
        }


def lenient_number(raw: str | None, kind: type[int] | type[float]) -> int | float | str | None:
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        return raw
    return value if math.isfinite(value) else raw


def parse_log(path: StrPath) -> SkyscanLog:
    """Parse a SkyScan/NRecon log file.

    Parameters
    ----------
    path : str or path
        The ``.log`` file (scan, sub-scan or reconstruction log).

    Returns
    -------
    SkyscanLog

    Raises
    ------
    ScanError
        If the file cannot be read or is not an INI-like log (binary, or no ``[Section]`` with
        ``key=value`` lines).

    Notes
    -----
    CRLF, LF and CR line ends; UTF-8 is tried first, then cp1252 (latin-1 as a last resort).
    Lines without ``=`` and lines before the first section are ignored. Within a section the first
    occurrence of a key wins.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanError(f"{path}: cannot read log ({exc.strerror or exc})") from None
    if b"\x00" in data:
        raise ScanError(f"{path}: not a SkyScan log (binary content)")
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    n_values = 0
    for line in text.splitlines():
        header = _SECTION_RE.match(line)
        if header:
            current = sections.setdefault(header.group(1).strip(), {})
            continue
        if current is None or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = _norm_key(key)
        if key and key not in current:
            current[key] = value.strip()
            n_values += 1
    if not sections or n_values == 0:
        raise ScanError(f"{path}: not a SkyScan log (no [section] with key=value lines)")
    return SkyscanLog(path=path, sections=sections)
