"""The dry run: every scan validated from its log and slice headers, nothing analysed or written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import AnalysisConfig
from ..manifest import Manifest
from .plan import Probe, plan_run, probe_scan
from .scales import study_scales, threshold_problem, voi_problem

__all__ = [
    "ScanCheck",
    "check_study",
]


# ---------------------------------------------------------------------------------------------
# Dry run


@dataclass(frozen=True)
class ScanCheck:
    """One scan as a dry run sees it.

    Attributes
    ----------
    name, group : str
    folder : Path or None
    n_slices : int or None
    slice_shape : (int, int) or None
        ``(ny, nx)`` pixels.
    voxel_um : float or None
        Voxel size in µm (log or override).
    bit_depth : int or None
        8 or 16, from the slice headers.
    problem : str or None
        Why the scan cannot be analysed; None when it is valid.
    """

    name: str
    group: str
    folder: Path | None
    n_slices: int | None = None
    slice_shape: tuple[int, int] | None = None
    voxel_um: float | None = None
    bit_depth: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_study(
    paths: Sequence[str | Path] = (),
    config: AnalysisConfig | None = None,
    *,
    manifest: Manifest | str | Path | None = None,
    groups: Mapping[str, str] | None = None,
    group: str | None = None,
    strict: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ScanCheck]:
    """Validate every scan of a study without analysing it and without writing anything.

    Reads logs and slice-file headers only, never pixel data (a slice whose pixel data is
    corrupt behind a valid header passes here and fails that scan in the run). Checks: the
    folder exists, the log parses, the voxel size is known, the slices are complete, of one
    size and one bit depth; the scan's grey scale (CS window, bit depth) can take the study
    threshold; the scan has a group; the VOIs of its (overridden) settings fit in its length;
    a fixed threshold is inside its grey range.

    Parameters
    ----------
    paths, config, manifest, groups, group, strict, overrides
        As for :func:`run_analysis`.

    Returns
    -------
    list of ScanCheck
        In run order.

    Raises
    ------
    ConfigError
        Problems of the whole study: an invalid manifest, two scans with one name or one
        folder, a manifest given together with folders or groups, (``strict``) groups-file
        rows naming scans that are not in the run.
    """
    cfg = config or AnalysisConfig()
    planned = plan_run(paths, cfg, manifest=manifest, groups=groups, group=group, strict=strict,
                    overrides=overrides)
    probes: dict[str, Probe] = {}
    for item in planned:
        if item.error is None and item.folder is not None:
            probes[item.name] = probe_scan(item.name, item.folder, item.config, None)
    scale_problems, _ = study_scales(list(probes.values()), cfg)
    checks = []
    for item in planned:
        p = probes.get(item.name, Probe(item.name))
        problem = (item.error or p.error or scale_problems.get(item.name)
                   or voi_problem(p, item.config) or threshold_problem(p, item.config))
        checks.append(ScanCheck(
            name=item.name, group=item.group or "", folder=item.folder,
            n_slices=p.shape[0] if p.shape else None,
            slice_shape=(p.shape[1], p.shape[2]) if p.shape else None,
            voxel_um=p.voxel_um, bit_depth=p.bit_depth, problem=problem,
        ))
    return checks


