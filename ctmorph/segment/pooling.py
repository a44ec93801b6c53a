"""The study threshold: one physical threshold for scans with different grey scales.

NRecon maps the reconstructed attenuation to grey through a window chosen per scan
(``Minimum/Maximum for CS to Image Conversion`` = ``(lo, hi)``) and a bit depth
(``gmax`` = 255 or 65535): ``attenuation = lo + grey * (hi - lo) / gmax``. Operators change the
window between scans of one study, so one grey value is a different attenuation in different
scans. The study threshold therefore lives on an attenuation axis:

- :class:`GreyScale` says what one scan's grey values mean;
- :func:`common_axis` is a grey scale fine enough for every scan of the study (the scans' own
  scale when they all share one, so such a study is pooled exactly as plain grey histograms);
- :func:`resample_histogram` moves a scan's grey histogram onto that axis (each grey level
  spread evenly over the attenuation interval it stands for);
- :func:`pooled_otsu` pools the histograms of the scans that can be measured and returns one
  :class:`StudyThreshold`; :meth:`StudyThreshold.grey` gives each scan its grey threshold.

Scans that cannot be measured never enter the pool (docs/DESIGN.md §2): a histogram with no data or
a single grey value, and, at the pooled threshold, a scan with (almost) no voxel above it (no
bone: an empty tube, a sample out of the field of view) or (almost) none below it (no marrow or
background: an all-bone or saturated scan). Leaving a scan out moves the threshold, so the
check is repeated on the new pool until no scan leaves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .threshold import otsu_threshold

__all__ = [
    "GreyScale",
    "StudyThreshold",
    "PooledThreshold",
    "MIN_PHASE_FRACTION",
    "MAX_AXIS_BINS",
    "common_axis",
    "resample_histogram",
    "histogram_problem",
    "pooled_otsu",
]

#: A scan enters the pooled threshold only if at least this fraction of its voxels with data
#: lies above the threshold (bone) and at least this fraction below it (marrow, soft tissue,
#: medium, air). A rat distal femur scan holds a few to 30 % bone; 0.1 % is far below any
#: specimen and far above the bright specks of an empty tube.
MIN_PHASE_FRACTION = 1e-3

#: The common attenuation axis never has more bins than this (16-bit scans with very different
#: windows would otherwise ask for millions); the step then grows accordingly.
MAX_AXIS_BINS = 1 << 21


@dataclass(frozen=True)
class GreyScale:
    """What a scan's grey values mean.

    Attributes
    ----------
    gmax : int
        Full-scale grey value of the slices: 255 (8-bit) or 65535 (16-bit).
    window : (float, float) or None
        The CS window ``(lo, hi)``: attenuation (NRecon CS units) at grey 0 and at ``gmax``;
        None when the scan's log gives none (plain image stacks): its grey values have no
        known attenuation.
    """

    gmax: int
    window: tuple[float, float] | None = None

    @property
    def step(self) -> float:
        """Attenuation per grey level (NRecon CS units); 1.0 without a window."""
        if self.window is None:
            return 1.0
        lo, hi = self.window
        return (hi - lo) / self.gmax

    @property
    def lo(self) -> float:
        """Attenuation of grey 0; 0.0 without a window."""
        return 0.0 if self.window is None else float(self.window[0])

    @property
    def bits(self) -> str:
        """``'8-bit'`` or ``'16-bit'``."""
        return f"{int(self.gmax).bit_length()}-bit"

    def describe(self) -> str:
        """``'CS window -0.0096..0.0766, 8-bit'`` (or ``'no CS window, 16-bit'``)."""
        if self.window is None:
            return f"no CS window, {self.bits}"
        return f"CS window {self.window[0]:g}..{self.window[1]:g}, {self.bits}"

    def to_grey(self, other: GreyScale, grey: float) -> float:
        """The grey value of ``other`` that has the attenuation of ``grey`` on this scale.

        Exact (the same float) when both scales are equal. Scales without a window convert
        only to an equal scale.
        """
        if other == self:
            return float(grey)
        if self.window is None or other.window is None:
            raise ValueError(f"cannot compare grey values of '{self.describe()}' and "
                             f"'{other.describe()}'")
        return (self.lo - other.lo) / other.step + float(grey) * (self.step / other.step)


@dataclass(frozen=True)
class StudyThreshold:
    """One threshold for a study: a (fractional) grey value of the study's axis ``scale``.

    Attributes
    ----------
    scale : GreyScale
        The axis the threshold was found on: the scans' common scale, or a finer attenuation
        axis when their scales differ.
    position : float
        The threshold as a grey value of ``scale``; bone is ``smoothed grey > threshold``.
    """

    scale: GreyScale
    position: float

    @property
    def unit(self) -> str:
        """``'attenuation'`` when the axis has a CS window, else ``'grey'``."""
        return "grey" if self.scale.window is None else "attenuation"

    @property
    def attenuation(self) -> float | None:
        """The threshold in attenuation (NRecon CS units), None without a CS window."""
        if self.scale.window is None:
            return None
        return self.scale.lo + self.position * self.scale.step

    @property
    def value(self) -> float:
        """The threshold in :attr:`unit`."""
        att = self.attenuation
        return self.position if att is None else att

    def grey(self, scale: GreyScale) -> float:
        """The threshold as a grey value of a scan of grey scale ``scale``."""
        return self.scale.to_grey(scale, self.position)


@dataclass(frozen=True)
class PooledThreshold:
    """What :func:`pooled_otsu` decided.

    Attributes
    ----------
    threshold : StudyThreshold or None
        None when no scan could enter the pool.
    members : tuple of str
        The scans whose histograms made the threshold, in input order.
    excluded : dict
        ``{scan: reason}`` of the scans left out (each reason a sentence naming the scan).
    """

    threshold: StudyThreshold | None
    members: tuple[str, ...]
    excluded: dict[str, str]


def common_axis(scales: list[GreyScale] | tuple[GreyScale, ...]) -> GreyScale:
    """A grey scale on which every scale of ``scales`` can be pooled.

    The scales' own when they are all equal. Otherwise (every scale must have a window) an
    attenuation axis from the lowest window minimum to the highest maximum whose step is the
    finest of the scans' (at most :data:`MAX_AXIS_BINS` bins).

    Raises
    ------
    ValueError
        No scale, or scales that differ while one of them has no window.
    """
    if not scales:
        raise ValueError("no grey scale to pool")
    first = scales[0]
    if all(s == first for s in scales):
        return first
    if any(s.window is None for s in scales):
        raise ValueError("scales without a CS window can only be pooled with equal scales")
    lo = min(s.lo for s in scales)
    hi = max(float(s.window[1]) for s in scales if s.window is not None)
    step = min(s.step for s in scales)
    bins = min(MAX_AXIS_BINS, int(math.ceil((hi - lo) / step - 1e-9)) + 1)
    return GreyScale(gmax=bins - 1, window=(lo, hi))


def resample_histogram(hist: np.ndarray, scale: GreyScale, axis: GreyScale) -> np.ndarray:
    """A grey histogram of ``scale`` moved onto the grey levels of ``axis``.

    Grey level ``g`` stands for the attenuations ``[g - 1/2, g + 1/2]`` grey levels wide; its
    count is spread evenly over them and summed into the axis levels, whose intervals are
    defined the same way (counts beyond the axis go to its end levels). With ``axis ==
    scale`` the histogram is returned as is.

    Returns
    -------
    (axis.gmax + 1,) ndarray of float64 (or the input when the scales are equal)
    """
    if axis == scale:
        return np.asarray(hist)
    h = np.asarray(hist, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(h)])
    knots = np.arange(h.size + 1, dtype=np.float64) - 0.5  # edges of the scan's levels
    k = np.arange(axis.gmax + 2, dtype=np.float64) - 0.5  # edges of the axis levels
    edges = axis.to_grey(scale, 0.0) + k * (axis.step / scale.step)
    at = np.interp(edges, knots, cum)  # the scan's cumulative count at the axis edges
    at[0], at[-1] = 0.0, cum[-1]  # everything outside the axis into its end levels
    return np.diff(at)


def histogram_problem(name: str, hist: np.ndarray) -> str | None:
    """Why a scan's grey histogram cannot enter a pooled threshold, or None.

    No voxel with data (every voxel a round-ROI zero), or a single grey value (a blank
    reconstruction).
    """
    h = np.asarray(hist)
    levels = np.flatnonzero(h)
    if levels.size == 0:
        return f"{name}: no voxel with data (every grey value is a no-data zero)"
    if levels.size == 1:
        return (f"{name}: every voxel has the grey value {int(levels[0])} (a blank "
                "reconstruction?); nothing to segment")
    return None


def _phase_problem(name: str, hist: np.ndarray, grey: float, threshold: StudyThreshold,
                   min_fraction: float) -> str | None:
    h = np.asarray(hist, dtype=np.float64)
    total = h.sum()
    above = h[max(0, math.floor(grey) + 1):].sum() / total if grey < h.size - 1 else 0.0
    where = f"the study threshold {_show(threshold, grey)}"
    if above < min_fraction:
        return (f"{name}: only {100 * above:.3g} % of its voxels are above {where}: no bone "
                f"to measure (empty tube or sample out of the field of view?)")
    if 1.0 - above < min_fraction:
        return (f"{name}: {100 * above:.4g} % of its voxels are above {where}: no marrow or "
                f"background (an all-bone or saturated scan?)")
    return None


def _show(threshold: StudyThreshold, grey: float) -> str:
    if threshold.unit == "attenuation":
        return f"{threshold.value:.6g} (grey {grey:.6g} of this scan)"
    return f"{grey:g} (grey)"


def pooled_otsu(
    hists: Mapping[str, np.ndarray],
    scales: Mapping[str, GreyScale],
    *,
    min_fraction: float = MIN_PHASE_FRACTION,
) -> PooledThreshold:
    """Otsu's threshold of the pooled histograms of the scans that can be measured.

    Parameters
    ----------
    hists : mapping
        ``{scan: grey histogram}`` (``gmax + 1`` integer counts; no-data zeros excluded).
    scales : mapping
        ``{scan: GreyScale}`` for the same scans (equal scales, or all with a CS window).
    min_fraction : float
        See :data:`MIN_PHASE_FRACTION`.

    Returns
    -------
    PooledThreshold
        Scans with a degenerate histogram are left out first; then, repeatedly, the scans
        with less than ``min_fraction`` of their voxels above or below the pooled threshold,
        and the threshold is pooled again without them.

    Notes
    -----
    The histograms are summed on :func:`common_axis` (voxel-weighted, like one histogram of
    all the scans' voxels) and split by :func:`~ctmorph.segment.threshold.otsu_threshold`.
    Otsu N. (1979) IEEE Trans. Syst. Man Cybern. 9:62-66.
    """
    excluded: dict[str, str] = {}
    for name, h in hists.items():
        problem = histogram_problem(name, h)
        if problem is not None:
            excluded[name] = problem
    members = [n for n in hists if n not in excluded]
    while members:
        axis = common_axis([scales[n] for n in members])
        pooled = sum(resample_histogram(hists[n], scales[n], axis) for n in members)
        threshold = StudyThreshold(axis, otsu_threshold(pooled))
        leave = {}
        for n in members:
            problem = _phase_problem(n, hists[n], threshold.grey(scales[n]), threshold,
                                     min_fraction)
            if problem is not None:
                leave[n] = problem
        if not leave:
            return PooledThreshold(threshold, tuple(members), excluded)
        excluded.update({n: f"{why}; left out of the pooled threshold"
                         for n, why in leave.items()})
        members = [n for n in members if n not in leave]
    return PooledThreshold(None, (), excluded)
