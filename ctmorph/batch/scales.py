"""One study threshold: which grey scales (CS window, bit depth) it can be applied to, and the
pooled Otsu threshold of the measurable scans (docs/DESIGN.md §2)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import AnalysisConfig
from ..segment.pooling import GreyScale, StudyThreshold, pooled_otsu
from .plan import Probe

__all__ = [
    "StudyThresholdChoice",
    "study_scales",
    "study_threshold",
    "threshold_problem",
    "threshold_unit",
    "voi_problem",
]


# ---------------------------------------------------------------------------------------------
# One study threshold: which grey scales (CS window, bit depth) it can be applied to


def threshold_unit(cfg: AnalysisConfig) -> str:
    """How the study threshold is stated: ``density``, ``attenuation``, ``otsu`` or ``grey``."""
    if cfg.threshold_density is not None:
        return "density"
    if cfg.threshold_attenuation is not None:
        return "attenuation"
    return "otsu" if cfg.threshold == "otsu" else "grey"


def _majority(values: Sequence[Any]) -> Any:
    """The most common value (ties: the first seen)."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def study_scales(probes: Sequence[Probe], cfg: AnalysisConfig
                  ) -> tuple[dict[str, str], dict[str, GreyScale]]:
    """The grey scale each scan's threshold is taken on, and the scans that cannot take one.

    Returns ``(problems, scales)``: ``{scan: why it cannot be thresholded with the study}``
    and ``{scan: GreyScale}`` for the others. A scan without a CS window borrows the study's
    scale when every scan with a window shares one and its bit depth is the same; a pooled
    Otsu threshold works across different windows and bit depths (on a common attenuation
    axis), a grey threshold only within one scale.
    """
    unit = threshold_unit(cfg)
    good = [p for p in probes if p.error is None and p.scale is not None]
    if unit == "density":
        return {}, {p.name: p.scale for p in good}
    windowed = {p.name: p.scale for p in good if p.scale.window is not None}
    windowless = {p.name: p.scale for p in good if p.scale.window is None}
    no_window = ("its log gives no CS window ('Minimum/Maximum for CS to Image Conversion' in "
                 "[Reconstruction])")
    problems: dict[str, str] = {}
    if unit == "attenuation":
        for n in windowless:
            problems[n] = (f"{n}: {no_window}, so the threshold in attenuation "
                           "(--threshold-attenuation) cannot be converted to its grey values")
        return problems, windowed
    if not good:
        return problems, {}
    if not windowed:  # plain image stacks: grey values of one bit depth
        common = _majority(list(windowless.values()))
        for n, s in windowless.items():
            if s != common:
                problems[n] = (f"{n}: slices are {s.bits} but most scans of the run "
                               f"are {common.bits}, and no log gives a CS window to "
                               "convert between them; one study-wide grey threshold needs one "
                               "bit depth")
        return problems, {n: common for n in windowless if n not in problems}
    distinct = set(windowed.values())
    if len(distinct) > 1 and unit == "otsu":  # pooled on a common attenuation axis
        shown = "; ".join(sorted({s.describe() for s in distinct}))
        for n in windowless:
            problems[n] = (f"{n}: {no_window}, but the study's scans have different CS windows "
                           f"or bit depths ({shown}): its grey values cannot be put on the "
                           "study's attenuation scale; add the window to its log or analyse it "
                           "in a run of its own")
        return problems, dict(windowed)
    common = _majority(list(windowed.values()))
    scales: dict[str, GreyScale] = {}
    for n, s in windowed.items():
        if s == common:
            scales[n] = s
        else:  # a grey threshold means another attenuation in this scan
            problems[n] = (f"{n}: the threshold {float(cfg.threshold):g} is a grey value, but "
                           f"this scan's grey scale ({s.describe()}) differs from the study's "
                           f"({common.describe()}), so the same grey is another attenuation "
                           "here; give --threshold otsu, --threshold-attenuation or "
                           "--threshold-density")
    for n, s in windowless.items():
        if s.gmax == common.gmax:
            scales[n] = common
        else:
            problems[n] = (f"{n}: {no_window} and its slices are {s.bits} while the "
                           f"study's are {common.describe()}: one study threshold cannot be "
                           "applied to it")
    return problems, scales


def voi_problem(p: Probe, cfg: AnalysisConfig) -> str | None:
    """A VOI that cannot fit in the scan whatever the growth plate's position (auto ROI)."""
    if cfg.roi != "auto" or p.shape is None or p.voxel_um is None:
        return None
    length = p.shape[0] * p.voxel_um / 1000.0
    ends = [("trabecular", cfg.roi_offset_mm + cfg.roi_height_mm)]
    if cfg.cortical_offset_mm is not None:
        ends.append(("cortical", cfg.cortical_offset_mm + cfg.cortical_height_mm))
    for what, end in ends:
        if end >= length:
            return (f"{p.name}: the scan is {length:.3g} mm long, too short for the {what} VOI "
                    f"ending {end:g} mm proximal of the growth plate")
    return None


def threshold_problem(p: Probe, cfg: AnalysisConfig) -> str | None:
    if threshold_unit(cfg) != "grey" or p.bit_depth is None:
        return None
    gmax = 2 ** p.bit_depth - 1
    if not 0 <= float(cfg.threshold) < gmax:
        return (f"{p.name}: threshold {float(cfg.threshold):g} is outside the grey range "
                f"0..{gmax} of its {p.bit_depth}-bit slices")
    return None


@dataclass
class StudyThresholdChoice:
    """The run's threshold: per scan its grey value, and what the log and run.json say."""

    threshold: StudyThreshold | None
    method: str
    members: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)
    uniform: bool = True

    def grey(self, scale: GreyScale) -> float | None:
        return None if self.threshold is None else self.threshold.grey(scale)


def study_threshold(cfg: AnalysisConfig, probes: Mapping[str, Probe],
                     scales: Mapping[str, GreyScale]) -> StudyThresholdChoice:
    """The study threshold of the scans in ``scales`` (all measurable by the headers)."""
    unit = threshold_unit(cfg)
    if unit == "density":
        return StudyThresholdChoice(None, f"density {cfg.threshold_density:g} g/cm³ HA")
    if unit == "attenuation":
        return StudyThresholdChoice(None, "fixed attenuation")
    if unit == "grey":
        common = next(iter(scales.values()), GreyScale(255))
        return StudyThresholdChoice(StudyThreshold(common, float(cfg.threshold)), "fixed")
    if not scales:
        return StudyThresholdChoice(None, "otsu (no scan to pool)")
    pooled = pooled_otsu({n: probes[n].hist for n in scales}, scales)
    uniform = len(set(scales[n] for n in pooled.members)) <= 1
    where = "" if uniform else " on a common attenuation axis"
    method = f"otsu (pooled over {len(pooled.members)} scans{where})"
    return StudyThresholdChoice(pooled.threshold, method, pooled.members, pooled.excluded, uniform)


