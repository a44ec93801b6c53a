"""A person corrects a femur's VOI in seconds (issue 15): a reference or VOI given by hand per
scan (--ref-slice, --overrides, manifest columns), recorded as voi_source, entering the
settings so only the corrected scans are recomputed; and the review's sections, also for a
scan whose growth plate was not found."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ctmorph.batch import run_analysis
from ctmorph.cli import cli
from ctmorph.config import AnalysisConfig
from ctmorph.errors import ConfigError
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.manifest import read_overrides
from ctmorph.phantoms.femur import make_femur

CFG = AnalysisConfig(roi_offset_mm=0.5, roi_height_mm=1.0, threshold=128.0)
FIRST = 100  # section number of the first slice file


@pytest.fixture(scope="module")
def femurs(tmp_path_factory):
    """Two small synthetic femurs (distal first and last) and a diaphysis without a plate."""
    root = tmp_path_factory.mktemp("femurs")
    truth = {}
    for name, seed, first in (("F1", 1, True), ("F2", 2, False)):
        f = make_femur(group="sham", seed=seed, voxel_um=12.0, shape_yx=(128, 128),
                       length_mm=2.6, distal_first=first)
        write_nrecon_folder(root / name, f.grey, voxel_size_um=12.0, first_section=FIRST)
        truth[name] = f
    f = make_femur(group="sham", seed=3, voxel_um=12.0, shape_yx=(128, 128), length_mm=3.6)
    shaft = f.grey[f.ref_index + 60:]  # proximal of the plate only: no plate to find
    write_nrecon_folder(root / "shaft", shaft, voxel_size_um=12.0, first_section=FIRST)
    return root, truth


def _rows(summary) -> pd.DataFrame:
    return pd.DataFrame(summary.rows).set_index("scan")


def test_a_reference_by_hand_equals_the_automatic_one_when_they_agree(femurs, tmp_path):
    root, _ = femurs
    auto = _rows(run_analysis([root / "F1", root / "F2"], tmp_path / "a", CFG, group="g",
                              write_qc=False))
    assert (auto.voi_source == "auto").all()
    for name in ("F1", "F2"):
        ref = int(auto.loc[name, "ref_slice"])
        manual = _rows(run_analysis([root / name], tmp_path / f"m{name}",
                                    CFG.replace(ref_slice=ref), group="g", write_qc=False))
        assert manual.loc[name, "voi_source"] == "manual ref"
        for col in ("ref_slice", "voi_first_slice", "voi_last_slice", "BV/TV", "Tb.Th", "Tb.Sp"):
            assert manual.loc[name, col] == auto.loc[name, col], (name, col)


def test_a_reference_by_hand_moves_the_voi_by_exactly_its_offset(femurs, tmp_path):
    root, _ = femurs
    auto = _rows(run_analysis([root / "F1"], tmp_path / "a", CFG, group="g", write_qc=False))
    ref = int(auto.loc["F1", "ref_slice"]) + 10  # distal first: proximal is +
    moved = _rows(run_analysis([root / "F1"], tmp_path / "b", CFG.replace(ref_slice=ref),
                               group="g", write_qc=False))
    assert moved.loc["F1", "ref_slice"] == ref
    assert moved.loc["F1", "voi_first_slice"] == auto.loc["F1", "voi_first_slice"] + 10
    assert moved.loc["F1", "voi_last_slice"] == auto.loc["F1", "voi_last_slice"] + 10


def test_overrides_recompute_only_the_corrected_scans(femurs, tmp_path):
    root, _ = femurs
    out = tmp_path / "out"
    first = run_analysis([root / "F1", root / "F2"], out, CFG, group="g", write_qc=False)
    auto = _rows(first)
    f2_first = int(auto.loc["F2", "voi_first_slice"])
    path = tmp_path / "overrides.csv"
    path.write_text(f"scan,ref_slice,voi_first_slice,voi_last_slice\n"
                    f"F2,,{f2_first},{f2_first + 40}\nF9,{FIRST + 5},,\n")
    table = read_overrides(path, CFG)
    assert dict(table) == {"F2": {"voi_first_slice": f2_first, "voi_last_slice": f2_first + 40},
                           "F9": {"ref_slice": FIRST + 5}}
    again = run_analysis([root / "F1", root / "F2"], out, CFG, group="g", write_qc=False,
                         overrides=table)
    assert again.reused == 1  # F1 unchanged; F2 recomputed with its VOI by hand
    rows = _rows(again)
    assert rows.loc["F2", "voi_source"] == "manual VOI"
    assert (rows.loc["F2", "voi_first_slice"], rows.loc["F2", "voi_last_slice"]) == \
        (f2_first, f2_first + 40)
    assert rows.loc["F2", "voi_height_mm"] == pytest.approx(41 * 0.012)
    info = json.loads((out / "F2" / "morphometry.json").read_text())
    assert info["overrides"] == {"path": str(path), "line": 2,
                                 "values": {"voi_first_slice": f2_first,
                                            "voi_last_slice": f2_first + 40}}
    assert info["config"]["voi_first_slice"] == f2_first
    # the row naming a scan that is not in the run: an error with --strict
    with pytest.raises(ConfigError, match=r"overrides\.csv: 1 row\(s\) name scans that are "
                                          r"not in this run: 'F9' \(line 3\) \(--strict\)"):
        run_analysis([root / "F1", root / "F2"], out, CFG, group="g", overrides=table,
                     strict=True)


def test_a_section_that_is_not_in_the_scan_fails_that_scan(femurs, tmp_path):
    root, _ = femurs
    s = run_analysis([root / "F1"], tmp_path / "out", CFG.replace(ref_slice=5), group="g",
                     write_qc=False)
    assert s.rows[0]["status"] == "failed"
    assert s.rows[0]["error"] == "F1: ref_slice 5 is not a section of the scan (sections 100 " \
                                 "to 316)"


def test_ref_slice_for_a_run_of_several_scans_is_refused(femurs, tmp_path):
    root, _ = femurs
    res = CliRunner().invoke(cli, ["analyze", str(root / "F1"), str(root / "F2"), "--group",
                                   "g", "-o", str(tmp_path / "out"), "--ref-slice", "150"])
    assert res.exit_code == 1
    assert "Error: ref_slice = 150 places one femur's VOI by hand, but the run has 2 scans; " \
           "give it per scan with --overrides FILE.csv (or the manifest)" in res.output
    assert not (tmp_path / "out" / "morphometry.csv").exists()


def test_a_scan_without_plate_keeps_its_sections_and_takes_a_reference_by_hand(femurs,
                                                                               tmp_path):
    root, _ = femurs
    out = tmp_path / "out"
    failed = run_analysis([root / "shaft"], out, CFG.replace(distal_end="first"), group="g")
    assert failed.rows[0]["status"] == "failed"
    # no plate, or a plate-like gap in the metaphysis too close to the scan's proximal end for
    # the VOI: either way the automatic VOI cannot be placed
    assert re.search(r"no growth plate found|scan ends .* proximal of the growth plate",
                     failed.rows[0]["error"])
    info = json.loads((out / "shaft" / "qc" / "review.json").read_text())
    from PIL import Image

    for view in info["views"]:
        im = Image.open(out / "shaft" / "qc" / view["image"])
        assert im.size[1] == len(view["row_sections"])  # one image row per section
        assert view["row_sections"][0] == FIRST
        assert view["mm_per_px"] == pytest.approx(0.012)
    assert not (out / "shaft" / "morphometry.json").exists()  # not finished
    # a person puts the reference at the first section: the scan is measured from it
    fixed = run_analysis([root / "shaft"], out, CFG.replace(distal_end="first",
                                                            ref_slice=FIRST + 2), group="g")
    row = fixed.rows[0]
    assert row["status"] == "ok" and row["voi_source"] == "manual ref"
    assert row["voi_first_slice"] == FIRST + 2 + round(0.5 / 0.012)
    assert np.isfinite(row["BV/TV"])


def test_methods_say_how_many_vois_were_placed_by_hand(tmp_path):
    from test_report_output import study_row

    from ctmorph.report import make_report

    rows = [study_row(f"s{i}", g, **{"BV/TV": 20.0 + i, "voi_source": src})
            for i, (g, src) in enumerate([("sham", "auto"), ("sham", "manual ref"),
                                          ("sham", "auto"), ("OVX", "manual VOI"),
                                          ("OVX", "manual ref"), ("OVX", "auto")])]
    pd.DataFrame(rows).to_csv(tmp_path / "morphometry.csv", index=False)
    paths = make_report(tmp_path, control="sham", excel=False, figures=False)
    text = paths["methods"].read_text()
    assert ("After visual review, the reference section of 2 and the whole VOI of 1 of the 6 "
            "femurs were placed by hand; the others automatically.") in text


def test_overrides_read_names_ctmorph_neutralised_for_spreadsheets(tmp_path):
    path = tmp_path / "overrides.csv"
    path.write_text("scan,ref_slice\n'=F2,120\n'+3,7\nplain,9\n")  # as ctmorph review saves
    assert dict(read_overrides(path)) == {"=F2": {"ref_slice": 120}, "+3": {"ref_slice": 7},
                                          "plain": {"ref_slice": 9}}
