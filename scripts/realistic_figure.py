"""Longitudinal sections of realistic femurs with the found and the true growth-plate
reference, for the README (docs/img/realistic_femurs.png).

Usage::

    .venv/bin/python scripts/realistic_figure.py STUDY RESULTS OUT.png SCAN [SCAN ...]

``STUDY`` is a study written by ``ctmorph samples DIR --realistic`` (its ``truth.json``),
``RESULTS`` an ``analyze`` output of it (its ``morphometry.csv``). Each scan is shown as the
section through the middle of its bone (the truth axis point) along y; the reference lines are
drawn straight across, so choose femurs analysed without resampling (``axis_tilt_deg`` < 3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ctmorph.io import read_scan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("results", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("scans", nargs="+")
    args = ap.parse_args(argv)
    truth = {s["scan"]: s for s in json.loads((args.study / "truth.json").read_text())["scans"]}
    rows = pd.read_csv(args.results / "morphometry.csv").set_index("scan")
    fig, axes = plt.subplots(1, len(args.scans), figsize=(4.2 * len(args.scans), 5.2),
                             dpi=150, squeeze=False)
    for ax, name in zip(axes[0], args.scans, strict=True):
        t, row = truth[name], rows.loc[name]
        scan = read_scan(args.study / name)
        vol = scan.read_volume()
        dz, dy, _ = scan.spacing
        y = int(round(t["axis_point_mm"][1] / dy)) if len(t["axis_point_mm"]) == 3 else (
            vol.shape[1] // 2)
        y = min(max(y, 0), vol.shape[1] - 1)
        section = vol[:, y, :].astype(np.float32)
        first = int(t["first_section"])
        true_z, found_z = t["ref_slice"] - first, int(row["ref_slice"]) - first
        lo = max(0, min(true_z, found_z) - int(1.2 / dz))
        hi = min(vol.shape[0], max(true_z, found_z) + int(2.2 / dz))
        crop = section[lo:hi]
        extent = (0, crop.shape[1] * dy, (hi - lo) * dz, 0)
        ax.imshow(crop, cmap="gray", extent=extent, interpolation="nearest",
                  vmin=np.percentile(crop, 1), vmax=np.percentile(crop, 99.7))
        ax.axhline((found_z - lo + 0.5) * dz, color="#d62728", lw=1.0,
                   label=f"found {int(row['ref_slice'])}")
        ax.axhline((true_z - lo + 0.5) * dz, color="#2ca02c", ls="--", lw=1.6,
                   label=f"truth {t['ref_slice']}")
        v0, v1 = sorted((int(row["voi_first_slice"]) - first, int(row["voi_last_slice"]) - first))
        ax.axhspan((max(v0, lo) - lo) * dz, (min(v1, hi) - lo) * dz, color="#1f77b4",
                   alpha=0.12, label="VOI")
        err = (int(row["ref_slice"]) - t["ref_slice"]) * t["voxel_um"] / 1000
        ax.set_title(f"{name} ({t['voxel_um']:g} µm): error {err * 1000:+.0f} µm,\n"
                     f"confidence {row['plate_confidence']:.2f}", fontsize=9)
        ax.set_xlabel("mm")
        ax.set_ylabel("mm from the first slice shown")
        ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
