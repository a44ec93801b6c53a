"""Judge the automatic growth-plate VOI on the realistic study against its truth.

For every femur of a study written by ``scripts/make_realistic_study.py`` (its ``truth.json``):
the found reference against the truth (sections and mm), the finder's confidence and flags,
and the metrics of the automatic VOI against those ctmorph itself measures with the true
reference given by hand (``--ref-slice``), so VOI placement is judged apart from segmentation;
also the truth-label metrics, to show what partial volume alone does. A femur is

- ``correct``: reference within 0.1 mm of the truth, BV/TV, Tb.Th, Tb.Sp within 5 % of the
  true-reference analysis, and not flagged;
- ``flagged``: it carries a named flag (or a confidence below 0.5), or failed with a reason
  (the adult femur must fail: it has no growth plate);
- ``silently wrong``: neither. The goal is none.

Usage::

    .venv/bin/python scripts/evaluate_realistic.py STUDY OUT [--jobs 2] [--write FILE.md]

It runs ``ctmorph analyze`` twice (automatic, then with ``--overrides`` of the true
references) into ``OUT/auto`` and ``OUT/truth_ref``; finished scans are reused on a re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from ctmorph.batch import run_analysis
from ctmorph.config import AnalysisConfig
from ctmorph.manifest import read_groups

METRICS = ("BV/TV", "Tb.Th", "Tb.Sp")
TOLERANCE_MM = 0.1
METRIC_TOLERANCE = 0.05
CONFIDENCE_FLOOR = 0.5


def _truth(study: Path) -> dict[str, dict]:
    """truth.json's records by scan (``ref_slice`` None for a femur without a plate)."""
    return {s["scan"]: s for s in json.loads((study / "truth.json").read_text())["scans"]}


def evaluate(study: Path, out: Path, jobs: int) -> pd.DataFrame:
    """Analyse the study both ways and return one row per femur."""
    truth = _truth(study)
    groups = read_groups(study / "groups.csv")
    cfg = AnalysisConfig()
    auto = run_analysis([study], out / "auto", cfg, groups=groups, jobs=jobs, write_qc=True)
    refs = {n: {"ref_slice": t["ref_slice"]} for n, t in truth.items()
            if t["ref_slice"] is not None}
    given = run_analysis([study / n for n in refs], out / "truth_ref", cfg, groups=groups,
                         jobs=jobs, write_qc=False, overrides=refs)
    a = pd.DataFrame(auto.rows).set_index("scan")
    g = pd.DataFrame(given.rows).set_index("scan")
    rows = []
    for name, t in truth.items():
        r = a.loc[name]
        vox = float(t["voxel_um"]) / 1000.0
        true_ref = t["ref_slice"]
        found = r.get("ref_slice")
        rec = {"scan": name, "group": t["group"], "voxel_um": t["voxel_um"],
               "tilt_deg": round(float(t["axis_tilt_deg"]), 1),
               "true_ref": true_ref, "found_ref": found, "status": r["status"],
               "confidence": r.get("plate_confidence"), "flags": r.get("qc_flags") or "",
               "error": r.get("error") or ""}
        if true_ref is not None and found is not None and not pd.isna(found):
            rec["ref_error_mm"] = round((float(found) - float(true_ref)) * vox, 4)
        truth_m = t["truth_morphometry"]
        for m in METRICS:
            if r["status"] == "ok" and name in g.index and g.loc[name, "status"] == "ok":
                ref_value = float(g.loc[name, m])
                rec[f"{m} err %"] = round(100 * (float(r[m]) - ref_value) / ref_value, 2)
                if m in truth_m and truth_m[m]:
                    rec[f"{m} vs labels %"] = round(100 * (ref_value - float(truth_m[m]))
                                                    / float(truth_m[m]), 1)
        flagged = bool(rec["flags"]) or r["status"] != "ok" or (
            rec["confidence"] is not None and not pd.isna(rec["confidence"])
            and float(rec["confidence"]) < CONFIDENCE_FLOOR)
        correct = (r["status"] == "ok" and "ref_error_mm" in rec
                   and abs(rec["ref_error_mm"]) <= TOLERANCE_MM
                   and all(abs(rec.get(f"{m} err %", math.inf)) <= 100 * METRIC_TOLERANCE
                           for m in METRICS))
        if true_ref is None:  # the adult femur: refusing it is right
            verdict = "correct (refused)" if r["status"] != "ok" else "silently wrong"
        elif correct and not flagged:
            verdict = "correct"
        elif flagged:
            verdict = "flagged" + (" (correct)" if correct else "")
        else:
            verdict = "silently wrong"
        rec["verdict"] = verdict
        rows.append(rec)
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame) -> str:
    """The table as GitHub Markdown (without pandas' optional tabulate dependency)."""
    def cell(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--write", type=Path, help="also write the table as Markdown")
    args = ap.parse_args(argv)
    df = evaluate(args.study, args.out, args.jobs)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(df.drop(columns=["error"]).to_string(index=False))
    n = len(df)
    ok = int((df.verdict == "correct").sum())
    silent = int((df.verdict == "silently wrong").sum())
    print(f"\n{ok} of {n} correct and unflagged; {silent} silently wrong")
    if args.write:
        args.write.write_text(_markdown(df.drop(columns=["error"])))
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
