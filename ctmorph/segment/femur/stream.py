"""The femur analysis as a stream: per-slice summaries chunk by chunk, then the plate and VOI.

:class:`FemurStream` is the one implementation of the rat distal femur's automatic VOI. A
caller feeds it the segmented bone of consecutive chunks of slices (:meth:`FemurStream.add`,
in any chunking: every summary is per slice); :meth:`FemurStream.locate` then finds the
distal end, the growth plate (:func:`~ctmorph.segment.femur.plate.find_plate`, with its
confidence and named flags) and the VOI's slices, or takes a reference or VOI given by hand;
:meth:`FemurStream.region` gives the endocortical region of any slices. The pipeline streams
scans of any size through it; :func:`~ctmorph.segment.femur.voi.auto_trabecular_voi` is the
same run on one in-memory volume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...errors import SegmentationError
from .cortex import region_rows, sector_thickness, smooth_sector_thickness
from .envelope import CLOSING_MM, MIN_AREA_MM2, EnvelopeMaps, envelope_maps
from .plate import GrowthPlate, find_plate
from .profiles import (
    FAR_MM,
    MARGIN_MM,
    SliceProfiles,
    end_by_shape,
    profiles_from_counts,
    slice_counts,
)
from .tiles import RIM_MARGIN_MM, TileProfiles

__all__ = ["FemurStream", "FemurVoi", "Slices", "section_index", "proximal_slices",
           "trabecular_slices", "check_voi_slices"]

logger = logging.getLogger(__name__)

#: ``slices(z0, z1)``: the segmented bone of slices ``z0 .. z1 - 1`` (the stream may re-read
#: the few slices around the plate).
Slices = Callable[[int, int], np.ndarray]


@dataclass
class FemurVoi:
    """Where the trabecular VOI goes, and why.

    Attributes
    ----------
    z0, z1 : int
        Slice range ``[z0, z1)`` of the VOI.
    ref_index : int or None
        The growth-plate reference slice (None: a VOI given by hand where no plate was found).
    distal_end : {'first', 'last'}
    source : {'auto', 'manual ref', 'manual VOI'}
        How the VOI was placed (the ``voi_source`` column).
    plate : GrowthPlate or None
        The automatic plate with its confidence and flags, when one was found.
    filled : (Z, sectors) ndarray
        Cleaned cortical thickness of every slice (for :meth:`FemurStream.region`).
    profiles : dict of str to (Z,) ndarray
        Per-slice QC profiles.
    """

    z0: int
    z1: int
    ref_index: int | None
    distal_end: str
    source: str
    plate: GrowthPlate | None
    filled: np.ndarray
    profiles: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def end_distance_mm(self) -> float | None:
        """Distance (mm) of the plate's distal-most cartilage from the bone's distal end."""
        return None if self.plate is None else self.plate.end_distance_mm


def proximal_slices(
    ref_index: int, distal_end: str, nz: int, n_offset: int, n_slices: int
) -> tuple[int, int] | None:
    """Array range ``[z0, z1)`` of ``n_slices`` slices starting ``n_offset`` slices proximal
    of ``ref_index`` (proximal = away from the distal end); None where it leaves the stack."""
    if distal_end == "first":
        z0, z1 = ref_index + n_offset, ref_index + n_offset + n_slices
    else:
        z0, z1 = ref_index - n_offset - n_slices + 1, ref_index - n_offset + 1
    return (z0, z1) if z0 >= 0 and z1 <= nz else None


def trabecular_slices(
    ref_index: int, distal_end: str, nz: int, dz: float, offset_mm: float, height_mm: float
) -> tuple[int, int]:
    """Slices ``[z0, z1)`` of the trabecular VOI: from ``offset_mm`` to ``offset_mm +
    height_mm`` (at least one slice) proximal of the reference; SegmentationError when the
    scan ends before."""
    span = proximal_slices(ref_index, distal_end, nz, int(round(offset_mm / dz)),
                           max(1, int(round(height_mm / dz))))
    if span is None:
        k_ref = ref_index if distal_end == "first" else nz - 1 - ref_index
        raise SegmentationError(
            f"scan ends {(nz - k_ref) * dz:.1f} mm proximal of the growth plate; the VOI needs "
            f"{offset_mm + height_mm:.1f} mm"
        )
    return span


def check_voi_slices(region_pixels: np.ndarray, z0: int) -> None:
    """SegmentationError when the VOI's slices ``z0, z0 + 1, ...`` (``region_pixels``: the
    endocortical pixels of each) hold no endocortical region, or more than a tenth of them
    hold none."""
    empty = region_pixels == 0
    n = empty.size
    if empty.all():
        raise SegmentationError(
            f"the trabecular VOI is empty: no endocortical region in slices {z0}..{z0 + n - 1}"
        )
    n_empty = int(np.count_nonzero(empty))
    if n_empty > 0.1 * n:
        raise SegmentationError(
            f"the trabecular VOI is incomplete: {n_empty} of {n} slices have no endocortical "
            "region"
        )


def section_index(sections: np.ndarray, section: int, what: str) -> int:
    """The slice index of a section number given by hand (the middle one where a scan
    resampled along its axis has several slices at one section).

    Raises
    ------
    SegmentationError
        The section is not in the scan.
    """
    hits = np.flatnonzero(np.asarray(sections) == section)
    if hits.size == 0:
        raise SegmentationError(
            f"{what} {section} is not a section of the scan (sections {int(np.min(sections))} "
            f"to {int(np.max(sections))})"
        )
    return int(hits[hits.size // 2])


class FemurStream:
    """Per-slice summaries of a femur scan, then its plate and VOI (module notes).

    Parameters
    ----------
    shape : (int, int, int)
        ``(Z, Y, X)`` of the scan (or of the frame resampled along its axis).
    spacing : (float, float, float)
        Voxel size (mm).

    Attributes
    ----------
    counts : dict of str to (Z,) ndarray
        Per slice: ``envelope``, ``interior``, ``interior_bone``, ``cartilage`` pixels
        (:func:`~ctmorph.segment.femur.profiles.slice_counts`).
    thick : (Z, sectors) ndarray
        Raw cortical thickness per angular sector (NaN: none).
    has : (Z,) ndarray of bool
        The slice has an envelope.
    bbox : (Z, 4) ndarray of int
        Envelope box ``y0, y1, x0, x1`` (exclusive ends), -1 without envelope.
    centroid_mm : (Z, 2) ndarray
        Envelope centroid ``(y, x)`` in mm, NaN without envelope.
    tiles : TileProfiles
        Interior and bone per slice and tile (the plate search).
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]
                 ) -> None:
        nz, ny, nx = shape
        self.shape = (int(nz), int(ny), int(nx))
        self.spacing = tuple(float(v) for v in spacing)
        self.counts = {k: np.zeros(nz, dtype=np.int64)
                       for k in ("envelope", "interior", "interior_bone", "cartilage")}
        self.thick = np.full((nz, 24), np.nan)
        self.has = np.zeros(nz, dtype=bool)
        self.bbox = np.full((nz, 4), -1, dtype=np.int64)
        self.centroid_mm = np.full((nz, 2), np.nan)
        self.tiles = TileProfiles(self.shape, self.spacing)
        self._yy = np.arange(ny) * self.spacing[1]
        self._xx = np.arange(nx) * self.spacing[2]

    def maps(self, bone: np.ndarray) -> EnvelopeMaps:
        """Envelope and distance maps of a chunk of slices (each slice on its own)."""
        return envelope_maps(bone, self.spacing, CLOSING_MM, MIN_AREA_MM2)

    def add(self, z0: int, bone: np.ndarray, maps: EnvelopeMaps | None = None) -> None:
        """Summarise slices ``z0 .. z0 + len(bone) - 1`` (``maps``: their envelope maps, if
        already made)."""
        z1 = z0 + bone.shape[0]
        maps = self.maps(bone) if maps is None else maps
        for k, v in slice_counts(bone, maps, margin_mm=MARGIN_MM, far_mm=FAR_MM).items():
            self.counts[k][z0:z1] = v
        self.thick[z0:z1], self.has[z0:z1] = sector_thickness(
            bone, maps.envelope, maps.depth, maps.crop, self.spacing)
        self.tiles.add_maps(z0, bone, maps)
        env = maps.envelope
        rows, cols = env.any(axis=2), env.any(axis=1)
        for k in np.flatnonzero(self.has[z0:z1]):
            r, q = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
            self.bbox[z0 + k] = (r[0], r[-1] + 1, q[0], q[-1] + 1)
            area = env[k].sum()
            self.centroid_mm[z0 + k] = (env[k].sum(axis=1) @ self._yy / area,
                                        env[k].sum(axis=0) @ self._xx / area)

    def _rim(self, slices: Slices) -> Callable[[int, int], TileProfiles]:
        def rim(a: int, b: int) -> TileProfiles:
            bone = slices(a, b)
            tiles = TileProfiles((b - a, *self.shape[1:]), self.spacing)
            tiles.add_maps(0, bone, self.maps(bone), margin_mm=RIM_MARGIN_MM)
            tiles.bridge_gaps()
            return tiles

        return rim

    def locate(self, *, slices: Slices, offset_mm: float, height_mm: float,
               distal_end: str = "auto", ref_index: int | None = None,
               voi_range: tuple[int, int] | None = None) -> FemurVoi:
        """Distal end, growth plate and the VOI's slices.

        Parameters
        ----------
        slices : callable
            :data:`Slices` of the scan (the plate's slices are re-read out to the cortex).
        offset_mm, height_mm : float
            The VOI from ``offset_mm`` to ``offset_mm + height_mm`` proximal of the reference.
        distal_end : {'auto', 'first', 'last'}
            Which end is distal; ``auto``: the end nearer the plate, else by shape.
        ref_index : int, optional
            The reference slice given by hand (``voi_source`` ``manual ref``).
        voi_range : (int, int), optional
            The VOI's slices ``[z0, z1)`` given by hand (``manual VOI``).

        Returns
        -------
        FemurVoi

        Raises
        ------
        SegmentationError
            No bone; no growth plate (or a closed one) and nothing given by hand; the distal
            end cannot be told where it is needed; the scan ends before the VOI.
        """
        nz = self.shape[0]
        dz = self.spacing[0]
        manual = ref_index is not None or voi_range is not None
        prof = self.profiles()
        plate: GrowthPlate | None = None
        try:
            plate = self.plate(slices, distal_end, prof)
            end = plate.distal_end
        except SegmentationError as exc:
            if not manual or not self.has.any():
                raise
            logger.info("%s; the VOI given by hand is used", exc)
            end = (distal_end if distal_end != "auto"
                   else self._end_for_manual(prof, ref_index is not None))
        if ref_index is not None:
            ref, source = ref_index, "manual ref"
        else:
            ref = plate.ref_index if plate is not None else None
            source = "manual VOI" if voi_range is not None else "auto"
        if voi_range is not None:
            z0, z1 = voi_range
        else:
            assert ref is not None
            z0, z1 = trabecular_slices(ref, end, nz, dz, offset_mm, height_mm)
        filled, thick_mean = smooth_sector_thickness(self.thick, self.has, self.spacing)
        profiles = dict(prof.as_dict())
        profiles["cortical_thickness_mm"] = thick_mean
        profiles["envelope_centroid_y_mm"] = self.centroid_mm[:, 0]
        profiles["envelope_centroid_x_mm"] = self.centroid_mm[:, 1]
        logger.info("trabecular VOI: slices %d..%d (%s end distal, reference %s, %s)", z0,
                    z1 - 1, end, ref, source)
        return FemurVoi(z0, z1, ref, end, source, plate, filled, profiles)

    def profiles(self) -> SliceProfiles:
        """The per-slice profiles of the slices added so far."""
        return profiles_from_counts(self.counts, self.spacing)

    def plate(self, slices: Slices | None, distal_end: str = "auto",
              prof: SliceProfiles | None = None) -> GrowthPlate:
        """The growth plate (:func:`~ctmorph.segment.femur.plate.find_plate`), followed out to
        the cortical shell when ``slices`` are given; ``distal_end`` ``auto``: the end nearer
        the plate, else the end told by the bone's shape.

        Raises
        ------
        SegmentationError
            No bone, no (open) growth plate, or the distal end cannot be told.
        """
        if not self.has.any():
            raise SegmentationError("no bone cross-section found in the scan")
        prof = self.profiles() if prof is None else prof
        dz = self.spacing[0]
        filled = self.tiles.bridge_gaps()
        if filled:
            logger.debug("tile interiors carried across lost envelopes: %d", filled)
        plate = find_plate(self.tiles, distal_end=None if distal_end == "auto" else distal_end,
                           rim=None if slices is None else self._rim(slices),
                           end_by_shape=lambda: end_by_shape(prof, dz))
        logger.info("growth plate: slices %d (distal) to %d (proximal); reference %d; "
                    "confidence %.2f%s", plate.distal_index, plate.proximal_index,
                    plate.ref_index, plate.confidence,
                    f" ({'; '.join(plate.flags)})" if plate.flags else "")
        return plate

    def _end_for_manual(self, prof: SliceProfiles, need: bool) -> str:
        """The distal end for a VOI given by hand when no plate was found: by shape; for a
        manual VOI (which needs no end) the first end when the shape cannot tell."""
        try:
            end, _ = end_by_shape(prof, self.spacing[0])
            return end
        except SegmentationError as exc:
            if need:
                raise SegmentationError(
                    f"{exc}; a reference given by hand needs to know which end is distal"
                ) from None
            return "first"

    def region(self, bone: np.ndarray, z0: int, filled: np.ndarray,
               maps: EnvelopeMaps | None = None) -> np.ndarray:
        """Endocortical region of slices ``z0 .. z0 + len(bone) - 1`` (``filled``: the
        cleaned cortical thickness of every slice, :attr:`FemurVoi.filled`)."""
        maps = self.maps(bone) if maps is None else maps
        return region_rows(maps.envelope, maps.depth, maps.crop,
                           filled[z0 : z0 + bone.shape[0]], self.spacing)
