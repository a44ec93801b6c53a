"""Which scans a run measures, with which group, settings and manual VOI, and each scan's
header (and histogram) read before anything is measured."""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AnalysisConfig
from ..errors import ConfigError, CtmorphError, ScanError
from ..io import Scan, find_scan_dirs, read_scan, scan_name
from ..manifest import Manifest, read_manifest
from ..segment.pooling import GreyScale
from .jobs import cached_histogram

__all__ = [
    "Planned",
    "Probe",
    "plan_run",
    "probe_scan",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Which scans, with which group and settings


@dataclass
class Planned:
    name: str
    folder: Path | None
    group: str | None
    config: AnalysisConfig
    error: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def _check_unique(planned: Sequence[Planned]) -> None:
    """One name per scan and one scan per folder, before anything is computed."""
    names: set[str] = set()
    folders: dict[Path, str] = {}
    for item in planned:
        if item.name in names:
            raise ConfigError(
                f"two scan folders are both named {item.name!r}; scan names must be unique"
            )
        names.add(item.name)
        if item.folder is None:
            continue
        real = item.folder.resolve()
        if real in folders:
            raise ConfigError(
                f"{item.name!r} and {folders[real]!r} are the same scan folder ({real}); "
                "each animal must be analysed once"
            )
        folders[real] = item.name


def _check_listed(table: Mapping[str, Any], names: set[str], strict: bool) -> None:
    """Rows of a groups or overrides file naming scans that are not in the run: a warning
    (or, strict, an error), so a typo does not silently shrink the study or drop a
    correction."""
    extra = [s for s in table if s not in names]
    if not extra:
        return
    where = getattr(table, "path", "the groups file")
    line = getattr(table, "line", None)
    shown = ", ".join(f"{s!r} (line {line(s)})" if line else repr(s) for s in extra[:10])
    more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
    msg = (f"{where}: {len(extra)} row(s) name scans that are not in this run: {shown}{more}")
    if strict:
        raise ConfigError(msg + " (--strict)")
    logger.warning("%s", msg)


def _apply_overrides(planned: Sequence[Planned], overrides: Mapping[str, Mapping[str, Any]],
                     strict: bool) -> None:
    """Each scan's VOI placed by hand (``--overrides``) into its settings and provenance."""
    _check_listed(overrides, {i.name for i in planned}, strict)
    line = getattr(overrides, "line", None)
    for item in planned:
        values = overrides.get(item.name)
        if not values:
            continue
        try:
            item.config = item.config.replace(**values)
        except ConfigError as exc:
            item.error = f"{item.name}: overrides {dict(values)}: {exc}"
            continue
        item.provenance["overrides"] = {
            "path": str(getattr(overrides, "path", "")), "values": dict(values),
            "line": line(item.name) if line else None,
        }


def _check_manual_voi_scope(cfg: AnalysisConfig, planned: Sequence[Planned]) -> None:
    """A reference or VOI given for the whole run (``--ref-slice``) fits one scan only."""
    given = [n for n in ("ref_slice", "voi_first_slice", "voi_last_slice")
             if getattr(cfg, n) is not None]
    if given and len(planned) > 1:
        raise ConfigError(
            f"{given[0]} = {getattr(cfg, given[0])} places one femur's VOI by hand, but the run "
            f"has {len(planned)} scans; give it per scan with --overrides FILE.csv (or the "
            "manifest)"
        )


def plan_run(
    paths: Sequence[str | Path],
    cfg: AnalysisConfig,
    *,
    manifest: Manifest | str | Path | None,
    groups: Mapping[str, str] | None,
    group: str | None,
    strict: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Planned]:
    """The run's scans in order, each with its group, settings or the reason it cannot run."""
    planned = _plan_scans(paths, cfg, manifest=manifest, groups=groups, group=group,
                          strict=strict)
    _check_manual_voi_scope(cfg, planned)
    if overrides is not None:
        _apply_overrides(planned, overrides, strict)
    return planned


def _plan_scans(
    paths: Sequence[str | Path],
    cfg: AnalysisConfig,
    *,
    manifest: Manifest | str | Path | None,
    groups: Mapping[str, str] | None,
    group: str | None,
    strict: bool,
) -> list[Planned]:
    if manifest is not None:
        if paths or groups is not None or group is not None:
            raise ConfigError(
                "a manifest lists the scans and their groups: give no scan folders, groups "
                "file or group with it"
            )
        if not isinstance(manifest, Manifest):
            manifest = read_manifest(manifest, cfg)
        planned = [
            Planned(e.name, e.folder, e.group, e.config(cfg),
                     provenance={"manifest": manifest.provenance(e)})
            for e in manifest.entries
        ]
        _check_unique(planned)
        return planned
    planned = []
    for p in paths:
        try:
            for d in find_scan_dirs([p]):
                planned.append(Planned(scan_name(d), d, "", cfg))
        except ScanError as exc:
            try:
                name = scan_name(p)
            except ScanError:
                name = str(p)
            planned.append(Planned(name, None, "", cfg, error=str(exc)))
    _check_unique(planned)
    if groups is not None and group is None:
        _check_listed(groups, {i.name for i in planned}, strict)
    for item in planned:
        if group is not None:
            item.group = group
        elif groups is not None:
            item.group = groups.get(item.name) or None
            if item.group is None and item.error is None:
                item.error = f"{item.name}: scan is not listed with a group in the groups file"
    return planned


@dataclass
class Probe:
    """What the headers (and, when asked, the pixels) of one scan say."""

    name: str
    scan: Scan | None = None
    hist: np.ndarray | None = None
    error: str | None = None

    @property
    def shape(self) -> tuple[int, int, int] | None:
        return None if self.scan is None else self.scan.shape

    @property
    def bit_depth(self) -> int | None:
        return None if self.scan is None else self.scan.dtype.itemsize * 8

    @property
    def voxel_um(self) -> float | None:
        return None if self.scan is None else self.scan.voxel_size_um

    @property
    def scale(self) -> GreyScale | None:
        return None if self.scan is None else GreyScale(self.scan.gmax, self.scan.cs_window)


def probe_scan(name: str, folder: Path, cfg: AnalysisConfig, hist_cache: Path | None) -> Probe:
    """Read one scan's headers, and its grey histogram when ``hist_cache`` is given."""
    try:
        scan = read_scan(folder, voxel_size_um=cfg.voxel_size_um)
        hist = cached_histogram(scan, hist_cache) if hist_cache is not None else None
    except CtmorphError as exc:
        return Probe(name, error=str(exc))
    except Exception as exc:  # one broken scan must not lose the others
        return Probe(name, error=f"{name}: internal error: {type(exc).__name__}: {exc}")
    return Probe(name, scan, hist)


