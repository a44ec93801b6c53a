"""Study manifest: one CSV row per scan, with its group and optional per-scan settings.

Format (UTF-8, a BOM is allowed)::

    # rat femur study 2026, batch 1
    scan,group,roi_offset_mm,distal_end
    scans/F01_rec,sham,,
    scans/F02_rec,OVX,1.2,first
    /data/extra/F03_rec,OVX,,

- ``scan``: the NRecon reconstruction folder, relative to the manifest's folder unless
  absolute (``~`` is expanded). The scan's name is the folder's name; names must be unique.
- ``group``: the group label, required on every row.
- Optional override columns, named like :class:`~ctmorph.config.AnalysisConfig` fields (case
  does not matter, ``-`` and spaces read as ``_``): see :data:`OVERRIDABLE`. An empty cell
  means the study's setting. Settings that must be one per study (threshold, smoothing,
  calibration, thickness convention, ...) are refused as columns: per-scan thresholds bias
  group comparisons.
- Blank lines and lines whose first cell starts with ``#`` are ignored anywhere, also before
  the header.

Every error names the manifest file, the line and the column.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import AnalysisConfig
from .errors import ConfigError

__all__ = ["Manifest", "ManifestEntry", "OVERRIDABLE", "read_manifest"]

#: Settings a manifest may set per scan, with the type of their values.
OVERRIDABLE: dict[str, type] = {
    "roi_offset_mm": float,
    "roi_height_mm": float,
    "distal_end": str,
    "voxel_size_um": float,
    "cortical_offset_mm": float,
    "cortical_height_mm": float,
}

_REQUIRED = ("scan", "group")
_DISTAL_ENDS = ("auto", "first", "last")


@dataclass(frozen=True)
class ManifestEntry:
    """One scan of a manifest.

    Attributes
    ----------
    name : str
        Scan name (the folder's name).
    folder : pathlib.Path
        Absolute path of the scan folder (not checked here: a missing folder fails that
        scan, or is reported by a dry run).
    group : str
        Group label.
    overrides : dict
        Per-scan settings (``AnalysisConfig`` field → value); only non-empty cells.
    line : int
        Line of the manifest the scan is on (1-based).
    """

    name: str
    folder: Path
    group: str
    overrides: Mapping[str, Any] = field(default_factory=dict, hash=False)
    line: int = 0

    def config(self, base: AnalysisConfig) -> AnalysisConfig:
        """The study settings ``base`` with this scan's overrides applied."""
        return base.replace(**self.overrides) if self.overrides else base


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: the file and its scans in file order."""

    path: Path
    entries: tuple[ManifestEntry, ...]

    def provenance(self, entry: ManifestEntry) -> dict[str, Any]:
        """What the per-scan JSON records about where a scan's settings came from."""
        return {"path": str(self.path), "line": entry.line, "overrides": dict(entry.overrides)}


def _norm_column(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _parse_value(column: str, raw: str, where: str) -> Any:
    kind = OVERRIDABLE[column]
    if kind is float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {raw!r}")
        return value
    value = raw.lower()
    if column == "distal_end" and value not in _DISTAL_ENDS:
        raise ConfigError(f"{where}: expected one of {', '.join(_DISTAL_ENDS)}, got {raw!r}")
    return value


def read_manifest(path: str | Path, base: AnalysisConfig | None = None) -> Manifest:
    """Read and validate a study manifest (see the module docstring for the format).

    Parameters
    ----------
    path : str or Path
        The CSV file.
    base : AnalysisConfig, optional
        The study settings the overrides apply to; each scan's settings are validated
        against them (e.g. a cortical VOI needs ``roi="auto"``). Default settings if omitted.

    Returns
    -------
    Manifest

    Raises
    ------
    ConfigError
        One line naming the file, the line and the column: unreadable file, missing
        ``scan``/``group`` column, unknown or study-wide column, duplicate column, a row with
        more cells than the header, empty scan or group, a scan name listed twice, an invalid
        value, or no scan at all.
    """
    p = Path(path)
    base = base or AnalysisConfig()
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the manifest is not UTF-8 text") from None
    root = Path(os.path.abspath(p)).parent
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 0
    entries: list[ManifestEntry] = []
    seen: dict[str, int] = {}
    study_wide = [f.name for f in dataclasses.fields(AnalysisConfig) if f.name not in OVERRIDABLE]
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header, header_line = [_norm_column(c) for c in cells], line
                _check_header(p, line, header, study_wide)
                continue
            if len(cells) > len(header):
                raise ConfigError(
                    f"{p}: line {line}: {len(cells)} cells but the header on line "
                    f"{header_line} has {len(header)} columns"
                )
            rec = {col: cells[i].strip() if i < len(cells) else "" for i, col in enumerate(header)}
            entries.append(_entry(p, line, rec, root, base, seen))
    except csv.Error as exc:
        raise ConfigError(f"{p}: line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise ConfigError(f"{p}: the manifest is empty (needs a header 'scan,group')")
    if not entries:
        raise ConfigError(f"{p}: the manifest lists no scan")
    return Manifest(path=Path(os.path.abspath(p)), entries=tuple(entries))


def _check_header(p: Path, line: int, header: list[str], study_wide: list[str]) -> None:
    for col in _REQUIRED:
        if col not in header:
            raise ConfigError(
                f"{p}: line {line}: the manifest needs the columns 'scan,group', found "
                f"{', '.join(h for h in header if h) or 'none'}"
            )
    for i, col in enumerate(header):
        where = f"{p}: line {line}, column {i + 1}"
        if not col:
            raise ConfigError(f"{where}: empty column name")
        if header.index(col) != i:
            raise ConfigError(f"{where}: column {col!r} appears twice")
        if col in _REQUIRED or col in OVERRIDABLE:
            continue
        if col in study_wide:
            raise ConfigError(
                f"{where}: {col!r} is a study-wide setting (one per study, e.g. one threshold "
                "for all scans); give it on the command line, not per scan"
            )
        raise ConfigError(
            f"{where}: unknown column {col!r}; per-scan columns are "
            f"{', '.join(OVERRIDABLE)}"
        )


def _entry(
    p: Path, line: int, rec: dict[str, str], root: Path, base: AnalysisConfig,
    seen: dict[str, int],
) -> ManifestEntry:
    scan, group = rec["scan"], rec["group"]
    if not scan:
        raise ConfigError(f"{p}: line {line}, column 'scan': empty scan folder")
    if not group:
        raise ConfigError(f"{p}: line {line}, column 'group': empty group for scan {scan!r}")
    raw = Path(os.path.expanduser(scan))
    folder = Path(os.path.abspath(raw if raw.is_absolute() else root / raw))
    name = folder.name
    if not name:
        raise ConfigError(f"{p}: line {line}, column 'scan': {scan!r} is not a scan folder")
    if name in seen:
        raise ConfigError(
            f"{p}: line {line}, column 'scan': scan name {name!r} is already on line "
            f"{seen[name]}; scan names (folder names) must be unique"
        )
    seen[name] = line
    overrides: dict[str, Any] = {}
    for col in OVERRIDABLE:
        raw_value = rec.get(col, "")
        if not raw_value:
            continue
        where = f"{p}: line {line}, column {col!r}"
        value = _parse_value(col, raw_value, where)
        try:
            base.replace(**{col: value})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        overrides[col] = value
    try:
        base.replace(**overrides)
    except ConfigError as exc:  # settings that only fail together
        raise ConfigError(f"{p}: line {line}: {exc}") from None
    return ManifestEntry(name=name, folder=folder, group=group, overrides=overrides, line=line)
