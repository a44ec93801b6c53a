"""The automatic VOI on realistic femurs (:mod:`ctmorph.phantoms.realistic`) through the whole
pipeline: each femur is either correct or fails with a named reason, never silently wrong; a
reference given by hand gives the truth VOI.

Three femurs of the hard study (seed 2026; ``ctmorph samples DIR --realistic``), chosen for the
departures that broke earlier finders: ``sham_03`` (tilted 12 deg, faint primary spongiosa,
18 um), ``OVX_04`` (sparse OVX bone, a dome 0.3 mm high, 16-bit; its plate was flagged for
"edge uncertain" while one tile per sector was taken as its face) and ``adult_01`` (no open
plate: refused). (Distal-end-last femurs are covered by tests/test_departures.py and
tests/test_voi.py; the largest femurs of the study are left to scripts/evaluate_realistic.py
to keep the suite short.) The whole study of
13 is judged by ``scripts/evaluate_realistic.py`` (docs/realistic.md).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ctmorph.batch import run_analysis
from ctmorph.config import AnalysisConfig
from ctmorph.phantoms.realistic import make_realistic_femur, realistic_study_design

NAMES = ("sham_03", "OVX_04", "adult_01")
#: The criterion of the automatic reference (mm): within it the VOI moves by at most 5 % of
#: its 2 mm height.
REF_TOLERANCE_MM = 0.1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("realistic")
    designs = {d["scan"]: d for d in realistic_study_design(seed=2026)}

    def make(name: str) -> dict:
        d = designs[name]
        fem = make_realistic_femur(d["anatomy"], d["specimen"], d["scan_settings"],
                                   seed=d["seed"])
        fem.write_nrecon(root / name)
        return {**fem.truth_record(), **fem.truth_morphometry(), "group": d["group"]}

    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy and scipy release the GIL
        truth = dict(zip(NAMES, pool.map(make, NAMES), strict=True))
    return root, truth


@pytest.fixture(scope="module")
def auto(study, tmp_path_factory):
    root, truth = study
    res = run_analysis([root / n for n in NAMES], tmp_path_factory.mktemp("auto"),
                       AnalysisConfig(), groups={n: t["group"] for n, t in truth.items()},
                       jobs=2, write_qc=False)
    return {r["scan"]: r for r in res.rows}


@pytest.mark.parametrize("name", [n for n in NAMES if n != "adult_01"])
def test_the_automatic_reference_is_within_0_1_mm_of_the_truth_and_unflagged(study, auto,
                                                                             name):
    _, truth = study
    row, t = auto[name], truth[name]
    assert row["status"] == "ok", row.get("error")
    error_mm = (row["ref_slice"] - t["ref_slice"]) * t["voxel_um"] / 1000
    assert abs(error_mm) <= REF_TOLERANCE_MM, (name, row["ref_slice"], t["ref_slice"])
    assert not row["qc_flags"], row["qc_flags"]
    assert row["plate_confidence"] >= 0.5
    assert row["voi_source"] == "auto"


def test_a_femur_without_an_open_plate_is_refused_with_the_reason(auto):
    row = auto["adult_01"]
    assert row["status"] == "failed"
    assert re.search(r"no open growth plate|no growth plate found", row["error"])
    assert "--ref-slice" in row["error"]  # says what to do


def test_a_reference_by_hand_gives_the_truth_voi(study, auto, tmp_path):
    # the tilted femur (analysed resampled along its axis): the truth VOI's sections are where
    # the axis crosses them, as ctmorph numbers its resampled slices; at the study's threshold
    root, truth = study
    t = truth["sham_03"]
    cfg = AnalysisConfig(threshold_attenuation=auto["sham_03"]["threshold_attenuation"])
    res = run_analysis([root / "sham_03"], tmp_path / "out", cfg,
                       group="sham", write_qc=False,
                       overrides={"sham_03": {"ref_slice": t["ref_slice"]}})
    row = res.rows[0]
    assert row["status"] == "ok", row.get("error")
    assert row["voi_source"] == "manual ref"
    assert row["ref_slice"] == t["ref_slice"]
    assert abs(row["voi_first_slice"] - t["voi_first_slice"]) <= 1
    assert abs(row["voi_last_slice"] - t["voi_last_slice"]) <= 1
    # against the truth labels: the segmentation at the pooled threshold of a blurred, noisy
    # scan, so partial volume reads thin trabeculae thicker (Tb.Th +9 to +19 % over the hard
    # study at 9-20 um, docs/realistic.md) while BV/TV and Tb.Sp stay within ~8 %
    assert row["BV/TV"] == pytest.approx(t["BV/TV"], rel=0.10)
    assert row["Tb.Sp"] == pytest.approx(t["Tb.Sp"], rel=0.10)
    assert t["Tb.Th"] < row["Tb.Th"] < 1.25 * t["Tb.Th"]
    assert np.isfinite(row["Tb.N"])


def test_samples_realistic_if_missing_keeps_a_complete_study(study):
    from click.testing import CliRunner

    from ctmorph.cli import cli

    root, truth = study
    (root / "groups.csv").write_text("scan,group\n" + "".join(
        f"{n},{truth[n]['group']}\n" for n in NAMES))
    generator = "ctmorph.phantoms.realistic.make_realistic_study"
    (root / "truth.json").write_text(f'{{"generator": "{generator}"}}')
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    res = CliRunner().invoke(cli, ["samples", str(root), "--realistic", "--if-missing"])
    assert res.exit_code == 0 and "already" in res.output, res.output
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
