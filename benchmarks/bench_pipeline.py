"""Seconds and peak memory of one scan analysis, each scan in a fresh process.

Usage: python benchmarks/bench_pipeline.py [SCAN_DIR ...]   (default: sample_scans/*)

Peak memory is the process's maximum resident set size (``ru_maxrss``) after importing
ctmorph and analysing one scan, so it includes the interpreter and libraries (reported
separately as the baseline of a process that only imports ctmorph).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from ctmorph.config import AnalysisConfig
from ctmorph.pipeline import measure_scan
from ctmorph.io import read_scan
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "-":
    print(json.dumps({"baseline_mb": base / 1024}))
    sys.exit()
scan = read_scan(sys.argv[1])
t = time.perf_counter()
res = measure_scan(sys.argv[1], AnalysisConfig(threshold=float(sys.argv[2])))
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"scan": scan.name, "shape": scan.shape, "seconds": dt,
                  "peak_mb": peak / 1024, "scan_mb": scan.shape[0] * scan.shape[1]
                  * scan.shape[2] * scan.dtype.itemsize / 2**20}))
"""


def main(argv: list[str]) -> None:
    dirs = [Path(a) for a in argv] or sorted(
        p for p in Path("sample_scans").iterdir() if p.is_dir()
    )
    base = json.loads(subprocess.check_output([sys.executable, "-c", CHILD, "-"]))
    # warm the numba cache once so the timings below do not include compilation
    subprocess.check_output([sys.executable, "-c", CHILD, str(dirs[0]), "90"])
    print(f"process baseline after import: {base['baseline_mb']:.0f} MB")
    print(f"{'scan':<14} {'shape':<18} {'scan MB':>8} {'seconds':>8} {'peak MB':>8}")
    for d in dirs:
        r = json.loads(subprocess.check_output([sys.executable, "-c", CHILD, str(d), "90"]))
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['scan']:<14} {shape:<18} {r['scan_mb']:>8.1f} {r['seconds']:>8.2f} "
              f"{r['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
