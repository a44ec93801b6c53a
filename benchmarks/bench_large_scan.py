"""Peak memory and time of one large scan: 3000 slices of 700x700, 8-bit, 9 um.

Usage::

    .venv/bin/python benchmarks/bench_large_scan.py [--folder /tmp/ctmorph_large_scan]
        [--slices 3000] [--size 700] [--calibrated]

The scan is generated once (cached in ``--folder``): a synthetic distal femur
(:func:`ctmorph.phantoms.femur.make_femur`, ~4.2 mm) followed by proximal diaphysis slices (the
femur's last, tube-like slice with fresh noise), written slice by slice so no full float volume
is ever built. :func:`ctmorph.pipeline.measure_scan` then runs in a fresh subprocess, which
reports its peak RSS (``ru_maxrss``), the peak reached by the end of each stage and the time
of each stage. ``--calibrated`` adds a calibration line, so BMD and TMD are measured too
(the store then also keeps the slab's grey). A tiny scan is analysed first in another
process, so numba's compiled kernels are in its cache (as after any first run) and
compilation memory is not counted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from ctmorph._memory import configure_allocator
from ctmorph.config import AnalysisConfig
from ctmorph.pipeline import measure_scan
configure_allocator()  # as `ctmorph analyze` and its pool workers do

def hwm_mb():  # peak RSS so far (Linux)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

marks = []
t0 = time.perf_counter()
base = hwm_mb()
cfg = AnalysisConfig(calibration=sys.argv[3] or None)
res = measure_scan(sys.argv[1], cfg, threshold=float(sys.argv[2]),
                   progress=lambda s: marks.append((s, time.perf_counter() - t0, hwm_mb())))
total = time.perf_counter() - t0
marks.append(("end", total, hwm_mb()))
stages = {a[0]: round(b[1] - a[1], 2) for a, b in zip(marks, marks[1:])}
# peak RSS reached by the end of each stage (cumulative: the stage that raises it is the peak)
peaks = {a[0]: round(b[2], 1) for a, b in zip(marks, marks[1:])}
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_imports_mb": round(base, 1), "peak_by_end_of_stage_mb": peaks,
                  "seconds": round(total, 2), "stages": stages,
                  "ref_slice": res.row["ref_slice"], "voi": [res.row["voi_first_slice"],
                  res.row["voi_last_slice"]], "BV/TV": res.row["BV/TV"],
                  "Tb.Th": res.row["Tb.Th"], "BMD": res.row.get("BMD"),
                  "TMD": res.row.get("TMD")}))
"""


WARM = r"""
import tempfile, pathlib
from ctmorph.config import AnalysisConfig
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms.femur import make_femur
from ctmorph import pipeline
f = make_femur(group="OVX", seed=4, shape_yx=(96, 96), voxel_um=20.0, length_mm=2.8,
               distal_first=False, round_roi=True)
with tempfile.TemporaryDirectory() as d:
    folder = pathlib.Path(d) / "WARM_rec"
    write_nrecon_folder(folder, f.grey, voxel_size_um=20.0, round_roi=True)
    cfg = AnalysisConfig(threshold=132.0, roi_offset_mm=0.5, roi_height_mm=1.0)
    pipeline.measure_scan(folder, cfg)
    pipeline.store.CHUNKED_MEASURE_VOXELS = 0  # the block-wise measure path's kernels too
    pipeline.measure_scan(folder, cfg)
"""


def generate(folder: Path, n_slices: int, size: int) -> None:
    """Write the scan into ``folder`` unless it is already complete."""
    from ctmorph.io.writer import _write_slice, write_nrecon_folder
    from ctmorph.phantoms.femur import make_femur

    if (folder / "done").exists():
        return
    femur = make_femur(shape_yx=(size, size), length_mm=4.2, voxel_um=9.0, seed=1)
    grey = femur.grey
    n_fem = grey.shape[0]
    write_nrecon_folder(folder, grey, voxel_size_um=9.0)
    prefix = f"{folder.name}_rec"
    tube = grey[-1].astype(np.float32)
    rng = np.random.default_rng(0)
    for i in range(n_fem, n_slices):
        plane = np.clip(tube + rng.normal(0.0, 6.0, tube.shape), 0, 255).astype(np.uint8)
        _write_slice(folder / f"{prefix}{i:04d}.bmp", plane, "bmp", 9.0)
    log = folder / f"{prefix}.log"
    text = log.read_text(encoding="cp1252")
    text = re.sub(r"Last Section=\d+", f"Last Section={n_slices - 1}", text)
    text = re.sub(r"Sections Count=\d+", f"Sections Count={n_slices}", text)
    text = re.sub(r"Number of Files=\s*\d+", f"Number of Files= {n_slices}", text)
    log.write_text(text, encoding="cp1252")
    (folder / "done").write_text(json.dumps({"slices": n_slices, "size": size,
                                             "femur_slices": n_fem}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/ctmorph_large_scan/LARGE_01"))
    ap.add_argument("--slices", type=int, default=3000)
    ap.add_argument("--size", type=int, default=700)
    ap.add_argument("--threshold", type=float, default=128.0)
    ap.add_argument("--calibrated", action="store_true",
                    help="measure BMD/TMD too (a fixed calibration line)")
    args = ap.parse_args()
    t = time.perf_counter()
    generate(args.folder, args.slices, args.size)
    print(f"scan ready in {time.perf_counter() - t:.0f} s: {args.folder}", flush=True)
    cal = ""
    if args.calibrated:
        from ctmorph.calibration import Calibration, save_calibration

        cal = str(save_calibration(Calibration(slope=12.0, intercept=-0.2, r_squared=1.0),
                                   args.folder.parent / "calibration.json"))
    scan_mb = args.slices * args.size * args.size / 2**20
    # numba compiles each kernel on first use and caches it; a lab PC runs from that cache, so
    # warm it first (a tiny scan, in its own process) and measure a process that only loads it
    subprocess.run([sys.executable, "-c", WARM], check=True, capture_output=True, text=True)
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.folder), str(args.threshold), cal],
                         check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["scan_mb"] = round(scan_mb, 1)
    res["peak_over_scan"] = round(res["peak_rss_mb"] / scan_mb, 3)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
