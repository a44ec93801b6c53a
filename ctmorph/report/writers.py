"""Table writers: CSV, Markdown and an Excel workbook, all written atomically."""

from __future__ import annotations

import datetime
import importlib.util
import io
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import atomic_path, atomic_write_text
from ..errors import CtmorphError
from ..textsafe import csv_cell, lf_record_ends, markdown_text

__all__ = ["ZIP_EPOCH", "csv_text", "markdown_table", "format_value", "require_openpyxl",
           "write_workbook"]

#: The fixed time stamped into ``report.xlsx`` (its properties and ZIP members): the ZIP
#: format's earliest date, so the same tables always give the same bytes.
ZIP_EPOCH = datetime.datetime(1980, 1, 1)

_P_COLUMNS = {"p", "p_adj", "p_adj_vs_control", "p_adj_vs_model"}


def csv_text(df: pd.DataFrame) -> str:
    """CSV with ``\\n`` line ends and 10 significant digits (round-trips the statistics).

    Every text cell goes through :func:`~ctmorph.textsafe.csv_cell`, so a group called
    ``=HYPERLINK(...)`` is not a formula in a spreadsheet (read it back with
    :func:`~ctmorph.report.data.uncell_text_cells`); numbers are written as numbers.
    """
    safe = df.copy()
    for col in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[col]):  # bool columns are numeric too
            safe[col] = safe[col].map(lambda v: csv_cell(v) if isinstance(v, str) else v)
    # Python's csv writer quotes a field for the characters of its line terminator only: with
    # "\n" a carriage return inside a name would end the row. Write "\r\n" (fields holding
    # either are quoted), then end the records, outside quoted fields, with "\n".
    buf = io.StringIO()
    safe.to_csv(buf, index=False, lineterminator="\r\n", float_format="%.10g")
    return lf_record_ends(buf.getvalue())


def format_value(value: Any, column: str = "") -> str:
    """Human-readable cell: 4 significant digits, p-values as ``<0.001`` or 3 digits."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else ""
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return ""
        if column in _P_COLUMNS:
            return "<0.001" if v < 0.001 else f"{v:.3f}"
        if v == int(v) and abs(v) < 1e6 and column in {"n", "df1", "df2", "n_missing"}:
            return str(int(v))
        return f"{v:.4g}"
    return str(value)


def _md_cell(value: Any, column: str) -> str:
    """A Markdown table cell: numbers as :func:`format_value` writes them, text escaped."""
    text = format_value(value, column)
    if isinstance(value, int | float | np.number | bool | np.bool_) or value is None:
        return text
    return markdown_text(text)


def markdown_table(df: pd.DataFrame, title: str = "") -> str:
    """A GitHub-flavoured Markdown table of ``df``.

    Numbers are formatted by :func:`format_value`; the title, the header and every text cell
    go through :func:`~ctmorph.textsafe.markdown_text` (no links, HTML or table breaks from
    a scan or group name).
    """
    lines = [f"## {markdown_text(title)}", ""] if title else []
    if df.empty:
        return "\n".join(lines + ["(no rows)", ""])
    cols = list(df.columns)
    lines.append("| " + " | ".join(markdown_text(str(c)) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in df.itertuples(index=False):
        cells = [_md_cell(v, c) for v, c in zip(row, cols, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(df: pd.DataFrame, path: Path, title: str) -> None:
    """Write one table as a Markdown file."""
    atomic_write_text(path, f"# {markdown_text(title)}\n\n" + markdown_table(df))


def require_openpyxl() -> None:
    """Raise a one-line error when the Excel writer (openpyxl) is not installed."""
    if importlib.util.find_spec("openpyxl") is None:
        raise CtmorphError(
            "the Excel workbook report/report.xlsx needs the 'openpyxl' package, which is not "
            "installed: pip install openpyxl (or switch the workbook off)"
        )


def _sheet_name(name: str, used: set[str]) -> str:
    base = "".join("_" if c in "[]:*?/\\" else c for c in name)[:31] or "sheet"
    out, k = base, 1
    while out in used:
        k += 1
        out = f"{base[:28]}_{k}"
    used.add(out)
    return out


def _reproducible_zip(data: bytes, target: Path) -> None:
    """Copy a ZIP archive into ``target`` with every member dated :data:`ZIP_EPOCH`.

    Members keep their order, names, data and permission bits and are deflated again, so the
    same content gives the same bytes whenever and wherever it is written.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for old in src.infolist():
            info = zipfile.ZipInfo(old.filename, date_time=ZIP_EPOCH.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = old.external_attr
            info.create_system = 3  # Unix, whatever the platform
            dst.writestr(info, src.read(old))


def write_workbook(tables: Mapping[str, pd.DataFrame], path: Path) -> None:
    """One sheet per table, bold frozen header, numbers as numbers.

    Text cells are always stored as text: a scan or group name starting with ``=`` cannot
    become a formula.

    The same tables give the same bytes: the workbook's created and modified properties
    and the date of every member of the ZIP container are :data:`ZIP_EPOCH`
    (1980-01-01 00:00, the earliest date a ZIP file can hold), not the time of writing.
    """
    require_openpyxl()
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter
    from openpyxl.writer.excel import ExcelWriter

    wb = Workbook()
    # openpyxl stamps both with the current time; save_workbook() would restamp "modified",
    # hence ExcelWriter below
    wb.properties.created = wb.properties.modified = ZIP_EPOCH
    wb.remove(wb.active)
    used: set[str] = set()
    for name, df in tables.items():
        ws = wb.create_sheet(_sheet_name(name, used))
        cols = list(df.columns)
        for j, c in enumerate(cols, start=1):
            cell = ws.cell(row=1, column=j, value=str(c))
            cell.data_type = "s"
            cell.font = Font(bold=True)
        for i, row in enumerate(df.itertuples(index=False), start=2):
            for j, v in enumerate(row, start=1):
                if v is None or (isinstance(v, float | np.floating) and math.isnan(v)):
                    continue
                if isinstance(v, bool | np.bool_):
                    ws.cell(row=i, column=j, value=bool(v))
                elif isinstance(v, int | np.integer | float | np.floating):
                    ws.cell(row=i, column=j, value=v.item() if hasattr(v, "item") else v)
                else:
                    text = ILLEGAL_CHARACTERS_RE.sub("\uFFFD", str(v))
                    cell = ws.cell(row=i, column=j, value=text)
                    cell.data_type = "s"
        ws.freeze_panes = "A2"
        for j, c in enumerate(cols, start=1):
            width = max([len(str(c))] + [len(format_value(v, c)) for v in df[c].head(200)])
            ws.column_dimensions[get_column_letter(j)].width = min(50, max(8, width + 2))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).save()
    with atomic_path(path) as tmp:
        _reproducible_zip(buf.getvalue(), tmp)
