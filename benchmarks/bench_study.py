"""Where one femur's time goes: per stage and per measure, against the floor of the same run.

Usage::

    .venv/bin/python benchmarks/bench_study.py [--scan sample_scans/sham_01] [--study]
        [--write docs/performance.md] [--ref ../ctmorph-before --ref-label "v0.x"]

``--ref`` times a checkout of an earlier version (``git worktree add ../ctmorph-before REV``)
with the same children in the same run, each of its measurements right before the current
one's, and adds before/after columns.

Everything runs in fresh subprocesses after a warm-up that fills numba's cache (as after any
first run), on the same machine in the same invocation, so the ratios compare like with like:

- **stages**: :func:`ctmorph.pipeline.measure_scan` of one scan with its progress callback;
  wall and CPU seconds (``time.process_time``, all threads) of each stage and cores busy
  (CPU / wall);
- **measures**: each measure of :mod:`ctmorph.morphometry` timed alone on that scan's VOI slab
  (``pipeline.voi_slab``), so the stage table can be read per measure;
- **floor**: the work no analysis of that scan can avoid: read every slice, one Gaussian
  smoothing (scipy, sigma 1 voxel), one exact Euclidean distance transform of the bone and one
  of the marrow (the ``edt`` package, 2 threads) and one connected-component labelling (scipy)
  of the whole scan;
- **study** (``--study``): ``ctmorph analyze`` of the sample study with its default ``--jobs``.

``--write`` replaces the section between ``<!-- bench_study:begin -->`` and ``<!--
bench_study:end -->`` of the given Markdown file (appended when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES_CHILD = r"""
import json, sys, time
from ctmorph.config import AnalysisConfig
from ctmorph.pipeline import measure_scan
marks = []
def mark(stage):
    marks.append((stage, time.perf_counter(), time.process_time()))
mark("start")
res = measure_scan(sys.argv[1], AnalysisConfig(), threshold=float(sys.argv[2]),
                   progress=mark, renders=sys.argv[3] == "1")
mark("end")
rows = [{"stage": a[0], "wall": b[1] - a[1], "cpu": b[2] - a[2]}
        for a, b in zip(marks[1:], marks[2:])]
print(json.dumps({"stages": rows, "wall": marks[-1][1] - marks[0][1],
                  "cpu": marks[-1][2] - marks[0][2], "BV/TV": res.row["BV/TV"]}))
"""

MEASURES_CHILD = r"""
import json, sys, time
from ctmorph.config import AnalysisConfig
from ctmorph.morphometry import (anisotropy_chunked, bone_surface_chunked,
    connectivity_chunked, midaxis_spacing_chunked, pattern_factor_chunked, smi_chunked,
    thickness_stats_chunked)
from ctmorph.morphometry.zsource import read_phase
from ctmorph.pipeline import voi_slab
from ctmorph.pipeline.render import scan_renderings
slab = voi_slab(sys.argv[1], AnalysisConfig(), threshold=float(sys.argv[2]))
src, sp = slab.src, slab.spacing
nz = src.shape[0]
bone, marrow, voi = (read_phase(src, 0, nz, k) for k in ("bone", "marrow", "voi"))
one = {"chunk_slices": nz}
jobs = {
    "Tb.Th (local thickness of bone)":
        lambda: thickness_stats_chunked(bone, voi, spacing=sp, **one),
    "Tb.Sp (local thickness of marrow)":
        lambda: thickness_stats_chunked(marrow, voi, spacing=sp, **one),
    "Tb.N (thinning + spacing map)": lambda: midaxis_spacing_chunked(src, spacing=sp, **one),
    "BS (marching cubes)": lambda: bone_surface_chunked(src, spacing=sp),
    "Conn.D (Euler)": lambda: connectivity_chunked(src, spacing=sp),
    "SMI": lambda: smi_chunked(src, spacing=sp),
    "DA (MIL)": lambda: anisotropy_chunked(src, spacing=sp, **one),
    "Tb.Pf": lambda: pattern_factor_chunked(src, spacing=sp),
    "renderings (VOI + femur)": lambda: scan_renderings(slab),
}
out = []
for name, job in jobs.items():
    t, c = time.perf_counter(), time.process_time()
    job()
    out.append({"measure": name, "wall": time.perf_counter() - t, "cpu": time.process_time() - c})
print(json.dumps({"slab": list(src.shape), "measures": out}))
"""

FLOOR_CHILD = r"""
import json, sys, time
import numpy as np, edt
from scipy import ndimage
from ctmorph.io import read_scan
t0, c0 = time.perf_counter(), time.process_time()
scan = read_scan(sys.argv[1])
grey = scan.read_slab(0, scan.shape[0])
t1, c1 = time.perf_counter(), time.process_time()
smooth = ndimage.gaussian_filter(grey.astype(np.float32), 1.0)
bone = smooth > float(sys.argv[2])
t2, c2 = time.perf_counter(), time.process_time()
sp = tuple(float(s) for s in scan.spacing)
edt.edt(bone, anisotropy=sp, parallel=2)
edt.edt(~bone, anisotropy=sp, parallel=2)
t3, c3 = time.perf_counter(), time.process_time()
ndimage.label(bone, structure=np.ones((3, 3, 3), bool))
t4, c4 = time.perf_counter(), time.process_time()
print(json.dumps({"parts": [
    {"part": "read the slices", "wall": t1 - t0, "cpu": c1 - c0},
    {"part": "one Gaussian (sigma 1) + threshold", "wall": t2 - t1, "cpu": c2 - c1},
    {"part": "exact EDT of bone and of marrow (edt, 2 threads)", "wall": t3 - t2, "cpu": c3 - c2},
    {"part": "one labelling (26-connected)", "wall": t4 - t3, "cpu": c4 - c3}],
    "wall": t4 - t0, "cpu": c4 - c0, "shape": list(scan.shape)}))
"""


def _child(code: str, *args: str, tree: Path | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; with ``tree``, importing ctmorph from that checkout
    (its folder is the working directory and first on the path)."""
    env = None
    if tree is not None:
        env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=False, cwd=tree, env=env)
    if res.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _study(samples: Path, tree: Path | None = None) -> dict:
    env = None if tree is None else dict(os.environ, PYTHONPATH=str(tree))
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "ctmorph.cli", "analyze", str(samples),
                              "--groups", str(samples / "groups.csv"), "-o", out],
                             capture_output=True, text=True, check=False, cwd=tree, env=env)
        wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"ctmorph analyze failed:\n{res.stderr[-3000:]}")
    return {"wall": wall}


def _row(name: str, wall: float, cpu: float, floor: float | None = None,
         before: float | None = None) -> str:
    cells = [name, f"{wall:.2f}", f"{cpu:.2f}", f"{cpu / wall if wall > 0 else 0:.2f}"]
    if floor is not None:
        cells.append(f"{wall / floor:.1f}×")
    if before is not None:
        cells += [f"{before:.2f}", f"{before / wall:.2f}×" if wall > 0 else "-"]
    return "| " + " | ".join(cells) + " |"


def _table(first: str, rows: list[dict], key: str, floor: float, total: tuple | None,
           ref: list[dict] | None) -> list[str]:
    head = f"| {first} | wall s | CPU s | cores busy | × floor |"
    rule = "|---|---|---|---|---|"
    if ref is not None:
        head += " before: wall s | speed-up |"
        rule += "---|---|"
    old = {r[key]: r["wall"] for r in ref or []}
    out = [head, rule]
    for r in rows:
        out.append(_row(r[key], r["wall"], r["cpu"], floor,
                        old.get(r[key]) if ref is not None else None))
    if total is not None:
        name, wall, cpu, before = total
        out.append(_row(name, wall, cpu, floor, before))
    return out


def report(scan: str, stages: dict, measures: dict, floor: dict, study: dict | None,
           ref: dict | None = None) -> str:
    """The Markdown section of one run (``ref``: the same children run on a reference
    checkout, ``{"label", "stages", "measures", "study"}``, for before/after columns)."""
    f = floor["wall"]
    rs = ref["stages"] if ref else None
    lines = [
        "<!-- bench_study:begin -->",
        "## Where a femur's time goes (benchmarks/bench_study.py)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Scan `{scan}` "
        f"({' × '.join(map(str, floor['shape']))} voxels). Seconds of one run, warm numba "
        "cache; cores busy = CPU / wall."
        + (f" **Before** = {ref['label']}, run in the same invocation." if ref else ""),
        "",
        "**Floor** (the work no analysis of this scan can avoid):",
        "",
        "| part | wall s | CPU s | cores busy |",
        "|---|---|---|---|",
        *(_row(p["part"], p["wall"], p["cpu"]) for p in floor["parts"]),
        _row("**floor**", floor["wall"], floor["cpu"]),
        "",
        "**Stages** of `measure_scan` (with the renderings; a stage's time is until the next "
        "one starts, work running beside it in threads included):",
        "",
        *_table("stage", stages["stages"], "stage", f,
                ("**one femur**", stages["wall"], stages["cpu"], rs["wall"] if rs else None),
                rs["stages"] if rs else None),
        "",
        f"**Measures**, each alone on the VOI slab ({' × '.join(map(str, measures['slab']))} "
        "voxels, read as one block):",
        "",
        *_table("measure", measures["measures"], "measure", f, None,
                ref["measures"]["measures"] if ref else None),
    ]
    if study is not None:
        before = (f" (before: {ref['study']['wall']:.0f} s, "
                  f"{ref['study']['wall'] / study['wall']:.2f}×)"
                  if ref and ref.get("study") else "")
        lines += ["", f"**Sample study** (9 femurs, `ctmorph analyze`, default `--jobs`): "
                      f"{study['wall']:.0f} s wall{before}."]
    lines += ["<!-- bench_study:end -->", ""]
    return "\n".join(lines)


def _write(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begin, end = "<!-- bench_study:begin -->", "<!-- bench_study:end -->"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", default="sample_scans/sham_01")
    ap.add_argument("--threshold", type=float, default=122.0,
                    help="grey threshold (the sample study's pooled Otsu value)")
    ap.add_argument("--study", action="store_true", help="also time the 9-femur sample study")
    ap.add_argument("--write", type=Path, help="Markdown file to put the tables into")
    ap.add_argument("--ref", type=Path,
                    help="a checkout of an earlier version (e.g. a git worktree) to time in the "
                         "same run, for before/after columns")
    ap.add_argument("--ref-label", help="how the tables name the reference (default its path)")
    args = ap.parse_args()
    thr = str(args.threshold)
    scan = str(Path(args.scan).resolve())
    ref = None
    if args.ref is not None:
        tree = args.ref.resolve()
        _child(STAGES_CHILD, scan, thr, "1", tree=tree)  # warm-up of the reference's cache
        ref = {"label": args.ref_label or str(args.ref), "tree": tree}
    _child(STAGES_CHILD, scan, thr, "1")  # warm-up: numba's cache, the page cache
    floor = _child(FLOOR_CHILD, scan, thr)
    if ref is not None:  # each measurement of the reference right before the current one's
        ref["stages"] = _child(STAGES_CHILD, scan, thr, "1", tree=ref["tree"])
    stages = _child(STAGES_CHILD, scan, thr, "1")
    if ref is not None:
        ref["measures"] = _child(MEASURES_CHILD, scan, thr, tree=ref["tree"])
    measures = _child(MEASURES_CHILD, scan, thr)
    study = None
    if args.study:
        samples = Path(scan).parent
        if ref is not None:
            ref["study"] = _study(samples, ref["tree"])
        study = _study(samples)
    text = report(args.scan, stages, measures, floor, study, ref)
    print(text)
    if args.write:
        _write(args.write, text)


if __name__ == "__main__":
    main()
