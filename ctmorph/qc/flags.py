"""Flags for implausible results: the ``qc_flags`` column of ``morphometry.csv``
(:func:`qc_flags`), with the plausible ranges of the rat distal femoral metaphysis."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..segment.femur.plate import NEAR_END_MM

__all__ = [
    "qc_flags",
    "finite_number",
    "RAT_BVTV_PERCENT",
    "RAT_TBTH_MM",
    "RAT_TBSP_MM",
    "PLATE_MODEL_RATIO",
    "MIN_PLATE_END_DISTANCE_MM",
    "MIN_VOI_HEIGHT_FRACTION",
]

# QC flags
#
# Plausible ranges of the rat distal femoral metaphysis (secondary spongiosa 1-3 mm proximal
# of the growth plate) at 9-20 µm voxels, sham and OVX. The one table checked for these bounds:
# distal femoral metaphysis of male rats, sham vs orchiectomy, PMC8366408 Table 2 (BV/TV
# 13-18 %, Tb.N 1.3-1.7 /mm, Tb.Th 0.10-0.11 mm, Tb.Sp 0.43-0.55 mm); ovariectomised female rats
# lose more trabecular bone than that. The bounds are deliberately far
# from any group mean (Tb.Th and Tb.Sp by a factor ~2 or more, BV/TV down to 1 % and up to
# 60 %), so a real sham or OVX femur is not flagged; a flag means the VOI, the segmentation or
# the units went wrong. None of the nine sample-study femurs is flagged (tests/test_qc.py).

#: BV/TV (%) outside which an auto-ROI rat row is flagged.
RAT_BVTV_PERCENT = (1.0, 60.0)
#: Tb.Th (mm): below 0.03 mm (3 voxels at 9 µm) is noise segmented as bone, above 0.25 mm
#: is cortex or growth-plate bone inside the VOI.
RAT_TBTH_MM = (0.03, 0.25)
#: Tb.Sp (mm): below 0.05 mm the marrow is closed up (threshold too low), above 3 mm there is
#: hardly any trabecular bone in the VOI (VOI in the diaphysis, threshold too high).
RAT_TBSP_MM = (0.05, 3.0)
#: Band of k = (BV/TV) / (Tb.N · Tb.Th). Parallel plates give k = 1 (the plate model) up to the
#: ±0.5-voxel discretisation of Tb.Th and Tb.N (0.83-1.17 for 3-4 voxel plates; the sample
#: study's perforated sheets read 0.75-1.14); rods give less: on ctmorph's cubic rod lattices
#: (pitch 20-40, diameter 3-9 voxels) k = (3.2-4.1) · Tb.Th / (Tb.Th + Tb.Sp), so the
#: sparsest rat OVX bone (Tb.Th 0.06, Tb.Sp 1.5 mm), if all rods, reads k ≈ 0.14. The band is
#: 0.7 × that below and 2 × the plate model above: it catches gross inconsistencies (a broken
#: skeleton, wrong units, a VOI outside the bone), not architecture.
PLATE_MODEL_RATIO = (0.1, 2.0)
#: Distance (mm) from the plate's distal-most slice to the distal end of the scan below which
#: the plate is flagged: the rat distal epiphysis spans ~0.75 mm (intercondylar notch, and the
#: sample-study femurs) to ~3 mm (condyles) distal of the plate, so a plate within 0.3 mm
#: (33 slices at 9 µm) of the end has no epiphysis beyond it: the scan was cut at the plate,
#: or the cut end was taken for the plate.
MIN_PLATE_END_DISTANCE_MM = NEAR_END_MM
#: The auto VOI is flagged when shorter than this fraction of the requested height (it is cut
#: where the scan or the endocortical region ends; whole-slice rounding costs < 1 %).
MIN_VOI_HEIGHT_FRACTION = 0.8


def finite_number(value: Any) -> float | None:
    """A finite float from a row value (float, int, numpy scalar or CSV string), else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _g(x: float) -> str:
    return f"{x:g}"


def qc_flags(row: Mapping[str, Any], *, requested_height_mm: float | None = None) -> list[str]:
    """Short, human-readable flags for implausible results of one ``morphometry.csv`` row.

    Parameters
    ----------
    row : mapping
        One row (in-memory values or the strings of a CSV read back). Keys used: ``status``,
        ``roi``, ``BV/TV`` (%), ``Tb.Th``, ``Tb.Sp`` (mm), ``Tb.N`` (1/mm),
        ``plate_end_distance_mm``, ``voi_height_mm`` (mm), ``roi_height_mm`` (requested, mm;
        or ``requested_height_mm``) and ``calibration_mismatch``. Missing or empty values are
        not checked.
    requested_height_mm : float, optional
        Requested VOI height (mm), when the row does not carry ``roi_height_mm``.

    Returns
    -------
    list of str
        One flag per problem, each naming the value and the expected range, e.g.
        ``"BV/TV 78.0 % outside the rat metaphysis range 1-60 %"``. Empty when nothing is
        implausible, and for failed rows (their ``error`` says why).

    Notes
    -----
    The rat ranges (:data:`RAT_BVTV_PERCENT`, :data:`RAT_TBTH_MM`, :data:`RAT_TBSP_MM`), the
    plate-model consistency (:data:`PLATE_MODEL_RATIO`), the growth-plate position and the
    VOI height apply only to ``roi == 'auto'`` rows (rat distal femur); rows of other ROI modes
    (phantoms, cores, other species) get only the calibration flag.

    Examples
    --------
    >>> qc_flags({"status": "ok", "roi": "auto", "BV/TV": 78.0})
    ['BV/TV 78.0 % outside the rat metaphysis range 1-60 %']
    """
    if str(row.get("status", "ok") or "ok") != "ok":
        return []
    flags: list[str] = []
    auto = str(row.get("roi", "") or "") == "auto"
    bvtv = finite_number(row.get("BV/TV"))
    tbth = finite_number(row.get("Tb.Th"))
    tbsp = finite_number(row.get("Tb.Sp"))
    tbn = finite_number(row.get("Tb.N"))
    if auto:
        where = "the rat metaphysis range"
        lo, hi = RAT_BVTV_PERCENT
        if bvtv is not None and not lo <= bvtv <= hi:
            flags.append(f"BV/TV {bvtv:.1f} % outside {where} {_g(lo)}-{_g(hi)} %")
        lo, hi = RAT_TBTH_MM
        if tbth is not None and not lo <= tbth <= hi:
            flags.append(f"Tb.Th {tbth:.3f} mm outside {where} {_g(lo)}-{_g(hi)} mm")
        lo, hi = RAT_TBSP_MM
        if tbsp is not None and not lo <= tbsp <= hi:
            flags.append(f"Tb.Sp {tbsp:.2f} mm outside {where} {_g(lo)}-{_g(hi)} mm")
        if bvtv is not None and tbth is not None and tbn is not None:
            product = 100.0 * tbn * tbth  # Tb.N·Tb.Th in % of the VOI, like BV/TV
            lo, hi = PLATE_MODEL_RATIO
            k = bvtv / product if product > 0 else math.inf
            if not lo <= k <= hi:
                flags.append(
                    f"Tb.N·Tb.Th {product:.1f} % inconsistent with BV/TV {bvtv:.1f} % "
                    f"(ratio {k:.2f}, expected {_g(lo)}-{_g(hi)}: plates 1, rods less)"
                )
        dist = finite_number(row.get("plate_end_distance_mm"))
        if dist is not None and dist < MIN_PLATE_END_DISTANCE_MM:
            flags.append(
                f"growth plate {dist:.2f} mm from the distal end of the scan "
                f"(expected >= {_g(MIN_PLATE_END_DISTANCE_MM)} mm: epiphysis missing?)"
            )
        height = finite_number(row.get("voi_height_mm"))
        wanted = finite_number(requested_height_mm)
        if wanted is None:
            wanted = finite_number(row.get("roi_height_mm"))
        if height is not None and wanted is not None and wanted > 0 \
                and height < MIN_VOI_HEIGHT_FRACTION * wanted:
            flags.append(
                f"VOI {height:.2f} mm long, {100 * height / wanted:.0f} % of the requested "
                f"{_g(wanted)} mm (scan or bone ends too soon)"
            )
    mismatch = row.get("calibration_mismatch")
    if isinstance(mismatch, str) and mismatch.strip():
        flags.append(f"calibration mismatch: {mismatch.strip()}")
    return flags


