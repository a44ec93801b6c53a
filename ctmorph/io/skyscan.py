"""Bruker SkyScan / NRecon reconstruction folders: log parser, slice discovery, lazy loading.

A reconstruction folder holds one slice image per section, ``<prefix><index>.<ext>``, the
reconstruction log ``<prefix>.log`` and a ``<prefix>_spr.bmp`` preview. :func:`read_scan`
finds and validates all of it from the file headers only; pixels are read on demand.

Facts this module relies on (docs/DESIGN.md §5): the log is INI-like Windows text (CRLF, cp1252
possible) whose keys repeat across sections ([Reconstruction] ``Pixel Size (um)`` is the voxel
size, [Acquisition] ``Image Pixel Size (um)`` the projection pixel); old NRecon misspells
``Mininum for CS to Image Conversion`` and has no [File name convention]; logs get renamed and
prefixes anonymised, so the folder listing is the final word on which files are slices; the bit
depth comes from the slice files, never from the log's ``Depth (bits)`` (the projections').
"""


from __future__ import annotations

import hashlib
import logging
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ScanError
from ..spacing import normalize_spacing
from .log import SkyscanLog, lenient_number, parse_log
from .names import IMAGE_RE, PREVIEW_RE
from .slices import (
    dominant_series,
    read_header,
    read_pixels,
    series_for_prefix,
)

__all__ = ["SkyscanLog", "parse_log", "Scan", "read_scan", "find_scan_dirs", "scan_name",
           "normalize_name"]

logger = logging.getLogger(__name__)

StrPath = str | PathLike[str]

_HASH_CHUNK = 1 << 20



# ---------------------------------------------------------------------------------------------
# Scan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Scan:
    """A reconstruction folder: metadata and slice list; pixels are read on demand.

    Built by :func:`read_scan`, which validates the folder from the file headers.

    Attributes
    ----------
    path : pathlib.Path
        The folder.
    name : str
        Folder name (the scan name).
    log : SkyscanLog or None
        The reconstruction log, None for a plain image stack.
    voxel_size_um : float
        Isotropic voxel size in µm.
    files : tuple of pathlib.Path
        Slice files in ascending section order.
    sections : (Z,) ndarray of int64
        Section number of each file, from the file names (contiguous).
    shape : (int, int, int)
        ``(nz, ny, nx)`` in voxels.
    dtype : numpy.dtype
        ``uint8`` or ``uint16``, from the files.
    cs_window : (float, float) or None
        Attenuation values (NRecon units) mapped to grey 0 and to ``gmax``.
    no_data_zero : bool
        True for ``ON_ROUND`` reconstructions: exact zeros are "no data".
    prefix : str
        Slice file prefix as found in the folder.
    file_type : str
        Slice file extension (``'bmp'``, ``'tif'``, ``'png'``, ``'jpg'``).
    no_log_reason : str or None
        Without a reconstruction log (:attr:`log` None): why, e.g. ``'no .log file'`` or
        ``'<folder>/F01.log: has no [Reconstruction] section'`` (each ``.log`` file found and
        why it was not used, separated by ``'; '``). None when a log was used.
    """

    path: Path
    name: str
    log: SkyscanLog | None
    voxel_size_um: float
    files: tuple[Path, ...]
    sections: np.ndarray
    shape: tuple[int, int, int]
    dtype: np.dtype
    cs_window: tuple[float, float] | None
    no_data_zero: bool
    prefix: str = ""
    file_type: str = ""
    voxel_size_source: str = "log"
    no_log_reason: str | None = None

    def __repr__(self) -> str:
        nz, ny, nx = self.shape
        return (
            f"Scan({self.name!r}, {nz} slices of {ny}x{nx} {self.dtype}, "
            f"{self.voxel_size_um:g} um, sections {self.sections[0]}..{self.sections[-1]})"
        )

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing ``(dz, dy, dx)`` in mm (isotropic)."""
        return normalize_spacing(self.voxel_size_um / 1000.0)  # type: ignore[return-value]

    @property
    def gmax(self) -> int:
        """Largest grey value of the bit depth: 255 (uint8) or 65535 (uint16)."""
        return int(np.iinfo(self.dtype).max)

    def read_slice(self, i: int) -> np.ndarray:
        """Read slice ``i`` (0-based position in :attr:`files`, not the section number).

        Returns
        -------
        (Y, X) ndarray of :attr:`dtype`
            Grey values; BMP palettes and RGB are collapsed to grey.

        Raises
        ------
        IndexError
            If ``i`` is outside ``0..nz-1``.
        ScanError
            If the file is unreadable, or its size or bit depth differs from the scan's.
        """
        nz = self.shape[0]
        if not -nz <= i < nz:
            raise IndexError(f"slice {i} out of range for {self.name} ({nz} slices)")
        path = self.files[i]
        try:
            arr = read_pixels(path)
        except Exception as exc:  # any decoder failure means a bad slice file
            raise ScanError(f"{path}: cannot read slice ({exc})") from None
        if arr.shape != self.shape[1:]:
            raise ScanError(
                f"{path}: slice is {_size(arr.shape)} pixels, expected {_size(self.shape[1:])}"
            )
        if arr.dtype != self.dtype:
            raise ScanError(f"{path}: slice is {arr.dtype}, expected {self.dtype}")
        return arr

    def read_slab(self, start: int, stop: int) -> np.ndarray:
        """Read slices ``start`` .. ``stop - 1`` (0-based positions).

        Returns
        -------
        (stop - start, Y, X) ndarray of :attr:`dtype`
        """
        nz, ny, nx = self.shape
        if not 0 <= start <= stop <= nz:
            raise IndexError(f"slab {start}:{stop} out of range for {self.name} ({nz} slices)")
        out = np.empty((stop - start, ny, nx), dtype=self.dtype)
        for k in range(start, stop):
            out[k - start] = self.read_slice(k)
        return out

    def read_volume(self) -> np.ndarray:
        """Read every slice.

        Returns
        -------
        (Z, Y, X) ndarray of :attr:`dtype`
        """
        return self.read_slab(0, self.shape[0])

    def input_hash(self) -> str:
        """``'sha256:<hex>'`` over the log's bytes, then every slice file's bytes in order."""
        digest = hashlib.sha256()
        paths = ([self.log.path] if self.log is not None and self.log.path else []) + list(
            self.files
        )
        for path in paths:
            try:
                with open(path, "rb") as fh:
                    while chunk := fh.read(_HASH_CHUNK):
                        digest.update(chunk)
            except OSError as exc:
                raise ScanError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return f"sha256:{digest.hexdigest()}"

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary of the folder, for ``ctmorph inspect`` and provenance.

        Returns
        -------
        dict
            ``scan``, ``path``, ``scanner``, ``voxel_size_um`` (µm) and its ``voxel_size_source``
            (``'log'`` or ``'argument'``), ``n_slices``, ``first_section``, ``last_section``,
            ``gaps`` (always empty: gaps are errors), ``slice_shape`` ``[ny, nx]``, ``dtype``,
            ``bit_depth``, ``file_type``, ``file_pattern``, ``cs_window``, ``round_roi``,
            ``log`` (path or None), ``settings`` (:meth:`SkyscanLog.settings`, empty without log).
        """
        digits = len(self.files[0].name) - len(self.prefix) - len(self.files[0].suffix)
        return {
            "scan": self.name,
            "path": str(self.path),
            "scanner": self.log.scanner if self.log is not None else None,
            "voxel_size_um": self.voxel_size_um,
            "voxel_size_source": self.voxel_size_source,
            "n_slices": self.shape[0],
            "first_section": int(self.sections[0]),
            "last_section": int(self.sections[-1]),
            "gaps": [],
            "slice_shape": [self.shape[1], self.shape[2]],
            "dtype": str(self.dtype),
            "bit_depth": self.dtype.itemsize * 8,
            "file_type": self.file_type,
            "file_pattern": f"{self.prefix}{'#' * digits}{self.files[0].suffix}",
            "cs_window": list(self.cs_window) if self.cs_window is not None else None,
            "round_roi": self.no_data_zero,
            "log": str(self.log.path) if self.log is not None and self.log.path else None,
            "settings": self.log.settings() if self.log is not None else {},
        }


def _size(shape: Sequence[int]) -> str:
    """'<height>x<width>' of an array shape."""
    return "x".join(str(n) for n in shape[-2:])


def _list_folder(folder: Path) -> list[Path]:
    """Sorted entries of an existing folder (files and subfolders)."""
    if not folder.exists():
        raise ScanError(f"{folder}: scan folder does not exist")
    if not folder.is_dir():
        raise ScanError(f"{folder}: is not a folder")
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise ScanError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None


def _is_slice_name(name: str) -> bool:
    """``<prefix><digits>.<image ext>`` and not a ``*_spr`` preview."""
    return bool(IMAGE_RE.match(name)) and not PREVIEW_RE.search(name)


def _slice_candidates(entries: Sequence[Path]) -> list[Path]:
    return [p for p in entries if _is_slice_name(p.name)]


def _reconstruction_logs(entries: Sequence[Path]) -> tuple[list[SkyscanLog], list[str]]:
    """The reconstruction logs among ``entries``, and why each other ``.log`` was not one."""
    logs, ignored = [], []
    for path in entries:
        if path.suffix.lower() != ".log":
            continue
        try:
            log = parse_log(path)
        except ScanError as exc:
            logger.warning("ignoring %s", exc)
            ignored.append(str(exc))
            continue
        problem = log.reconstruction_problem
        if problem is None:
            logs.append(log)
        else:
            logger.debug("%s: not a reconstruction log: %s; ignored", path, problem)
            ignored.append(f"{path}: {problem}")
    return logs, ignored


def _expected_prefix(log: SkyscanLog) -> str | None:
    """Slice prefix the log announces: [File name convention], else [Acquisition] + '_rec'."""
    if log.prefix:
        return log.prefix
    acquisition_prefix = log.get("Acquisition", "Filename Prefix")
    return f"{acquisition_prefix}_rec" if acquisition_prefix else None


def _log_rank(log: SkyscanLog) -> tuple[bool, bool, bool]:
    name = log.path.name.lower() if log.path else ""
    prefix = (_expected_prefix(log) or "").lower()
    return (name == f"{prefix}.log", name.endswith("_rec.log"), log.prefix is not None)


def _choose_series(
    folder: Path, entries: Sequence[Path], logs: Sequence[SkyscanLog]
) -> tuple[SkyscanLog | None, str, str, list[tuple[int, Path]]]:
    """Pick the reconstruction log (of ``logs``) and the slice series it describes."""
    images = _slice_candidates(entries)
    if not images:
        raise ScanError(f"{folder}: no slice images (<prefix><number>.bmp/tif/png/jpg) found")
    # Best-named logs first: '<prefix>.log', then '*_rec.log', then others, by file name.
    logs = sorted(logs, key=_log_rank, reverse=True)

    # Each series of slice files named by a log, with the best-named log describing it.
    matched: dict[tuple[str, str], tuple[SkyscanLog, tuple[str, str, list[tuple[int, Path]]]]]
    matched = {}
    for log in logs:
        prefix = _expected_prefix(log)
        series = series_for_prefix(prefix, images, log.result_file_type) if prefix else None
        if series is not None:
            matched.setdefault(series[:2], (log, series))
    candidates = list(matched.values())
    if len(candidates) > 1:
        own_prefix = f"{folder.resolve().name}_rec".lower()
        candidates = [c for c in candidates if c[1][0].lower() == own_prefix]
        if len(candidates) != 1:
            names = ", ".join(f"{p}*.{e}" for p, e in matched)
            raise ScanError(f"{folder}: several reconstructions in one folder ({names})")
    if candidates:
        log, (prefix, ext, members) = candidates[0]
        return log, prefix, ext, members

    log = logs[0] if logs else None
    if len(logs) > 1:
        logger.warning(
            "%s: %d reconstruction logs and none names the slice files; using %s",
            folder,
            len(logs),
            log.path.name if log and log.path else None,
        )
    prefix, ext, members = dominant_series(folder, images, log)
    if log is not None:
        logger.warning(
            "%s: log prefix %r matches no files (renamed or anonymised); using %s*.%s (%d files)",
            log.path,
            _expected_prefix(log),
            prefix,
            ext,
            len(members),
        )
    return log, prefix, ext, members


def normalize_name(text: str) -> str:
    """A scan or group name in Unicode NFC, so that its composed and decomposed spellings
    (``é`` as one code point or as ``e`` + accent, as macOS file names have it) are one name."""
    return unicodedata.normalize("NFC", text)


def scan_name(path: StrPath) -> str:
    """The name of the scan in folder ``path``: the folder's name as given (a symbolic link's
    own name, not its target's; ``.`` is the current folder's name), in NFC.

    Raises
    ------
    ScanError
        For a path without a name (the file-system root).
    """
    name = normalize_name(Path(os.path.abspath(path)).name)
    if not name:
        raise ScanError(f"{path}: a scan folder needs a name (the file-system root has none)")
    return name


def read_scan(path: StrPath, *, voxel_size_um: float | None = None) -> Scan:
    """Open an NRecon reconstruction folder (or a plain image stack) without reading pixels.

    Parameters
    ----------
    path : str or path
        The folder holding the slice files.
    voxel_size_um : float, optional
        Voxel size in µm. Required for a folder without a reconstruction log; when the log
        also has one, this value wins (with a warning if they differ).

    Returns
    -------
    Scan

    Raises
    ------
    ScanError
        One line naming the folder or file and the problem: folder missing, empty or without
        slices; several reconstructions in one folder; a gap in the section numbering; slices of
        different size or bit depth; an unreadable slice header; no voxel size.

    Notes
    -----
    The log is ``<prefix>.log``, else a ``*_rec.log``, else any ``.log`` whose [Reconstruction]
    section describes a reconstruction (scan and sub-scan logs are ignored). Slices are
    ``<prefix><index>.<ext>`` with the log's prefix; when no file has that prefix (renamed or
    anonymised logs) the largest series of ``<name><digits>.<ext>`` files is used. ``*_spr.bmp``
    previews are never slices.
    """
    folder = Path(path)
    listing = _list_folder(folder)
    if not listing:
        raise ScanError(f"{folder}: scan folder is empty")
    entries = [p for p in listing if p.is_file()]
    if not _has_slices(entries) and any(p.is_dir() for p in listing):
        raise ScanError(
            f"{folder}: no slice images in this folder, only subfolders "
            "(pass the scan folders, or expand a parent with find_scan_dirs)"
        )
    logs, ignored_logs = _reconstruction_logs(entries)
    log, prefix, ext, members = _choose_series(folder, entries, logs)
    no_log_reason = None if log is not None else "; ".join(ignored_logs) or "no .log file"

    members.sort(key=lambda m: m[0])
    sections = np.array([s for s, _ in members], dtype=np.int64)
    files = tuple(p for _, p in members)
    _check_sections(folder, prefix, ext, sections, files, log)

    voxel, source = _voxel_size(folder, log, voxel_size_um, no_log_reason)

    (ny, nx), dtype = read_header(files[0])
    for other in files[1:]:
        shape_k, dtype_k = read_header(other)
        if shape_k != (ny, nx):
            raise ScanError(
                f"{other}: slice is {_size(shape_k)} pixels but {files[0].name} is {ny}x{nx}"
            )
        if dtype_k != dtype:
            raise ScanError(f"{other}: slice is {dtype_k} but {files[0].name} is {dtype}")

    cs_window = None
    no_data_zero = False
    if log is not None:
        _check_log_agrees(log, ext, (ny, nx))
        if log.cs_min is not None and log.cs_max is not None:
            cs_window = (log.cs_min, log.cs_max)
        no_data_zero = log.round_roi

    sections.flags.writeable = False
    return Scan(
        path=folder,
        name=scan_name(folder),
        log=log,
        voxel_size_um=voxel,
        files=files,
        sections=sections,
        shape=(len(files), ny, nx),
        dtype=np.dtype(dtype),
        cs_window=cs_window,
        no_data_zero=no_data_zero,
        prefix=prefix,
        file_type=ext,
        voxel_size_source=source,
        no_log_reason=no_log_reason,
    )


def _log_int(log: SkyscanLog, key: str) -> int | None:
    """[Reconstruction] integer used only for consistency checks; None if absent or not a number."""
    value = lenient_number(log.get("Reconstruction", key), int)
    return value if isinstance(value, int) else None


def _check_sections(
    folder: Path,
    prefix: str,
    ext: str,
    sections: np.ndarray,
    files: Sequence[Path],
    log: SkyscanLog | None,
) -> None:
    dup = np.flatnonzero(np.diff(sections) == 0)
    if dup.size:
        k = int(dup[0])
        raise ScanError(
            f"{folder}: section {sections[k]} appears twice ({files[k].name}, {files[k + 1].name})"
        )
    first, last = int(sections[0]), int(sections[-1])
    if last - first + 1 != sections.size:
        present = set(sections.tolist())
        missing = [s for s in range(first, last + 1) if s not in present]
        shown = ", ".join(str(s) for s in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise ScanError(
            f"{folder}: {len(missing)} slice(s) missing in {prefix}*.{ext} sections "
            f"{first}..{last}: {shown}"
        )
    if log is None:
        return
    step = _log_int(log, "Section to Section Step")
    if step is not None and step != 1:
        raise ScanError(
            f"{log.path}: Section to Section Step={step} is not supported (slices must be "
            "contiguous, step 1)"
        )
    log_first, log_last = _log_int(log, "First Section"), _log_int(log, "Last Section")
    if (log_first is not None and log_first != first) or (
        log_last is not None and log_last != last
    ):
        logger.warning(
            "%s: log says sections %s..%s, the folder holds %d..%d; using the files",
            log.path,
            log_first,
            log_last,
            first,
            last,
        )


def _voxel_size(
    folder: Path, log: SkyscanLog | None, override: float | None, no_log_reason: str | None
) -> tuple[float, str]:
    from_log = log.voxel_size_um if log is not None else None
    if override is not None:
        value = float(override)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"voxel size must be positive and finite (µm), got {override!r}")
        if from_log is not None and not math.isclose(value, from_log, rel_tol=1e-9):
            logger.warning(
                "%s: voxel size %g um given explicitly overrides the log's %g um",
                folder,
                value,
                from_log,
            )
        return value, "argument"
    if from_log is None:
        if log is not None:
            raise ScanError(
                f"{log.path}: no 'Pixel Size (um)' in [Reconstruction]; pass --voxel-size"
            )
        raise ScanError(
            f"{folder}: has no reconstruction log ({no_log_reason}); pass --voxel-size"
        )
    if from_log <= 0:
        raise ScanError(f"{log.path}: [Reconstruction] Pixel Size (um)={from_log} is not positive")
    return from_log, "log"


def _check_log_agrees(log: SkyscanLog, ext: str, shape: tuple[int, int]) -> None:
    if log.result_file_type and log.result_file_type != ext:
        logger.warning(
            "%s: log says %s slices, the folder holds %s", log.path, log.result_file_type, ext
        )
    width = _log_int(log, "Result Image Width (pixels)")
    height = _log_int(log, "Result Image Height (pixels)")
    if (width, height) != (None, None) and (height, width) != shape:
        logger.warning(
            "%s: log says %sx%s pixels, slices are %s", log.path, height, width, _size(shape)
        )


def _has_slices(entries: Sequence[Path]) -> bool:
    return any(_is_slice_name(p.name) and p.is_file() for p in entries)


def find_scan_dirs(paths: StrPath | Sequence[StrPath]) -> list[Path]:
    """Expand command-line paths into scan folders.

    Parameters
    ----------
    paths : path or sequence of paths
        Each is a scan folder (it holds slice images) or a parent folder whose immediate
        subfolders are scan folders.

    Returns
    -------
    list of pathlib.Path
        Scan folders in argument order, subfolders of a parent sorted by name, duplicates
        dropped.

    Raises
    ------
    ScanError
        If a path does not exist, is not a folder, or holds no scan.
    """
    if isinstance(paths, str | PathLike):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        entries = _list_folder(path)
        if _has_slices(entries):
            scans = [path]
        else:
            scans = [d for d in entries if d.is_dir() and _has_slices(_list_folder(d))]
            if not scans:
                raise ScanError(
                    f"{path}: holds no scan (no slice images in it or its immediate subfolders)"
                )
        for scan in scans:
            key = scan.resolve()
            if key not in seen:
                seen.add(key)
                found.append(scan)
    return found
