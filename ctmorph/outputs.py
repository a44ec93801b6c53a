"""What a run writes, and when a finished scan may be reused.

Per scan, ``OUT/<scan>/`` holds the thickness maps (``--save-maps``), the QC pictures and,
written last, ``morphometry.json``: the scan's row, every detail, and the list of files the scan
wrote. ``morphometry.json`` is the scan's completion marker: it is removed before a scan is
(re)computed and written only after everything else, so a scan interrupted half-way (a kill,
a full disk) never counts as finished. A later run reuses the scan only when its marker says the
inputs, settings and threshold are unchanged and every file it lists is still there.

Every table is written atomically; text cells are neutralised for spreadsheets
(:func:`ctmorph.textsafe.csv_cell`), numbers are written with ``repr`` (round trip).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from .columns import COLUMN_BY_NAME, order_columns
from .pipeline import ScanResult
from .textsafe import csv_cell, lf_record_ends

__all__ = [
    "MARKER",
    "write_table",
    "write_columns",
    "json_text",
    "write_scan_outputs",
    "invalidate",
    "finished_result",
]

logger = logging.getLogger(__name__)

#: The per-scan completion marker (and record of everything about the scan).
MARKER = "morphometry.json"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        return "" if not math.isfinite(value) else repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return csv_cell(str(value))


def write_table(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write rows as CSV atomically, columns in registry order (union of all rows' keys).

    Text cells that a spreadsheet would run as a formula are neutralised
    (:func:`ctmorph.textsafe.csv_cell`); numbers are written exactly (``repr``).
    """
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    cols = order_columns(names)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # quotes a CR in a cell; see lf_record_ends
    w.writerow([csv_cell(c) for c in cols])
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in cols])
    atomic_write_text(path, lf_record_ends(buf.getvalue()))


def write_columns(names: Sequence[str], path: Path) -> None:
    """``columns.csv``: column, unit, description and reference of each name, atomically."""
    rows = []
    for n in names:
        c = COLUMN_BY_NAME.get(n)
        rows.append({"column": n, "unit": c.unit if c else "",
                     "description": c.description if c else "",
                     "reference": c.reference if c else ""})
    write_table(rows, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON (numpy scalars and arrays, paths allowed)."""
    return json.dumps(payload, indent=2, default=_json_default)


def invalidate(folder: Path) -> None:
    """Remove a scan's completion marker before it is (re)computed."""
    with contextlib.suppress(FileNotFoundError):
        (folder / MARKER).unlink()


def write_scan_outputs(res: ScanResult, folder: Path, *, write_qc: bool,
                       extra: Mapping[str, Any] | None = None) -> None:
    """Write a scan's maps and QC pictures, then its ``morphometry.json`` (the marker), last.

    Parameters
    ----------
    res : ScanResult
        The measured scan.
    folder : Path
        ``OUT/<scan>``.
    write_qc : bool
        Write the QC pictures (recorded in the marker, so a later run that wants them does
        not reuse a scan run without).
    extra : mapping, optional
        More entries of the JSON (fingerprint, settings key, manifest provenance).

    Raises
    ------
    OutputError
        A file cannot be written; the scan then has no marker and is not finished.
    """
    invalidate(folder)
    written: list[Path] = []
    if res.maps:
        import tifffile

        um = float(res.row["voxel_um"])
        for name, m in res.maps.items():
            target = folder / "maps" / f"{name}.tif"
            with atomic_path(target) as tmp:
                # ImageJ hyperstack with the voxel size, values in mm
                tifffile.imwrite(
                    tmp, m.astype(np.float32), imagej=True,
                    resolution=(1000.0 / um, 1000.0 / um),
                    metadata={"spacing": um / 1000.0, "unit": "mm", "axes": "ZYX"},
                )
            written.append(target)
    if write_qc and res.qc is not None:
        from .qc import write_qc_pictures

        written += write_qc_pictures(res.qc, folder / "qc", res.row["scan"])
    payload = {
        "row": res.row, **res.details, **(extra or {}),
        "qc": bool(write_qc and res.qc is not None),
        "outputs": sorted(p.relative_to(folder).as_posix() for p in written),
    }
    atomic_write_text(folder / MARKER, json_text(payload))


def finished_result(folder: Path, *, fingerprint: str, settings_key: str, write_qc: bool,
                    input_hash: str | None = None) -> dict[str, Any] | None:
    """The stored ``morphometry.json`` of a finished scan that may be reused, else None.

    Reusable when the marker is readable, its row is ``ok``, its input fingerprint and settings
    key equal the given ones, every file it lists exists, it has QC pictures when
    ``write_qc`` asks for them, and (when ``input_hash`` is given, ``--verify-inputs``) the
    content hash of the inputs is unchanged.
    """
    path = folder / MARKER
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    row = info.get("row") if isinstance(info, dict) else None
    if not isinstance(row, dict) or row.get("status") != "ok":
        return None
    if info.get("fingerprint") != fingerprint or info.get("settings_key") != settings_key:
        return None
    if write_qc and not info.get("qc"):
        return None
    outputs = info.get("outputs")
    if not isinstance(outputs, list) or not all((folder / p).is_file() for p in outputs):
        return None
    if input_hash is not None and info.get("input_hash") != input_hash:
        logger.info("%s: the content of its input files changed: recomputing", row.get("scan"))
        return None
    return info
