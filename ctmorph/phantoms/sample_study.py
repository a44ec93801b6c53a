"""The deterministic sample study: nine synthetic rat femurs (sham, OVX, OVX+Exos; three
animals each, :func:`ctmorph.phantoms.femur.make_femur`) as NRecon folders plus ``groups.csv``
and ``truth.json``, and two HA calibration phantom scans (0.25 and 0.75 g/cm³) in
``phantoms/``, so BMD and TMD can be measured on the study (``ctmorph samples``)."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .femur import GREY, GROUPS, LABELS, MARROW, TRAB, FemurPhantom, make_femur
from .fields import (
    replace_folder_atomic,
)

__all__ = ["STUDY_GROUPS", "STUDY_DENSITY", "STUDY_PHANTOMS", "make_sample_study", "study_design",
           "study_complete"]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# the sample study

#: Group order of the sample study (control first).
STUDY_GROUPS: tuple[str, ...] = ("sham", "OVX", "OVX+Exos")

#: HA density (g/cm³) of the marrow and of the trabecular bone of the sample study's femurs:
#: their CS window makes grey 64 (marrow) mean the first and grey 200 (trabecular bone) the
#: second under ``DEFAULT_HA_MODEL`` (rat trabecular TMD is about 1.0-1.2 g/cm³ HA).
STUDY_DENSITY: dict[str, float] = {"marrow": 0.0, "trabecular": 1.15}

#: The sample study's HA phantom scans (folder under ``phantoms/``, rod density g/cm³, CS
#: window or None for the femurs' window). Same scanner settings and voxel size as the femurs;
#: the 0.75 rod is reconstructed with another window, as labs often do, so a calibration must go
#: through attenuation rather than grey values.
STUDY_PHANTOMS: tuple[tuple[str, float, tuple[float, float] | None], ...] = (
    ("HA025", 0.25, None),
    ("HA075", 0.75, (-0.005, 0.09)),
)
_PHANTOM_SLICES, _PHANTOM_SIZE, _PHANTOM_ROD_MM = 40, 256, 2.0


def _study_cs_window() -> tuple[float, float]:
    """CS window of the sample study's femurs (see :data:`STUDY_DENSITY`)."""
    from .rods import cs_window_for_levels

    return cs_window_for_levels(
        (float(GREY[MARROW]), float(GREY[TRAB])),
        (STUDY_DENSITY["marrow"], STUDY_DENSITY["trabecular"]),
    )


def _label_density(cs_window: tuple[float, float]) -> np.ndarray:
    """HA density (g/cm³) of each label's grey level under ``cs_window`` (DEFAULT_HA_MODEL)."""
    from .rods import DEFAULT_HA_MODEL as model

    att = cs_window[0] + GREY.astype(np.float64) / 255.0 * (cs_window[1] - cs_window[0])
    return (att - model.matrix_attenuation) / model.attenuation_per_density


def study_design(seed: int, animals_per_group: int) -> list[dict[str, Any]]:
    """Per-scan design of the sample study: names, seeds, stack order, numbering, jitter."""
    designs = []
    i = 0
    for group in STUDY_GROUPS:
        for animal in range(1, animals_per_group + 1):
            rng = np.random.default_rng(np.random.SeedSequence([seed, i, 1]))
            scan_seed = int(np.random.SeedSequence([seed, i, 0]).generate_state(1)[0])
            target = GROUPS[group].bv_tv * float(np.clip(1.0 + 0.08 * rng.standard_normal(),
                                                         0.8, 1.2))
            designs.append(
                {
                    "scan": f"{GROUPS[group].folder}_{animal:02d}",
                    "group": group,
                    "animal": animal,
                    "seed": scan_seed,
                    "distal_first": i % 3 != 2,  # every third stack is stored proximal first
                    "first_section": 0 if i % 3 == 0 else int(rng.integers(60, 640)),
                    "bv_tv_design": round(target, 4),
                    "length_mm": round(4.30 + 0.2 * float(rng.random()), 3),
                    "epiphysis_mm": round(0.72 + 0.08 * float(rng.random()), 3),
                    "plate_thickness_mm": round(0.14 + 0.04 * float(rng.random()), 3),
                    "plate_unevenness_mm": round(0.03 + 0.02 * float(rng.random()), 3),
                    "plate_tilt_deg": round(float(rng.uniform(-1.5, 1.5)), 2),
                }
            )
            i += 1
    return designs


def _write_atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_scan_atomic(
    out_dir: Path, name: str, phantom: FemurPhantom, first_section: int,
    cs_window: tuple[float, float],
) -> None:
    """Write one NRecon folder into a temporary folder beside the target, then rename it."""
    from ..io.writer import write_nrecon_folder

    replace_folder_atomic(out_dir, name, lambda folder: write_nrecon_folder(
        folder,
        phantom.grey,
        voxel_size_um=phantom.voxel_um,
        first_section=first_section,
        index_length=4,
        file_type="bmp",
        cs_window=cs_window,
    ))


def _make_and_write(out: Path, d: dict[str, Any], shape_yx: tuple[int, int], seed: int,
                    cs_window: tuple[float, float]) -> dict[str, Any]:
    """Generate one scan of the study, write it, return its truth record."""
    ph = make_femur(
        group=d["group"],
        seed=d["seed"],
        voxel_um=9.0,
        shape_yx=shape_yx,
        length_mm=d["length_mm"],
        distal_first=d["distal_first"],
        plate_unevenness_mm=d["plate_unevenness_mm"],
        plate_thickness_mm=d["plate_thickness_mm"],
        plate_tilt_deg=d["plate_tilt_deg"],
        epiphysis_mm=d["epiphysis_mm"],
        bv_tv=d["bv_tv_design"],
    )
    _write_scan_atomic(out, d["scan"], ph, d["first_section"], cs_window)
    first = d["first_section"]
    vt = ph.voi_truth
    # truth BMD: mean painted density of the true endocortical VOI (blur and noise keep the
    # mean, but for the cortex blurring into the rim); truth TMD: the trabecular bone's density
    z0, z1 = vt.z0, vt.z1
    lab_voi = ph.labels[z0:z1]
    endo = (lab_voi >= MARROW) & (lab_voi <= TRAB)
    bmd = float(_label_density(cs_window)[lab_voi[endo]].mean()) if endo.any() else math.nan
    logger.info("wrote %s (%s, ref slice %d)", d["scan"], d["group"], first + ph.ref_index)
    return {
        "scan": d["scan"],
        "group": d["group"],
        "seed": d["seed"],
        "study_seed": int(seed),
        "distal_end": ph.distal_end,
        "first_section": first,
        "n_slices": int(ph.grey.shape[0]),
        "voxel_um": ph.voxel_um,
        "ref_index": ph.ref_index,
        "ref_slice": first + ph.ref_index,
        "voi_first_slice": first + vt.z0,
        "voi_last_slice": first + vt.z1 - 1,
        "voi_offset_mm": vt.offset_mm,
        "voi_height_mm": vt.height_mm,
        "bv_tv_group_target": round(100.0 * GROUPS[d["group"]].bv_tv, 3),
        "bv_tv_design": round(100.0 * vt.bv_tv_design, 3),
        "bv_tv_truth": round(100.0 * vt.bv_tv, 3),
        "bmd_truth": round(bmd, 5),
        "tmd_truth": STUDY_DENSITY["trabecular"],
        "length_mm": round(ph.params["length_mm"], 4),
        "epiphysis_mm": d["epiphysis_mm"],
        "plate_thickness_mm": d["plate_thickness_mm"],
        "plate_unevenness_mm": d["plate_unevenness_mm"],
        "plate_tilt_deg": d["plate_tilt_deg"],
    }


def _write_phantoms(out: Path, seed: int, femur_window: tuple[float, float]
                    ) -> list[dict[str, Any]]:
    """Write the HA phantom scans of the study into ``out / 'phantoms'``; their truth records."""
    from .rods import make_ha_phantom

    parent = out / "phantoms"
    parent.mkdir(exist_ok=True)
    records = []
    for k, (name, density, window) in enumerate(STUDY_PHANTOMS):
        win = femur_window if window is None else window
        ph_seed = int(np.random.SeedSequence([seed, 1000 + k]).generate_state(1)[0])
        replace_folder_atomic(
            parent, name, lambda folder, d=density, w=win, s=ph_seed: make_ha_phantom(
                folder, [d], voxel_size_um=9.0, rod_diameter_mm=_PHANTOM_ROD_MM,
                n_slices=_PHANTOM_SLICES, slice_size=_PHANTOM_SIZE, cs_window=w, seed=s,
            ))
        logger.info("wrote phantoms/%s (%g g/cm³ HA)", name, density)
        records.append({
            "scan": name,
            "folder": f"phantoms/{name}",
            "density": density,
            "cs_window": [round(v, 8) for v in win],
            "seed": ph_seed,
            "voxel_um": 9.0,
            "rod_diameter_mm": _PHANTOM_ROD_MM,
            "n_slices": _PHANTOM_SLICES,
            "slice_size": _PHANTOM_SIZE,
        })
    return records


def make_sample_study(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 2026,
    animals_per_group: int = 3,
    shape_yx: tuple[int, int] = (256, 256),
    jobs: int | None = None,
) -> list[dict[str, Any]]:
    """Write the synthetic sample study: NRecon folders, ``groups.csv`` and ``truth.json``.

    Three groups (``sham``, ``OVX``, ``OVX+Exos``) of ``animals_per_group`` rat distal femurs
    at 9 µm, each an NRecon folder of 8-bit BMP slices with a 4-digit section index
    (``sham_01/sham_01_rec0000.bmp`` ..., ``OVXExos_02/...``). Every third stack is stored
    proximal end first, and most stacks start at a non-zero section number, as NRecon numbers
    sections by detector row. Animals differ in BV/TV (±8 % of the group design), growth-plate
    position, thickness, waviness and tilt, and scanned length. Same seed, same bytes
    (whatever ``jobs``).

    The femurs carry the CS window under which marrow is 0 and trabecular bone 1.15 g/cm³ HA
    (:data:`STUDY_DENSITY`) under :data:`ctmorph.phantoms.rods.DEFAULT_HA_MODEL`, and
    ``phantoms/HA025`` and ``phantoms/HA075`` hold scans of a 2 mm HA rod of 0.25 and
    0.75 g/cm³ (:data:`STUDY_PHANTOMS`; same scanner settings and voxel size, 40 slices of
    256 x 256) to calibrate on::

        ctmorph calibrate STUDY/phantoms/HA025 STUDY/phantoms/HA075 --densities 0.25,0.75 \\
            -o calibration.json
        ctmorph analyze STUDY --groups STUDY/groups.csv --calibration calibration.json -o OUT

    (``phantoms/`` holds no slices itself, so :func:`ctmorph.io.find_scan_dirs` on the study
    folder skips it and finds the femurs only.)

    Parameters
    ----------
    out_dir : str or path
        Study folder (created). Existing scan folders of the same names are replaced; each is
        written into a temporary folder beside it and renamed into place.
    seed : int
        Study seed.
    animals_per_group : int
        Animals per group (3 gives the 9-scan sample study).
    shape_yx : (int, int)
        Slice size in pixels.
    jobs : int, optional
        Worker processes (default: up to 2, as many as there are CPUs); 1 runs in this
        process.

    Returns
    -------
    list of dict
        One truth record per scan, as written to ``truth.json``: ``scan``, ``group``,
        ``seed``, ``distal_end``, ``first_section``, ``n_slices``, ``voxel_um``, ``ref_index``
        (array index) and ``ref_slice`` (section number), ``voi_first_slice`` and
        ``voi_last_slice`` (section numbers of the design VOI 1.0-3.0 mm proximal of the
        reference), ``bv_tv_group_target``, ``bv_tv_design`` (this animal's target) and
        ``bv_tv_truth`` (% of bone in the true endocortical region of the design VOI) and the
        geometry parameters, ``bmd_truth`` (g/cm³ HA: mean painted density of the true
        endocortical region of the design VOI) and ``tmd_truth`` (1.15 g/cm³ HA).
        ``truth.json`` also records the femurs' CS window, the density of every tissue, the
        attenuation model and the phantom scans (``phantoms``).
    """
    out = Path(out_dir)
    if animals_per_group < 1:
        raise ConfigError(f"animals_per_group must be >= 1, got {animals_per_group!r}")
    n_jobs = min(2, os.cpu_count() or 1) if jobs is None else int(jobs)
    if n_jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs!r}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    designs = study_design(seed, animals_per_group)
    shape = (int(shape_yx[0]), int(shape_yx[1]))
    window = _study_cs_window()
    if n_jobs == 1:
        records = [_make_and_write(out, d, shape, seed, window) for d in designs]
    else:
        from concurrent.futures import ThreadPoolExecutor

        # numpy and scipy.ndimage release the GIL in the heavy loops: threads suffice and
        # need no picklable state or __main__ guard in the caller
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            futures = [pool.submit(_make_and_write, out, d, shape, seed, window)
                       for d in designs]
            records = [f.result() for f in futures]
    phantoms = _write_phantoms(out, seed, window)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scan", "group"])
    writer.writerows([r["scan"], r["group"]] for r in records)
    _write_atomic_text(out / "groups.csv", buf.getvalue())
    from .rods import DEFAULT_HA_MODEL

    dens = _label_density(window)
    truth = {
        "generator": "ctmorph.phantoms.sample_study.make_sample_study",
        "study_seed": int(seed),
        "units": {"ref_slice": "section number", "voi_first_slice": "section number",
                  "voi_last_slice": "section number", "bv_tv_group_target": "%",
                  "bv_tv_design": "%", "bv_tv_truth": "%", "voxel_um": "µm", "length_mm": "mm",
                  "bmd_truth": "g/cm³ HA", "tmd_truth": "g/cm³ HA",
                  "tissue_density": "g/cm³ HA", "density": "g/cm³ HA",
                  "cs_window": "NRecon CS units", "rod_diameter_mm": "mm"},
        "femur_cs_window": [round(v, 8) for v in window],
        "tissue_density": {name: round(float(dens[k]), 5) + 0.0  # (no -0.0)
                           for name, k in LABELS.items()},
        "attenuation_model": {
            "matrix_attenuation": DEFAULT_HA_MODEL.matrix_attenuation,
            "attenuation_per_density": DEFAULT_HA_MODEL.attenuation_per_density,
            "calibration_slope": DEFAULT_HA_MODEL.slope,
            "calibration_intercept": DEFAULT_HA_MODEL.intercept,
        },
        "phantoms": phantoms,
        "scans": records,
    }
    _write_atomic_text(out / "truth.json", json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    logger.info("sample study: %d scans + %d phantoms in %s (%.1f s)", len(records),
                len(phantoms), out,
                time.perf_counter() - t0)
    return records


def study_complete(directory: str | os.PathLike[str], *, realistic: bool = False) -> bool:
    """True when ``groups.csv`` lists scans that all exist as folders with a log, and the study
    has its calibration phantoms (:data:`STUDY_PHANTOMS`) or, for the realistic study
    (:func:`ctmorph.phantoms.realistic.make_realistic_study`), its ``truth.json``."""
    from ..errors import CtmorphError
    from ..manifest import read_groups

    root = Path(directory)
    if not (root / "groups.csv").is_file():
        return False
    try:
        scans = read_groups(root / "groups.csv")
    except CtmorphError:
        return False
    folders = [root / s for s in scans]
    if realistic:  # its truth.json, written last, says which generator made the study
        try:
            generator = json.loads((root / "truth.json").read_text(encoding="utf-8"))["generator"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if generator != "ctmorph.phantoms.realistic.make_realistic_study":
            return False
    else:
        folders += [root / "phantoms" / name for name, _, _ in STUDY_PHANTOMS]
    return bool(scans) and all(any(f.glob("*.log")) for f in folders)
