"""Table writers: CSV, Markdown and an Excel workbook, all written atomically."""

from __future__ import annotations

import importlib.util
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import atomic_path, atomic_write_text
from ..errors import CtmorphError

__all__ = ["csv_text", "markdown_table", "format_value", "require_openpyxl", "write_workbook"]

_P_COLUMNS = {"p", "p_adj", "p_adj_vs_control", "p_adj_vs_model"}


def csv_text(df: pd.DataFrame) -> str:
    """CSV with ``\\n`` line ends and 10 significant digits (round-trips the statistics)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    return buf.getvalue()


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


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def markdown_table(df: pd.DataFrame, title: str = "") -> str:
    """A GitHub-flavoured Markdown table of ``df`` (cells formatted by :func:`format_value`)."""
    lines = [f"## {title}", ""] if title else []
    if df.empty:
        return "\n".join(lines + ["(no rows)", ""])
    cols = list(df.columns)
    lines.append("| " + " | ".join(_md_cell(str(c)) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in df.itertuples(index=False):
        cells = [_md_cell(format_value(v, c)) for v, c in zip(row, cols, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(df: pd.DataFrame, path: Path, title: str) -> None:
    """Write one table as a Markdown file."""
    atomic_write_text(path, f"# {title}\n\n" + markdown_table(df))


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


def write_workbook(tables: Mapping[str, pd.DataFrame], path: Path) -> None:
    """One sheet per table, bold frozen header, numbers as numbers.

    Text cells are always stored as text: a scan or group name starting with ``=`` cannot
    become a formula.
    """
    require_openpyxl()
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
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
    with atomic_path(path) as tmp:
        wb.save(tmp)
