"""The growth plate from its sheet: reference slice, confidence and named flags.

:func:`find_plate` fits a sheet (:mod:`.sheet`) to each of the best candidate planes, ranks
them by :func:`~.sheet.sheet_score` and turns the best into a :class:`GrowthPlate`:

- **Where it is seen.** The tiles on the sheet whose own profile dips at it by at least half
  the overall contrast, whose position agrees with their neighbours' and whose own proximal
  cartilage face is where the sheet puts it. With the scan's slices at hand (``rim``), the
  plate is then followed out to the thin cortical shell, where a dome's or a W's rim is often
  its most proximal part.
- **Its faces.** The flattened profile's edges, half-way from its bottom up to each shoulder,
  are the cartilage's faces about the mid-surface; the proximal face's highest point, reached
  in at least :data:`FACE_SECTORS_NEEDED` of :data:`FACE_SECTORS` angular sectors (not one
  patch of rim tiles that sees a marrow space), gives the reference: the first slice proximal
  of all growth-plate cartilage.
- **How sure.** ``confidence`` is the product of five cue factors (contrast, uniqueness,
  continuity, openness, agreement of the edge estimates), and every cause of doubt is named
  in ``flags``; a sheet too weak (:data:`MIN_SCORE`) or too bridged (:data:`CLOSED_RATIO`)
  to place a reference from fails the scan with a message that says what to do.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import SegmentationError
from .base import DistalEnd
from .sheet import (
    STEP_MM,
    Sheet,
    fit_sheet,
    grow_positions,
    profile_edges,
    search_planes,
    sheet_score,
)
from .tiles import SHOULDER_MM, TileProfiles, dip_depth, tile_fraction

__all__ = [
    "GrowthPlate",
    "RimTiles",
    "find_plate",
    "plate_from_sheet",
    "sheet_span",
    "FACE_SECTORS",
    "FACE_SECTORS_NEEDED",
    "FACE_TILES_NEEDED",
    "FLAG_TWO_PLATES",
    "FLAG_BRIDGED",
    "FLAG_FAINT",
    "FLAG_PATCHY",
    "FLAG_THICKNESS",
    "FLAG_EDGE",
    "FLAG_LOW",
    "FLAG_CUT",
    "CUT_END_SHARE",
    "MIN_SCORE",
    "MIN_SPAN",
    "CLOSED_RATIO",
    "BRIDGED_RATIO",
    "FAINT_CONTRAST",
    "RIVAL_RATIO",
    "MIN_COVERAGE",
    "MAX_SPREAD_MM",
    "LOW_CONFIDENCE",
    "THICKNESS_MM",
    "NEAR_END_MM",
]

logger = logging.getLogger(__name__)

#: The plate's proximal-most (and distal-most) point is the highest value reached in at
#: least ``FACE_SECTORS_NEEDED`` of ``FACE_SECTORS`` angular sectors around the plate's centre.
FACE_SECTORS = 12
FACE_SECTORS_NEEDED = 2
#: ... and within a sector, by at least this many tiles (one tile seeing a marrow space
#: above the plate is not its face).
FACE_TILES_NEEDED = 2

#: Flags of the growth-plate finder (the ``qc_flags`` column names the cause).
FLAG_TWO_PLATES = "two candidate growth plates"
FLAG_BRIDGED = "growth plate mostly bridged or closed"
FLAG_FAINT = "faint growth plate"
FLAG_PATCHY = "growth plate not continuous across the marrow cavity"
FLAG_THICKNESS = "implausible growth-plate thickness"
FLAG_EDGE = "growth-plate edge uncertain"
FLAG_LOW = "low growth-plate confidence"
FLAG_CUT = "the scan does not reach the distal end of the bone"

#: Weakest score (:func:`~.sheet.sheet_score` x :func:`sheet_span`) of a growth plate; below
#: it the scan fails: no plate.
MIN_SCORE = 0.05
#: The cartilage's own bone fraction over the lower shoulder's (``bridged_ratio``) from which
#: the plate is closed or closing: the scan fails (an adult animal), the reference being
#: unreliable.
CLOSED_RATIO = 0.55
#: ``bridged_ratio`` from which the plate is flagged as mostly bridged.
BRIDGED_RATIO = 0.4
#: Flattened-profile contrast (lower shoulder minus the plate's bone fraction) below which a
#: plate is flagged as faint.
FAINT_CONTRAST = 0.13
#: Share of the cross-section (:func:`sheet_span`) a sheet must span to be ranked as a plate
#: while one that does scores.
MIN_SPAN = 0.7
#: A second candidate whose score reaches this fraction of the best one's is a rival.
RIVAL_RATIO = 0.75
#: Share of the tiles on the sheet that must see the plate (is it continuous?).
MIN_COVERAGE = 0.6
#: Largest spread (mm) of the estimates of the plate's proximal-most point before its edge is
#: flagged as uncertain.
MAX_SPREAD_MM = 0.1
#: Confidence below which a plate without another flag is flagged for its weakest cue.
LOW_CONFIDENCE = 0.5
#: (value at factor 0, value at factor 1) of the confidence factors: contrast, rival ratio,
#: coverage, bridged ratio and edge spread (mm). See :func:`find_plate`.
CONTRAST_FACTOR = (0.10, 0.20)
RIVAL_FACTOR = (0.9, 0.6)
COVERAGE_FACTOR = (0.3, 0.8)
BRIDGED_FACTOR = (CLOSED_RATIO, 0.3)
SPREAD_FACTOR = (0.12, 0.06)
#: Plausible cartilage thickness along the bone (mm): a thin plate at a coarse voxel to a
#: thick one crossed obliquely.
THICKNESS_MM = (0.03, 0.35)
#: A distal end of the scan whose first slice with an interior already holds this share of
#: the median interior is a cut through the bone, not the condyles' rounded end: the femur's
#: distal end is not in the scan (the wrong end, or only the shaft was scanned).
CUT_END_SHARE = 0.5
#: Distal-most cartilage within this distance (mm) of the distal end of the bone: no
#: epiphysis beyond it, the scan was cut at the plate.
NEAR_END_MM = 0.3

_SEEN_NOWHERE = (
    "no growth plate found: the sheets nearly free of bone between dense bone are seen "
    "nowhere across the marrow cavity; place the VOI by hand (ctmorph review, --ref-slice, "
    "--overrides) or use --roi-offset-frac or another ROI mode"
)


@dataclass(frozen=True, eq=False)
class GrowthPlate:
    """The growth plate found in a distal femur scan, how sure the finder is, and why not more.

    Attributes
    ----------
    ref_index : int
        The reference slice: the first slice, moving proximally from the distal end, that
        holds no growth-plate cartilage (the proximal boundary of the plate).
    distal_index, proximal_index : int
        Distal-most and proximal-most slice holding cartilage.
    distal_end : {'first', 'last'}
        The end of the array that is distal (detected or given).
    confidence : float
        0-1, the product of the cue factors (see :func:`find_plate`).
    flags : tuple of str
        Named causes of doubt (``FLAG_*`` with the measured value).
    cues : dict of str to float
        ``score``, ``contrast``, ``rival_ratio``, ``coverage``, ``bridged_ratio``,
        ``thickness_mm``, ``edge_spread_mm``, ``end_distance_mm`` and the factors ``f_*``.
    sheet : Sheet
        The mid-surface and its flattened profile (QC).
    """

    ref_index: int
    distal_index: int
    proximal_index: int
    distal_end: DistalEnd
    confidence: float
    flags: tuple[str, ...]
    cues: dict[str, float]
    sheet: Sheet

    @property
    def thickness_mm(self) -> float:
        """Cartilage thickness across the sheet (mm): distance between its two faces."""
        return float(self.cues["thickness_mm"])

    @property
    def end_distance_mm(self) -> float:
        """Distance (mm) of the distal-most cartilage from the distal end of the bone."""
        return float(self.cues["end_distance_mm"])


#: ``rim(z0, z1)``: tile profiles of slices ``z0 .. z1 - 1`` with the interior reaching to
#: :data:`~.tiles.RIM_MARGIN_MM` below the periosteal surface.
RimTiles = Callable[[int, int], TileProfiles]


def plate_from_sheet(tiles: TileProfiles, sheet: Sheet, distal_end: str,
                     rim: RimTiles | None = None) -> tuple[int, int, int, dict[str, float]]:
    """Reference, distal-most and proximal-most cartilage slice of a fitted sheet, and its
    profile cues (``contrast``, ``bridged_ratio``, ``thickness_mm``, ``coverage``,
    ``edge_spread_mm``); with ``rim`` the plate is followed out to the cortical shell
    (:func:`grow_positions` from the tiles it is seen in) before its extremes are taken."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    sign = 1 if distal_end == "first" else -1
    _, f0, s_dist, s_prox, e_dist, e_prox = profile_edges(sheet.offsets, sheet.profile, dz, sign)
    seen = _tiles_seeing(tiles, sheet, min(s_dist, s_prox) - f0)
    h_all = sheet.surface.at(tiles.centres_mm())
    tol = max(3.0, 0.05 / dz)
    faces = _local_faces(tiles, h_all + e_prox, seen, f0 + 0.5 * (s_prox - f0), sign)
    ok = _consistent(h_all, seen, tiles.grid, tol) & (np.abs(faces - (h_all + e_prox)) <= tol)
    if not ok.any():
        raise SegmentationError("the sheet is seen in no tile")
    positions = np.where(ok, h_all, np.nan)
    if rim is not None:
        positions = _follow_to_rim(tiles, positions, rim, min(s_dist, s_prox) - f0)
    found = np.isfinite(positions)
    h = positions[found]
    centres = tiles.centres_mm()[found]
    prox_face = sign * _supported_extreme(sign * (h + e_prox), centres)
    dist_face = -sign * _supported_extreme(-sign * (h + e_dist), centres)
    # agreement of the estimates of the proximal-most point: the plain maximum, the
    # highest reached in 1 to 3 sectors, the 90th percentile
    estimates = [_supported_extreme(sign * (h + e_prox), centres, k) for k in (1, 2, 3)]
    estimates.append(float(np.quantile(sign * (h + e_prox), 0.9)))
    spread = (max(estimates) - min(estimates)) * dz
    if sign > 0:
        ref = int(math.ceil(prox_face + 0.5))
        distal = int(math.floor(dist_face + 0.5))
    else:
        ref = int(math.floor(prox_face - 0.5))
        distal = int(math.ceil(dist_face - 0.5))
    ref = min(max(ref, 0), nz - 1)
    distal = min(max(distal, 0), nz - 1)
    shoulder = min(s_dist, s_prox)
    # coverage: tiles with an interior on the sheet, of those with an interior in the
    # slices the sheet crosses
    contrast = shoulder - f0
    cues = {
        "contrast": contrast,
        "bridged_ratio": f0 / shoulder if shoulder > 0 else 1.0,
        "thickness_mm": abs(e_prox - e_dist) * dz,
        "coverage": float(seen.sum() / max(1, sheet.tiles_used.sum())),
        "edge_spread_mm": spread,
    }
    return ref, distal, ref - sign, cues


def _follow_to_rim(tiles: TileProfiles, positions: np.ndarray, rim: RimTiles,
                   contrast: float) -> np.ndarray:
    """``positions`` (NaN off the plate) grown into the tiles of the rim: the slices around
    the plate re-read with the interior out to :data:`RIM_MARGIN_MM`."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    pad = int(round(0.4 / dz))
    a = max(0, int(math.floor(np.nanmin(positions))) - pad)
    b = min(nz, int(math.ceil(np.nanmax(positions))) + pad + 1)
    rt = rim(a, b)
    frac = tile_fraction(rt, 1)
    depth = dip_depth(frac.T, max(2, int(round(SHOULDER_MM / dz))))
    seeds = {int(t): (math.inf, float(positions[t] - a))
             for t in np.flatnonzero(np.isfinite(positions))}
    grown = grow_positions(frac, depth, tiles.grid, seeds, 0.5 * contrast,
                           max(2, int(round(STEP_MM / dz)))) + a
    return np.where(np.isfinite(positions), positions, grown)


def _supported_extreme(values: np.ndarray, centres_mm: np.ndarray,
                       needed: int | None = None) -> float:
    """The highest value found in at least :data:`FACE_SECTORS_NEEDED` of the
    :data:`FACE_SECTORS` angular sectors around the tiles' centroid, each by
    :data:`FACE_TILES_NEEDED` tiles: the plate's
    proximal-most point where it rises at the rim of the cavity (a W, a tilted plate rise on
    opposite sides or along an arc), not where one patch of rim tiles sees a marrow space."""
    d = centres_mm - centres_mm.mean(axis=0)
    sector = ((np.arctan2(d[:, 0], d[:, 1]) + math.pi) / (2 * math.pi)
              * FACE_SECTORS).astype(int) % FACE_SECTORS
    # a sector's value is its FACE_TILES_NEEDED-th highest tile: one tile is no face
    highs = np.sort([np.sort(values[sector == k])[-min(FACE_TILES_NEEDED, n)]
                     for k in range(FACE_SECTORS) if (n := int(np.sum(sector == k)))])[::-1]
    k = FACE_SECTORS_NEEDED if needed is None else needed
    return float(highs[min(k, highs.size) - 1])


def _local_faces(tiles: TileProfiles, predicted: np.ndarray, mask: np.ndarray, level: float,
                 sign: int) -> np.ndarray:
    """Each masked tile's own proximal cartilage face (with its eight neighbours): from its
    lowest bone fraction within 0.1 mm distal of the ``predicted`` face, the first slice
    proximally where the fraction reaches ``level``; NaN elsewhere or where it never does
    within 0.1 mm of the prediction. A tile whose face is not where the surface puts it
    sees something else (the rim of the cavity, a marrow space)."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    frac = tile_fraction(tiles, 1)
    w = max(2, int(round(0.1 / dz)))
    out = np.full(predicted.size, np.nan)
    for t in np.flatnonzero(mask):
        p = int(round(predicted[t]))
        zs = np.arange(p - sign * w, p + sign * (w + 1), sign)
        zs = zs[(zs >= 0) & (zs < nz)]
        f = frac[zs, t]
        if f.size < 3 or np.all(np.isnan(f)):
            continue
        k0 = int(np.nanargmin(f[: w + 1])) if np.any(np.isfinite(f[: w + 1])) else 0
        above = np.flatnonzero(np.nan_to_num(f[k0:], nan=-1.0) >= level)
        if above.size:
            out[t] = zs[k0 + above[0]]
    return out


def _consistent(values: np.ndarray, mask: np.ndarray, grid: tuple[int, int], tol: float
                ) -> np.ndarray:
    """``mask`` without the tiles whose value differs by more than ``tol`` from the median
    of their masked neighbours (a lone tile far off the plate's surface)."""
    v = np.where(mask, values, np.nan).reshape(grid)
    pad = np.pad(v, 1, constant_values=np.nan)
    gy, gx = grid
    neigh = np.stack([pad[1 + dy : 1 + dy + gy, 1 + dx : 1 + dx + gx]
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tiles without masked neighbours
        med = np.nanmedian(neigh, axis=0)
    ok = np.isfinite(v) & np.isfinite(med) & (np.abs(v - med) <= tol)
    return ok.ravel()


def _tiles_seeing(tiles: TileProfiles, sheet: Sheet, contrast: float) -> np.ndarray:
    """``(T,)`` bool: tiles on the sheet (each with its eight neighbours) whose own flattened
    profile dips at the sheet by at least half the overall contrast: where the plate is
    seen. Its share of the tiles on the sheet says whether the plate is continuous."""
    dz = tiles.spacing[0]
    nz = tiles.shape[0]
    frac = tile_fraction(tiles, 1)
    cols = np.flatnonzero(sheet.tiles_used)
    seen = np.zeros(sheet.tiles_used.size, dtype=bool)
    if cols.size == 0:
        return seen
    base = np.rint(sheet.surface.at(tiles.centres_mm())[cols]).astype(np.int64)
    z = base[:, None] + sheet.offsets[None, :]
    inside = (z >= 0) & (z < nz)
    f = np.full(z.shape, np.nan)
    f[inside] = frac[z[inside], np.broadcast_to(cols[:, None], z.shape)[inside]]
    half = max(2, int(round(SHOULDER_MM / dz)))
    c = sheet.offsets.size // 2
    w = max(1, int(round(0.05 / dz)))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tiles leaving the stack: NaN
        bottom = np.nanmin(f[:, c - w : c + w + 1], axis=1)
        left = np.nanmax(f[:, max(0, c - half) : c], axis=1)
        right = np.nanmax(f[:, c + 1 : c + half + 1], axis=1)
        dip = np.minimum(left, right) - bottom
    seen[cols] = np.nan_to_num(dip, nan=-1.0) >= 0.5 * contrast
    return seen


def sheet_span(sheet: Sheet, tiles: TileProfiles) -> float:
    """Share of the cross-section a sheet spans: its tiles over the tiles with an interior in
    any slice it crosses. The growth plate spans the whole marrow cavity; a sheet pieced
    together from marrow spaces of sparse bone does not."""
    h = sheet.surface.at(tiles.centres_mm())[sheet.tiles_used]
    a = max(0, int(math.floor(h.min())))
    b = min(tiles.shape[0], int(math.ceil(h.max())) + 1)
    there = tiles.usable()[a:b].any(axis=0).sum()
    return float(sheet.tiles_used.sum() / max(1, there))


def _distinct(fits: list[tuple[float, Sheet]], tiles: TileProfiles
              ) -> list[tuple[float, Sheet]]:
    """``fits`` (best first) without those that converged onto a better one: a sheet whose
    median distance to a kept sheet, over the tiles both cover, is under :data:`SHOULDER_MM`
    is the same plate, not a rival."""
    centres = tiles.centres_mm()
    dz = tiles.spacing[0]
    kept: list[tuple[float, Sheet, np.ndarray]] = []
    for score, sheet in fits:
        h = np.where(sheet.tiles_used, sheet.surface.at(centres), np.nan)
        same = False
        for _, _, h_kept in kept:
            both = np.isfinite(h) & np.isfinite(h_kept)
            if both.any() and np.median(np.abs(h[both] - h_kept[both])) * dz < SHOULDER_MM:
                same = True
                break
        if not same:
            kept.append((score, sheet, h))
    return [(score, sheet) for score, sheet, _ in kept]


def _distal_end(sheet: Sheet, tiles: TileProfiles, zs: np.ndarray,
                end_by_shape: Callable[[], tuple[str, str]] | None) -> str:
    """The end nearer the sheet when it is at least 0.5 mm nearer one end of the slices with
    an interior (``zs``), else ``end_by_shape()``."""
    dz = tiles.spacing[0]
    h = sheet.surface.at(tiles.centres_mm())[sheet.tiles_used]
    centre = float(np.median(h))
    d_first, d_last = (centre - zs[0]) * dz, (zs[-1] - centre) * dz
    if abs(d_first - d_last) >= 0.5:
        return "first" if d_first < d_last else "last"
    if end_by_shape is not None:
        return end_by_shape()[0]
    raise SegmentationError(
        "cannot tell which end is distal: the growth plate is about as far from both "
        "ends; give the distal end explicitly (--distal-end first|last)"
    )


def _at_an_end(sheet: Sheet, tiles: TileProfiles, zs: np.ndarray) -> bool:
    """The sheet comes within :data:`NEAR_END_MM` of the first or last slice with an interior
    (``zs``: those slices, in order)."""
    h = sheet.surface.at(tiles.centres_mm())[sheet.tiles_used]
    near = NEAR_END_MM / tiles.spacing[0]
    return bool(h.min() - zs[0] < near or zs[-1] - h.max() < near)


def _factor(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good``, linear between (either order)."""
    if good == bad:
        return 1.0
    return float(np.clip((value - bad) / (good - bad), 0.0, 1.0))


def find_plate(tiles: TileProfiles, *, distal_end: str | None = None,
               end_by_shape: Callable[[], tuple[str, str]] | None = None,
               rim: RimTiles | None = None, n_candidates: int = 6) -> GrowthPlate:
    """Find the growth plate as a sheet (module notes), with confidence and named flags.

    Parameters
    ----------
    tiles : TileProfiles
        The scan's (or slab's) tile profiles.
    distal_end : {'first', 'last'}, optional
        Which end is distal; by default the end nearer the plate when the plate is at least
        0.5 mm nearer one end, else ``end_by_shape()``.
    end_by_shape : callable, optional
        Returns ``(end, why)`` from the bone's shape (wide condyles); raises when the ends
        look alike.
    rim : callable, optional
        :data:`RimTiles` of the scan: the plate is then followed out to the cortical shell.
    n_candidates : int
        Planes fitted and compared (the best and its rivals).

    Returns
    -------
    GrowthPlate

    Raises
    ------
    SegmentationError
        No sheet scoring at least :data:`MIN_SCORE` (no plate), a best
        sheet with at least :data:`CLOSED_RATIO` of its surroundings' bone (a closed plate),
        or the distal end cannot be told.

    Notes
    -----
    Candidates: the :func:`search_planes` planes, each bent, waved and grown into a sheet
    (:func:`fit_sheet`), ranked by their score: :func:`sheet_score` (how deep and how
    sharply bounded the sheet's dip is) times :func:`sheet_span` (how much of the
    cross-section it spans); a sheet against an end of the bone (within :data:`NEAR_END_MM`)
    is set aside while another scores, and one seen in no tile is passed over.
    ``confidence`` is the product of five factors, each 0-1 and linear between the bounds of
    its ``*_FACTOR`` constant: contrast of the flattened profile, uniqueness (the best
    rival's score over the plate's), continuity (share of its tiles that see it), openness
    (its bone over its shoulders') and agreement of the estimates of its proximal-most point
    (their spread, mm); a plate near the scan end, of implausible thickness, or in a scan
    whose distal end is a cut through the bone (:data:`CUT_END_SHARE`) halves it.
    Every cause of doubt is named in ``flags`` (a confidence below :data:`LOW_CONFIDENCE`
    always is). The bounds were set on the realistic study
    (:func:`ctmorph.phantoms.make_realistic_study`; docs/realistic.md).
    """

    dz = tiles.spacing[0]
    planes = search_planes(tiles, n_best=n_candidates)
    fits = []
    for plane in planes[:n_candidates]:
        sheet = fit_sheet(tiles, plane)
        if sheet.tiles_used.any():
            fits.append((sheet_score(sheet.profile, dz) * sheet_span(sheet, tiles), sheet))
    fits = _distinct(sorted(fits, key=lambda x: -x[0]), tiles)
    used = tiles.usable().any(axis=1)
    zs = np.flatnonzero(used)
    plausible = [f for f in fits if f[0] >= MIN_SCORE and sheet_span(f[1], tiles) >= MIN_SPAN
                 and not _at_an_end(f[1], tiles, zs)]
    if plausible:
        # a sheet against an end of the bone (inside the condyles' end cap: no epiphysis
        # beyond it) or across a small part of the cavity is not the plate, nor its rival,
        # while a sheet spanning the cavity with bone on both sides scores
        logger.debug("sheets set aside (at an end or spanning little): scores %s",
                     [round(f[0], 3) for f in fits if f not in plausible])
        fits = plausible
    if not fits or fits[0][0] < MIN_SCORE:
        best = (f"best score {fits[0][0]:.3f} < {MIN_SCORE}" if fits
                else "no candidate at all")
        raise SegmentationError(
            "no growth plate found: no sheet nearly free of bone between dense bone crosses "
            f"the marrow cavity ({best}); a closed growth plate (an "
            "adult animal?) has none: place the VOI by hand (ctmorph review, --ref-slice, "
            "--overrides) or "
            "use --roi-offset-frac or another ROI mode"
        )
    given = distal_end
    for k, (score, sheet) in enumerate(fits):
        if score < MIN_SCORE:
            raise SegmentationError(_SEEN_NOWHERE)
        distal_end = given or _distal_end(sheet, tiles, zs, end_by_shape)
        try:
            ref, distal, proximal, cues = plate_from_sheet(tiles, sheet, distal_end, rim)
        except SegmentationError as exc:  # a sheet seen in no tile: the next one
            logger.debug("sheet %d (score %.3f) set aside: %s", k, score, exc)
            continue
        rival = fits[k + 1][0] / score if k + 1 < len(fits) else 0.0
        break
    else:
        raise SegmentationError(_SEEN_NOWHERE)
    end_mm = (distal - zs[0]) * dz if distal_end == "first" else (zs[-1] - distal) * dz
    span = sheet_span(sheet, tiles)
    # continuity over the whole cross-section: the tiles that see the plate, of all tiles
    # with an interior in the slices it crosses
    cues.update({"score": score, "span": span, "coverage": cues["coverage"] * span,
                 "rival_ratio": rival, "end_distance_mm": end_mm})
    if cues["bridged_ratio"] >= CLOSED_RATIO:
        raise SegmentationError(
            f"no open growth plate: the best sheet between the epiphysis and the metaphysis "
            f"holds {cues['bridged_ratio']:.0%} of the bone of its surroundings (a closed or "
            "closing plate, an older animal?), so no reference can be placed from it: place "
            "the VOI by hand (ctmorph review, --ref-slice, --overrides) or use "
            "--roi-offset-frac or another ROI mode"
        )
    factors = {
        "contrast": _factor(cues["contrast"], *CONTRAST_FACTOR),
        "uniqueness": _factor(rival, *RIVAL_FACTOR),
        "continuity": _factor(cues["coverage"], *COVERAGE_FACTOR),
        "openness": _factor(cues["bridged_ratio"], *BRIDGED_FACTOR),
        "edge agreement": _factor(cues["edge_spread_mm"], *SPREAD_FACTOR),
    }
    conf = math.prod(factors.values())
    flags = []
    if rival >= RIVAL_RATIO:
        flags.append(f"{FLAG_TWO_PLATES} (the second scores {rival:.0%} of the first)")
    if cues["bridged_ratio"] >= BRIDGED_RATIO:
        flags.append(f"{FLAG_BRIDGED} (bone in {cues['bridged_ratio']:.0%} of the shoulders' "
                     "fraction)")
    if cues["contrast"] < FAINT_CONTRAST:
        flags.append(f"{FLAG_FAINT} (contrast {cues['contrast']:.2f})")
    if cues["coverage"] < MIN_COVERAGE:
        flags.append(f"{FLAG_PATCHY} ({cues['coverage']:.0%} of it)")
    if cues["edge_spread_mm"] > MAX_SPREAD_MM:
        flags.append(f"{FLAG_EDGE} (its estimates spread {cues['edge_spread_mm']:.2f} mm)")
    if end_mm < NEAR_END_MM:  # flagged by ctmorph.qc.qc_flags from the row
        conf *= 0.5
    inner = tiles.inner.sum(axis=1, dtype=np.int64)
    end_share = float(inner[zs[0] if distal_end == "first" else zs[-1]] / np.median(inner[zs]))
    cues["distal_end_share"] = end_share
    if end_share >= CUT_END_SHARE:
        flags.append(f"{FLAG_CUT} (its first slice holds {end_share:.0%} of the median "
                     "cross-section)")
        conf *= 0.5
    lo_t, hi_t = THICKNESS_MM
    if not lo_t <= cues["thickness_mm"] <= hi_t:
        flags.append(f"{FLAG_THICKNESS} ({cues['thickness_mm']:.2f} mm)")
        conf *= 0.5
    if conf < LOW_CONFIDENCE and not flags:  # a low confidence always names its cause
        weakest = min(factors, key=factors.get)
        flags.append(f"{FLAG_LOW} ({conf:.2f}; weakest cue: {weakest})")
    cues.update({f"f_{k.replace(' ', '_')}": v for k, v in factors.items()})
    return GrowthPlate(ref, distal, proximal, distal_end, float(conf), tuple(flags), cues,
                        sheet)
