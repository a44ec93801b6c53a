"""Study manifest: one CSV row per scan, with its group and optional per-scan settings.

Format (CSV, UTF-8 or UTF-16, see below)::

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

The groups file of ``ctmorph analyze --groups`` (:func:`read_groups`) is the same kind of CSV
with the columns ``scan`` (the scan's folder name) and ``group``; other columns are ignored.

Both files are read by one reader: UTF-8 with or without a BOM, or UTF-16 with a BOM (Excel's
"Unicode text"); comma-separated, or tab-separated when the header line holds tabs and no
comma (Excel's "Unicode text" again); strict CSV quoting. Scan names and group labels are
compared in Unicode NFC (:func:`normalize_name`), so a name typed on macOS (NFD) matches the
same name typed elsewhere.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .config import AnalysisConfig
from .errors import ConfigError
from .io import normalize_name  # one spelling rule for folder names and the CSV files
from .textsafe import csv_uncell

__all__ = [
    "GroupTable",
    "Manifest",
    "ManifestEntry",
    "OVERRIDABLE",
    "OverrideTable",
    "ScanTable",
    "VOI_OVERRIDES",
    "normalize_name",
    "read_groups",
    "read_manifest",
    "read_overrides",
]

V = TypeVar("V")

#: Settings a manifest may set per scan, with the type of their values.
OVERRIDABLE: dict[str, type] = {
    "roi_offset_mm": float,
    "roi_height_mm": float,
    "distal_end": str,
    "voxel_size_um": float,
    "cortical_offset_mm": float,
    "cortical_height_mm": float,
    "ref_slice": int,
    "voi_first_slice": int,
    "voi_last_slice": int,
}

#: The columns of an overrides file (``--overrides``) besides ``scan``: where a person put a
#: femur's growth-plate reference or VOI by hand (section numbers as the slice files are
#: numbered), and which end is distal.
VOI_OVERRIDES = ("ref_slice", "voi_first_slice", "voi_last_slice", "distal_end")

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


class ScanTable(Mapping[str, V]):
    """A CSV read into a read-only mapping: scan name -> the scan's value.

    Keys are NFC-normalised (:func:`normalize_name`); a lookup normalises its key too, so
    ``table[name]`` finds a scan however its name is spelled in Unicode.

    Attributes
    ----------
    path : pathlib.Path
        The file (absolute).
    """

    __slots__ = ("_values", "_lines", "_path")

    def __init__(self, path: Path, values: Mapping[str, V], lines: Mapping[str, int]) -> None:
        self._path = Path(path)
        self._values = dict(values)
        self._lines = dict(lines)

    @property
    def path(self) -> Path:
        """The file (absolute)."""
        return self._path

    def __getitem__(self, scan: str) -> V:
        if not isinstance(scan, str):
            raise KeyError(scan)
        return self._values[normalize_name(scan)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._path)!r}, {self._values!r})"

    def line(self, scan: str) -> int:
        """The line (1-based, comments and blank lines counted) the scan is listed on.

        Raises
        ------
        KeyError
            If the scan is not listed.
        """
        if not isinstance(scan, str):
            raise KeyError(scan)
        return self._lines[normalize_name(scan)]


class GroupTable(ScanTable[str]):
    """A read groups file: scan name -> group label (:func:`read_groups`)."""

    __slots__ = ()


class OverrideTable(ScanTable[dict[str, Any]]):
    """A read overrides file: scan name -> its VOI settings given by hand
    (:func:`read_overrides`)."""

    __slots__ = ()


# ---------------------------------------------------------------------------------------------
# the one CSV reader behind the manifest and the groups file


@dataclass(frozen=True)
class _Row:
    line: int  # physical line the record starts on (1-based)
    cells: dict[str, str]  # normalised column name -> stripped cell ("" when absent)


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]  # normalised column names
    header_line: int
    rows: tuple[_Row, ...]


_BOMS = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


def _norm_column(name: str) -> str:
    return normalize_name(name).strip().lower().replace("-", "_").replace(" ", "_")


def _decode(p: Path, data: bytes) -> str:
    """The file's text: UTF-8 (BOM optional) or UTF-16 with a BOM; one clear error otherwise."""
    start, encoding, label = 0, "utf-8", "UTF-8"
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            start, encoding, label = len(bom), codec, name
            break
    try:
        text = data[start:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise ConfigError(
            f"{p}: not {label} text (byte 0x{data[offset]:02x} at offset {offset}); "
            "save it as CSV UTF-8"
        ) from None
    if encoding == "utf-8" and "\x00" in text:  # UTF-16 without a BOM decodes as UTF-8 + NULs
        offset = data.index(b"\x00")
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x00 at offset {offset}; UTF-16 without a byte-order "
            "mark?); save it as CSV UTF-8"
        )
    return text


def _is_skipped(cells: Sequence[str]) -> bool:
    """Blank lines (also ',,,') and comment lines (first cell starting with '#')."""
    return not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#")


def _delimiter(lines: Sequence[str]) -> str:
    """Tab when the header line (the first not blank or a comment) has tabs and no comma."""
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            return "\t" if "\t" in text and "," not in text else ","
    return ","


def _unclosed_quote(
    lines: Sequence[str], first: int, last: int, delimiter: str
) -> tuple[int, int] | None:
    """(line, column) of a quoted field opened in lines ``first..last`` and still open at the
    end of line ``last`` (where the CSV reader gave up); None if there is none."""
    in_quotes, field_start, column, opened = False, True, 1, None
    for number, line in enumerate(lines[first - 1:last], start=first):
        i = 0
        while i < len(line):
            c = line[i]
            if in_quotes:
                if c == '"':
                    if line[i + 1: i + 2] == '"':
                        i += 1  # an escaped quote inside the field
                    else:
                        in_quotes = False
            elif c == '"' and field_start:
                in_quotes, opened = True, (number, column)
            elif c == delimiter:
                column += 1
            elif c in "\r\n":
                column = 1
            field_start = not in_quotes and c in (delimiter, "\r", "\n")
            i += 1
    return opened if in_quotes else None


def _read_table(path: Path, *, what: str, required: Sequence[str], lenient: bool) -> _Table:
    """Read a ``scan,group,...`` CSV carefully: every error names the file, line and column.

    Parameters
    ----------
    path : Path
        The file, named in messages as given.
    what : str
        What the file is, for messages ("the manifest", "the groups file").
    required : sequence of str
        Columns (normalised names) that must be in the header.
    lenient : bool
        Ignore columns without a name (False: an error).

    Raises
    ------
    ConfigError
        Unreadable file; not UTF-8/UTF-16 text; invalid CSV (an unclosed quote names the line
        and column where the quoted field starts); no header; a missing, unnamed (unless
        ``lenient``) or repeated column; a row with more non-empty cells than the header.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    text = _decode(path, data)
    lines = list(io.StringIO(text, newline=""))
    delimiter = _delimiter(lines)
    separator = "tab" if delimiter == "\t" else "comma"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    rows: list[_Row] = []
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if _is_skipped(cells):
                continue
            if header is None:
                header, header_line = [_norm_column(c) for c in cells], line
                _check_header(path, line, header, what, required, lenient)
                continue
            if any(c.strip() for c in cells[len(header):]):
                raise ConfigError(
                    f"{path}: line {line}: {len(cells)} cells but the header on line "
                    f"{header_line} has {len(header)} columns (a cell holding a {separator} "
                    "needs double quotes)"
                )
            rec = {col: cells[i].strip() if i < len(cells) else "" for i, col in enumerate(header)}
            rows.append(_Row(line=line, cells=rec))
    except csv.Error as exc:
        unclosed = _unclosed_quote(lines, start, reader.line_num, delimiter)
        if unclosed is not None:
            raise ConfigError(
                f"{path}: line {unclosed[0]}, column {unclosed[1]}: the quoted field starting "
                "here is never closed (a missing '\"')"
            ) from None
        raise ConfigError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise ConfigError(
            f"{path}: {what} is empty (needs a header '{','.join(required)}')"
        )
    return _Table(header=tuple(header), header_line=header_line, rows=tuple(rows))


def _check_header(
    path: Path, line: int, header: Sequence[str], what: str, required: Sequence[str],
    lenient: bool,
) -> None:
    for col in required:
        if col not in header:
            found = ", ".join(h for h in header if h) or "none"
            raise ConfigError(
                f"{path}: line {line}: {what} needs the columns '{','.join(required)}', "
                f"found {found}"
            )
    for i, col in enumerate(header):
        where = f"{path}: line {line}, column {i + 1}"
        if not col:
            if lenient:
                continue
            raise ConfigError(f"{where}: empty column name")
        if header.index(col) != i:
            raise ConfigError(f"{where}: column {col!r} appears twice")


# ---------------------------------------------------------------------------------------------
# groups file


def read_groups(path: str | Path) -> GroupTable:
    """Read a groups file: the columns ``scan`` (scan folder name) and ``group``.

    Same CSV rules as the manifest (see the module docstring); columns other than ``scan``
    and ``group`` are ignored.

    Parameters
    ----------
    path : str or Path
        The CSV file.

    Returns
    -------
    GroupTable
        Scan name -> group label, NFC-normalised, in file order; ``line(scan)`` gives the line
        a scan is on.

    Raises
    ------
    ConfigError
        One line naming the file, the line and the column: unreadable file, not UTF-8/UTF-16
        text, invalid CSV (an unclosed quote names the line where the quoted field starts),
        no header, a missing or repeated column, a row with more cells than the header, an
        empty scan or group cell, a scan listed twice, or no scan at all.

    Examples
    --------
    >>> groups = read_groups("groups.csv")  # doctest: +SKIP
    >>> groups["F01_rec"], groups.line("F01_rec")  # doctest: +SKIP
    ('sham', 2)
    """
    p = Path(path)
    what = "the groups file"
    table = _read_table(p, what=what, required=_REQUIRED, lenient=True)
    groups: dict[str, str] = {}
    lines: dict[str, int] = {}
    for row in table.rows:
        scan, group = normalize_name(row.cells["scan"]), normalize_name(row.cells["group"])
        if not scan:
            raise ConfigError(f"{p}: line {row.line}, column 'scan': empty scan name")
        if not group:
            raise ConfigError(
                f"{p}: line {row.line}, column 'group': empty group for scan {scan!r}"
            )
        if scan in groups:
            raise ConfigError(
                f"{p}: line {row.line}, column 'scan': scan {scan!r} is listed twice (first "
                f"on line {lines[scan]})"
            )
        groups[scan], lines[scan] = group, row.line
    if not groups:
        raise ConfigError(f"{p}: {what} lists no scan")
    return GroupTable(Path(os.path.abspath(p)), groups, lines)


# ---------------------------------------------------------------------------------------------
# manifest


def _parse_value(column: str, raw: str, where: str) -> Any:
    kind = OVERRIDABLE[column]
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{where}: expected a section number (a whole number), "
                              f"got {raw!r}") from None
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
        One line naming the file, the line and the column: unreadable file, not UTF-8/UTF-16
        text, invalid CSV, missing ``scan``/``group`` column, unknown or study-wide column,
        duplicate column, a row with more cells than the header, empty scan or group, a scan
        name listed twice, an invalid value, or no scan at all.
    """
    p = Path(path)
    base = base or AnalysisConfig()
    table = _read_table(p, what="the manifest", required=_REQUIRED, lenient=False)
    study_wide = [f.name for f in dataclasses.fields(AnalysisConfig) if f.name not in OVERRIDABLE]
    for i, col in enumerate(table.header):
        if col in _REQUIRED or col in OVERRIDABLE:
            continue
        where = f"{p}: line {table.header_line}, column {i + 1}"
        if col in study_wide:
            raise ConfigError(
                f"{where}: {col!r} is a study-wide setting (one per study, e.g. one threshold "
                "for all scans); give it on the command line, not per scan"
            )
        raise ConfigError(
            f"{where}: unknown column {col!r}; per-scan columns are "
            f"{', '.join(OVERRIDABLE)}"
        )
    root = Path(os.path.abspath(p)).parent
    seen: dict[str, int] = {}
    entries = [_entry(p, row.line, row.cells, root, base, seen) for row in table.rows]
    if not entries:
        raise ConfigError(f"{p}: the manifest lists no scan")
    return Manifest(path=Path(os.path.abspath(p)), entries=tuple(entries))


def _overrides(p: Path, line: int, rec: Mapping[str, str], columns: Sequence[str],
               base: AnalysisConfig) -> dict[str, Any]:
    """A row's per-scan settings (its non-empty cells of ``columns``), each checked against
    the study settings ``base`` and then all together."""
    overrides: dict[str, Any] = {}
    for col in columns:
        raw_value = rec.get(col, "")
        if not raw_value:
            continue
        where = f"{p}: line {line}, column {col!r}"
        value = _parse_value(col, raw_value, where)
        try:
            base.replace(**{col: value})
        except ConfigError as exc:
            # a VOI bound needs its partner: checked below, with the whole row
            if not (col in ("voi_first_slice", "voi_last_slice") and "both" in str(exc)):
                raise ConfigError(f"{where}: {exc}") from None
        overrides[col] = value
    try:
        base.replace(**overrides)
    except ConfigError as exc:  # settings that only fail together
        raise ConfigError(f"{p}: line {line}: {exc}") from None
    return overrides


def read_overrides(path: str | Path, base: AnalysisConfig | None = None) -> OverrideTable:
    """Read an overrides file: per scan, its VOI placed by hand (``--overrides``).

    The columns are ``scan`` (the scan's folder name) and any of :data:`VOI_OVERRIDES`:
    ``ref_slice`` (the growth-plate reference), or ``voi_first_slice`` and
    ``voi_last_slice`` (the VOI itself), as section numbers like the slice files' (and the
    ``ref_slice``, ``voi_first_slice``, ``voi_last_slice`` columns of ``morphometry.csv``);
    ``distal_end`` (first, last). An empty cell keeps the automatic placement. The CSV rules
    are those of the manifest; ``ctmorph review`` saves such a file.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    base : AnalysisConfig, optional
        The study settings the overrides are checked against (a manual VOI needs
        ``roi="auto"``).

    Returns
    -------
    OverrideTable
        Scan name -> ``{setting: value}`` (rows without any value are left out).

    Raises
    ------
    ConfigError
        One line naming the file, the line and the column: unreadable file or invalid CSV (as
        for the manifest), a column other than ``scan`` and :data:`VOI_OVERRIDES`, an empty
        scan, a scan listed twice, a value that is not a section number, a VOI bound without
        its partner, a reference together with a VOI.
    """
    p = Path(path)
    base = base or AnalysisConfig()
    table = _read_table(p, what="the overrides file", required=("scan",), lenient=False)
    for i, col in enumerate(table.header):
        if col != "scan" and col not in VOI_OVERRIDES:
            raise ConfigError(
                f"{p}: line {table.header_line}, column {i + 1}: unknown column {col!r}; an "
                f"overrides file has the columns scan, {', '.join(VOI_OVERRIDES)}"
            )
    values: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for row in table.rows:
        # a name ctmorph wrote (ctmorph review) carries csv_cell's quote against formulas
        scan = normalize_name(csv_uncell(row.cells["scan"]))
        if not scan:
            raise ConfigError(f"{p}: line {row.line}, column 'scan': empty scan name")
        if scan in lines:
            raise ConfigError(
                f"{p}: line {row.line}, column 'scan': scan {scan!r} is listed twice (first "
                f"on line {lines[scan]})"
            )
        lines[scan] = row.line
        found = _overrides(p, row.line, row.cells, VOI_OVERRIDES, base)
        if found:
            values[scan] = found
    return OverrideTable(Path(os.path.abspath(p)), values,
                         {s: n for s, n in lines.items() if s in values})


def _entry(
    p: Path, line: int, rec: dict[str, str], root: Path, base: AnalysisConfig,
    seen: dict[str, int],
) -> ManifestEntry:
    scan, group = rec["scan"], normalize_name(rec["group"])
    if not scan:
        raise ConfigError(f"{p}: line {line}, column 'scan': empty scan folder")
    if not group:
        raise ConfigError(f"{p}: line {line}, column 'group': empty group for scan {scan!r}")
    raw = Path(os.path.expanduser(scan))
    folder = Path(os.path.abspath(raw if raw.is_absolute() else root / raw))
    name = normalize_name(folder.name)
    if not name:
        raise ConfigError(f"{p}: line {line}, column 'scan': {scan!r} is not a scan folder")
    if name in seen:
        raise ConfigError(
            f"{p}: line {line}, column 'scan': scan name {name!r} is already on line "
            f"{seen[name]}; scan names (folder names) must be unique"
        )
    seen[name] = line
    overrides = _overrides(p, line, rec, list(OVERRIDABLE), base)
    return ManifestEntry(name=name, folder=folder, group=group, overrides=overrides, line=line)
