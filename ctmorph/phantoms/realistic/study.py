"""The hard realistic study: its design table and the writer of NRecon folders, groups.csv
and truth.json."""


from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._atomic import atomic_write_text
from ...errors import ConfigError
from ..fields import (
    replace_folder_atomic,
)
from .design import (
    GREY_LEVELS,
    GROUP_DESIGNS,
    LABELS,
    REFERENCE_CS_WINDOW,
    Anatomy,
    ScanSettings,
    Specimen,
    finite,
)
from .scan import make_realistic_femur
from .truth import jsonable

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# the hard study

#: Folder stems of the study's groups.
_FOLDERS = {"sham": "sham", "OVX": "OVX", "OVX+Exos": "OVXExos", "adult": "adult"}


def realistic_study_design(*, seed: int = 2026, n_per_group: int = 4, size: float = 0.5
                           ) -> list[dict[str, Any]]:
    """The femurs of :func:`make_realistic_study`: one dict per femur.

    Each dict has ``scan`` (folder name), ``group`` (``sham``, ``OVX``, ``OVX+Exos`` or
    ``adult``), ``seed`` and the :class:`Anatomy`, :class:`Specimen` and
    :class:`ScanSettings` it is generated with (``anatomy``, ``specimen``, ``scan``). Femur
    ``k`` of a group takes row ``k mod 4`` of that group's table of departures (below), so the
    default ``n_per_group=4`` covers every departure; animals vary further by seed (BV/TV ±10 %,
    plate level, amplitude, rotation, the perichondrial ring open over 50-100 % of the
    circumference). The adult femur (no growth plate) is always added.

    Parameters
    ----------
    seed : int
        Study seed.
    n_per_group : int
        Femurs per group (>= 1).
    size : float
        Macro-anatomy scale of most femurs (the 9-10 µm femurs use 0.8 x ``size``).

    Returns
    -------
    list of dict
    """
    if not (isinstance(n_per_group, (int, np.integer)) and n_per_group >= 1):
        raise ConfigError(f"n_per_group must be an integer >= 1, got {n_per_group!r}")
    finite("size", size, 0.3, 1.5)
    wide = (-0.005, 0.12)  # a wider CS window: bone ~150 grey in 8 bits
    # per group: rows of (anatomy overrides, specimen overrides, scan overrides)
    tables: dict[str, list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]] = {
        "sham": [
            (dict(plate_shape="dome", bridged_fraction=0.03),
             dict(bubbles=3, foam_end="distal"),
             dict(voxel_um=15.0, round_roi=True, rings=4, cupping_grey=12.0)),
            (dict(plate_shape="w", plate_amplitude_mm=0.25, bridged_fraction=0.10),
             dict(soft_tissue_coverage=0.6, soft_tissue_mm=0.3, bone_offset_mm=(0.25, -0.2),
                  foam_end="proximal"),
             dict(voxel_um=13.0, tilt_deg=6.0, tilt_azimuth_deg=40.0, distal_first=False,
                  bit_depth=16, first_section=213, fov_margin_mm=-0.3)),
            (dict(plate_thickness_mm=0.10, primary_bv_tv=0.22, cartilage_grey=76.0,
                  epiphysis_bv_tv=0.34),
             dict(bubbles=2),
             dict(voxel_um=18.0, tilt_deg=12.0, tilt_azimuth_deg=200.0, specks=12,
                  cupping_grey=25.0, spin_deg=35.0)),
            (dict(plate_shape="dome", plate_tilt_deg=12.0, plate_tilt_azimuth_deg=90.0,
                  bridged_fraction=0.15, size_factor=0.8),
             dict(bubbles=4),
             dict(voxel_um=10.0, tilt_deg=4.5, tilt_azimuth_deg=300.0, distal_first=False,
                  round_roi=True, index_length=8, fov_margin_mm=-0.3)),
        ],
        "OVX": [
            (dict(plate_shape="w", plate_amplitude_mm=0.2, bridged_fraction=0.05),
             dict(bubbles=6, bubble_radius_mm=(0.05, 0.25)),
             dict(voxel_um=20.0, tilt_deg=3.0, tilt_azimuth_deg=120.0, bit_depth=16,
                  rings=3, first_section=88)),
            (dict(plate_thickness_mm=0.06, bridged_fraction=0.60, bridge_size_mm=0.1,
                  plate_amplitude_mm=0.1),
             dict(soft_tissue_coverage=0.5, soft_tissue_mm=0.25),
             dict(voxel_um=15.0, tilt_deg=9.0, tilt_azimuth_deg=10.0, distal_first=False,
                  spin_deg=120.0, fov_margin_mm=-0.3)),
            (dict(plate_thickness_mm=0.09, primary_bv_tv=0.25, cartilage_grey=74.0,
                  size_factor=0.8),
             dict(foam_end="distal"),
             dict(voxel_um=9.0, round_roi=True, rings=6, ring_amplitude=10.0,
                  noise_sd=9.0, fov_margin_mm=-0.3)),
            (dict(plate_shape="dome", plate_amplitude_mm=0.3, bridged_fraction=0.08,
                  bv_tv=0.05),
             dict(bubbles=3, foam_end="distal"),
             dict(voxel_um=14.0, tilt_deg=7.5, tilt_azimuth_deg=250.0, bit_depth=16,
                  cs_window=wide, distal_margin_mm=0.0, fov_margin_mm=-0.3)),
        ],
        "OVX+Exos": [
            (dict(plate_shape="w", plate_tilt_deg=8.0, plate_tilt_azimuth_deg=0.0,
                  bridged_fraction=0.06),
             dict(soft_tissue_coverage=0.7, soft_tissue_mm=0.35),
             dict(voxel_um=16.0, tilt_deg=12.0, tilt_azimuth_deg=90.0, distal_first=False,
                  bit_depth=16, spin_deg=250.0, fov_margin_mm=-0.2)),
            (dict(plate_shape="dome", plate_amplitude_mm=0.3, bridged_fraction=0.0),
             dict(bubbles=5, foam_end="proximal"),
             dict(voxel_um=12.0, tilt_deg=2.0, tilt_azimuth_deg=330.0, specks=20,
                  fov_margin_mm=-0.3)),
            (dict(plate_thickness_mm=0.08, primary_bv_tv=0.28, plate_shape="flat",
                  bridged_fraction=0.12),
             dict(bubbles=2),
             dict(voxel_um=20.0, tilt_deg=5.0, tilt_azimuth_deg=160.0, cupping_grey=20.0,
                  fov_margin_mm=-0.3, round_roi=True)),
            (dict(plate_shape="w", plate_amplitude_mm=0.15, bridged_fraction=0.04),
             dict(bone_offset_mm=(-0.3, 0.3), bubbles=2),
             dict(voxel_um=16.0, tilt_deg=10.0, tilt_azimuth_deg=45.0, distal_first=False,
                  cs_window=wide, tube_offset_mm=(-0.2, 0.1), first_section=400,
                  fov_margin_mm=-0.25)),
        ],
    }
    out: list[dict[str, Any]] = []
    i = 0
    groups = [("sham", k) for k in range(n_per_group)] + \
        [("OVX", k) for k in range(n_per_group)] + \
        [("OVX+Exos", k) for k in range(n_per_group)] + [("adult", 0)]
    for group, k in groups:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7, i]))
        femur_seed = int(np.random.SeedSequence([int(seed), 8, i]).generate_state(1)[0])
        if group == "adult":
            a_over: dict[str, Any] = dict(group="sham", plate_present=False, bv_tv=0.18)
            s_over: dict[str, Any] = dict(bubbles=2, soft_tissue_coverage=0.4)
            c_over: dict[str, Any] = dict(voxel_um=15.0, tilt_deg=6.0,
                                          tilt_azimuth_deg=150.0)
        else:
            a_over, s_over, c_over = (dict(d) for d in tables[group][k % 4])
            a_over["group"] = group
            base = GROUP_DESIGNS[group].bv_tv
            a_over.setdefault("bv_tv", round(base * float(np.clip(
                1 + 0.1 * rng.standard_normal(), 0.8, 1.2)), 4))
        factor = a_over.pop("size_factor", 1.0)
        a_over.setdefault("plate_level_mm", round(float(rng.uniform(1.85, 2.15)), 3))
        a_over.setdefault("plate_amplitude_mm", round(float(rng.uniform(0.08, 0.2)), 3))
        a_over.setdefault("plate_thickness_mm", round(float(rng.uniform(0.12, 0.2)), 3))
        a_over.setdefault("plate_tilt_deg", round(float(rng.uniform(0.0, 4.0)), 2))
        a_over.setdefault("plate_tilt_azimuth_deg", round(float(rng.uniform(0, 360)), 1))
        a_over["size"] = round(size * factor, 4)
        c_over.setdefault("spin_deg", round(float(rng.uniform(0, 360)), 1))
        c_over.setdefault("noise_sd", round(float(rng.uniform(5.0, 9.0)), 2))
        c_over.setdefault("cupping_grey", round(float(rng.uniform(5.0, 15.0)), 2))
        c_over.setdefault("first_section", int(rng.integers(0, 600)))
        if a_over.get("plate_present", True):  # drawn last: the draws above stay as they were
            a_over.setdefault("ring_open_fraction", round(float(rng.uniform(0.5, 1.0)), 2))
        name = f"{_FOLDERS[group]}_{k + 1:02d}"
        out.append({
            "scan": name,
            "group": group,
            "seed": femur_seed,
            "anatomy": Anatomy(**a_over),
            "specimen": Specimen(**s_over),
            "scan_settings": ScanSettings(**c_over),
        })
        i += 1
    return out


def _make_and_write(out: Path, d: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    fem = make_realistic_femur(d["anatomy"], d["specimen"], d["scan_settings"], seed=d["seed"])
    t_gen = time.perf_counter() - t0
    replace_folder_atomic(out, d["scan"], lambda folder: fem.write_nrecon(folder))
    morph = fem.truth_morphometry()
    rec = {"scan": d["scan"], "group": d["group"], **fem.truth_record()}
    rec["truth_morphometry"] = jsonable(morph)
    for key in ("BV/TV", "Tb.Th", "Tb.Sp", "Tb.N"):
        rec[key] = jsonable(morph.get(key))
    rec["generation_seconds"] = round(t_gen, 2)
    logger.info("wrote %s (%s, %s voxels, ref %s) in %.1f s", d["scan"], d["group"],
                "x".join(str(v) for v in fem.labels.shape), rec["ref_slice"],
                time.perf_counter() - t0)
    return rec


def make_realistic_study(
    directory: str | os.PathLike[str],
    *,
    seed: int = 2026,
    n_per_group: int = 4,
    size: float = 0.5,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Write the hard realistic study: NRecon folders, ``groups.csv`` and ``truth.json``.

    ``3 x n_per_group`` femurs (sham, OVX, OVX+Exos; see :func:`realistic_study_design` for
    their departures) plus one adult femur without a growth plate (group ``adult``; a correct
    finder refuses it). Each scan is written into a temporary folder beside its target and
    renamed into place; ``groups.csv`` and ``truth.json`` are written atomically last. Same
    seed, same bytes (whatever ``jobs``).

    Parameters
    ----------
    directory : str or path
        Study folder (created).
    seed : int
        Study seed.
    n_per_group : int
        Femurs per group (4 covers every departure).
    size : float
        Macro-anatomy scale (1 = a real adult rat; 0.5 keeps the study small).
    jobs : int, optional
        Parallel workers (threads; default up to 2); 1 runs in this thread.

    Returns
    -------
    dict
        The content of ``truth.json``: ``generator``, ``study_seed``, ``units``,
        ``definitions``, ``reference_cs_window``, ``grey_levels``, ``labels`` and ``scans``
        (one record per femur: every parameter, reference, axis, VOI section range, truth
        BV/TV (%), Tb.Th, Tb.Sp (mm) and ``departures``).
    """
    out = Path(directory)
    n_jobs = min(2, os.cpu_count() or 1) if jobs is None else int(jobs)
    if n_jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs!r}")
    designs = realistic_study_design(seed=seed, n_per_group=n_per_group, size=size)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if n_jobs == 1:
        records = [_make_and_write(out, d) for d in designs]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            records = list(pool.map(lambda d: _make_and_write(out, d), designs))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scan", "group"])
    writer.writerows([r["scan"], r["group"]] for r in records)
    atomic_write_text(out / "groups.csv", buf.getvalue())
    for r in records:
        r.pop("generation_seconds", None)  # wall-clock time is not part of the bytes
    truth = {
        "generator": "ctmorph.phantoms.realistic.make_realistic_study",
        "study_seed": int(seed),
        "n_per_group": int(n_per_group),
        "size": float(size),
        "units": {"ref_slice": "section number", "voi_first_slice": "section number",
                  "voi_last_slice": "section number", "BV/TV": "%", "Tb.Th": "mm",
                  "Tb.Sp": "mm", "Tb.N": "1/mm", "voxel_um": "µm",
                  "axis_mm": "mm along the bone axis from the axis point in slice 0's plane",
                  "anatomical_mm": "mm proximal of the condyles' distal-most level",
                  "cs_window": "NRecon CS units", "grey": "8-bit grey, reference window"},
        "definitions": {
            "sections": "planes perpendicular to the bone axis, one voxel apart; voxel p is in "
                        "section round(((p - axis_point) . axis_direction) / voxel)",
            "reference": "one more than the largest section holding growth-plate cartilage; "
                         "ref_slice = first_section + the slice index where the axis crosses "
                         "it; null without cartilage (adult)",
            "voi": "endocortical labels in sections reference + round(1.0 mm / voxel) .. + "
                   "round(2.0 mm / voxel) - 1",
            "BV/TV, Tb.Th, Tb.Sp": "ctmorph.morphometry.trabecular_morphometry of the truth "
                                   "bone in the truth VOI (endocortical marrow space, 0.3 mm "
                                   "context)",
        },
        "reference_cs_window": list(REFERENCE_CS_WINDOW),
        "grey_levels": dict(zip(LABELS, GREY_LEVELS, strict=True)),
        "labels": LABELS,
        "scans": records,
    }
    atomic_write_text(out / "truth.json",
                      json.dumps(jsonable(truth), indent=2, ensure_ascii=False) + "\n")
    logger.info("realistic study: %d femurs in %s (%.1f s)", len(records), out,
                time.perf_counter() - t0)
    return truth
