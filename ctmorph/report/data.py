"""Reading an analysis folder: the results table, per-scan JSON, run info and QC pictures."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..columns import MORPHOMETRY_PARAMETERS
from ..errors import ConfigError
from ..textsafe import csv_uncell

__all__ = [
    "NO_GROUP",
    "load_results",
    "read_scan_table",
    "uncell_text_cells",
    "group_order",
    "parameters",
    "empty_parameters",
    "group_samples",
    "load_run_info",
    "load_scan_details",
    "qc_pictures",
]

logger = logging.getLogger(__name__)

#: Label shown for scans that carry no group.
NO_GROUP = "(no group)"


def uncell_text_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Apply :func:`~ctmorph.textsafe.csv_uncell` to every text cell of a table, in place.

    ``ctmorph analyze`` writes text cells through :func:`~ctmorph.textsafe.csv_cell`
    (``=X`` as ``'=X``); this gives back the names as they were. Numbers and missing cells
    are left alone, and a file written without the escape reads as before.

    Parameters
    ----------
    df : DataFrame
        As parsed by :func:`pandas.read_csv`.

    Returns
    -------
    DataFrame
        ``df`` itself.
    """
    for col in df.columns:
        if pd.api.types.is_numeric_dtype(df[col]):
            continue
        quoted = np.array([isinstance(v, str) and v.startswith("'") for v in df[col]], bool)
        if quoted.any():  # only those can change; the column keeps its dtype
            df.loc[quoted, col] = [csv_uncell(v) for v in df.loc[quoted, col]]
    return df


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """Read ``OUT/morphometry.csv``.

    Parameters
    ----------
    out_dir : str or Path
        Analysis folder written by ``ctmorph analyze``.

    Returns
    -------
    DataFrame
        One row per scan; ``scan``, ``group`` and ``status`` are strings (an empty group
        becomes ``"(no group)"``), parameters are numeric where they parse. Text cells are
        unescaped (:func:`uncell_text_cells`): a group written as ``'=X`` is ``=X``.

    Raises
    ------
    ConfigError
        Naming the file, when it is missing, unreadable or lacks ``scan``/``status``.
    """
    path = Path(out_dir) / "morphometry.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run 'ctmorph analyze ... -o {out_dir}' first")
    return read_scan_table(path, "morphometry", ("scan", "status"))


def read_scan_table(path: Path, what: str, required: Sequence[str],
                    numeric: Sequence[str] = ()) -> pd.DataFrame:
    """A per-scan table written by ``ctmorph analyze`` (``morphometry.csv``,
    ``sensitivity.csv``): text cells unescaped, ``scan``/``status``/``group`` (empty:
    ``"(no group)"``) and ``error`` (when present) as strings, the parameters and the
    ``numeric`` columns as numbers where they parse.

    Raises
    ------
    ConfigError
        Naming the file, when it is unreadable (``not a readable <what> table``) or lacks one
        of the ``required`` columns.
    """
    try:
        df = pd.read_csv(path, keep_default_na=True,
                         dtype={"scan": str, "group": str, "status": str, "error": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable {what} table ({exc})") from None
    uncell_text_cells(df)
    for col in required:
        if col not in df.columns:
            raise ConfigError(f"{path}: column {col!r} is missing")
    if "group" not in df.columns:
        df["group"] = ""
    df["scan"] = df["scan"].fillna("").astype(str)
    df["status"] = df["status"].fillna("").astype(str).str.strip()
    df["group"] = df["group"].fillna("").astype(str).replace("", NO_GROUP)
    if "error" in df.columns:
        df["error"] = df["error"].fillna("").astype(str)
    for p in [*MORPHOMETRY_PARAMETERS, *numeric]:
        if p in df.columns:
            df[p] = pd.to_numeric(df[p], errors="coerce")
    return df


def group_order(groups: Sequence[str], control: str | None = None,
                model: str | None = None) -> list[str]:
    """Groups in display order: control, then model, then the rest in order of appearance."""
    seen: list[str] = []
    for g in groups:
        if g not in seen:
            seen.append(g)
    for first in (model, control):  # control ends up first, model second
        if first is not None and first in seen:
            seen.remove(first)
            seen.insert(0, first)
    return seen


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def parameters(df: pd.DataFrame) -> list[str]:
    """Registry parameters with at least one value among the successful scans, in order."""
    ok = _ok(df)
    return [p for p in MORPHOMETRY_PARAMETERS if p in ok.columns and ok[p].notna().any()]


def empty_parameters(df: pd.DataFrame) -> list[str]:
    """Registry parameters present as columns but without any value (e.g. BMD uncalibrated)."""
    ok = _ok(df)
    return [p for p in MORPHOMETRY_PARAMETERS if p in ok.columns and not ok[p].notna().any()]


def group_samples(df: pd.DataFrame, parameter: str,
                  order: Sequence[str]) -> dict[str, np.ndarray]:
    """Finite values of ``parameter`` per group, successful scans only, in file order."""
    ok = _ok(df)
    out = {}
    for g in order:
        v = pd.to_numeric(ok.loc[ok["group"] == g, parameter], errors="coerce").to_numpy(float)
        out[g] = v[np.isfinite(v)]
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s: unreadable (%s); left out of the methods", path, exc)
        return None
    return data if isinstance(data, dict) else None


def load_run_info(out_dir: str | Path) -> dict[str, Any]:
    """``OUT/run.json`` as a dict (empty when missing or unreadable)."""
    return _read_json(Path(out_dir) / "run.json") or {}


def _scan_folder(out_dir: Path, scan: str) -> Path | None:
    """``OUT/<scan>`` if that stays inside OUT (scan names come from a CSV)."""
    if not scan or scan in (".", ".."):
        return None
    folder = out_dir / scan
    try:
        if not folder.resolve().is_relative_to(out_dir.resolve()):
            return None
    except OSError:
        return None
    return folder


def load_scan_details(out_dir: str | Path, scans: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-scan ``OUT/<scan>/morphometry.json`` for the scans that have one."""
    out_dir = Path(out_dir)
    found = {}
    for s in scans:
        folder = _scan_folder(out_dir, s)
        data = _read_json(folder / "morphometry.json") if folder is not None else None
        if data is not None:
            found[s] = data
    return found


def qc_pictures(out_dir: str | Path, scan: str) -> list[Path]:
    """``OUT/<scan>/qc/*.png``, sorted by name (empty when there are none)."""
    folder = _scan_folder(Path(out_dir), scan)
    if folder is None or not (folder / "qc").is_dir():
        return []
    return sorted(p for p in (folder / "qc").glob("*.png") if p.is_file())
