"""End to end through the CLI: NRecon folders in, morphometry.csv + group summary out.

The femurs are small synthetic ones (160 × 160 px) so the whole module runs in well under a
minute; their growth-plate truth and BV/TV design come from the generator.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ctmorph.cli import cli
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import grey_from_mask, plates, rod_lattice
from ctmorph.phantoms.femur import make_femur
from ctmorph.pipeline.render import VOI_PIXEL_MM
from ctmorph.qc.figure_pictures import OUTLINE_RGB
from ctmorph.report.renderings import representatives
from ctmorph.textsafe import markdown_text

SCANS = ("sham_a", "sham_b", "OVX_a", "OVX_b")
CONTRACT = ["scan", "group", "status", "error", "voxel_um", "threshold", "ref_slice",
            "voi_first_slice", "voi_last_slice", "TV", "BV", "BV/TV", "BS/BV", "Tb.Th",
            "Tb.Th.SD", "Tb.Sp", "Tb.Sp.SD", "Tb.N"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    scans = root / "scans"
    truth = {}
    specs = [("sham_a", "sham", 1, True, 0), ("sham_b", "sham", 2, False, 120),
             ("OVX_a", "OVX", 3, True, 7), ("OVX_b", "OVX", 4, False, 0)]
    for name, group, seed, distal_first, first in specs:
        f = make_femur(group=group, seed=seed, shape_yx=(160, 160), distal_first=distal_first)
        write_nrecon_folder(scans / name, f.grey, voxel_size_um=f.voxel_um,
                            first_section=first, index_length=4, file_type="bmp")
        truth[name] = {"group": group, "ref_section": first + f.ref_index,
                       "distal_end": f.distal_end, "voxel_mm": f.voxel_um / 1000}
    (root / "groups.csv").write_text(
        "scan,group\n" + "".join(f"{n},{t['group']}\n" for n, t in truth.items())
    )
    return root, truth


def _run(args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def analysed(study):
    root, truth = study
    out = root / "out"
    res = _run(["analyze", str(root / "scans"), "--groups", str(root / "groups.csv"),
                "-o", str(out)])
    return root, truth, out, res


def test_analyze_writes_contract_table(analysed):
    _, truth, out, res = analysed
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "morphometry.csv")
    assert all(c in df.columns for c in CONTRACT)
    assert set(df.scan) == set(truth)
    assert (df.status == "ok").all()
    assert df.threshold.nunique() == 1  # one study-wide threshold
    cols = pd.read_csv(out / "columns.csv")
    units = dict(zip(cols.column, cols.unit, strict=True))
    assert units["BV/TV"] == "%" and units["Tb.Th"] == "mm" and units["Tb.N"] == "1/mm"
    assert units["TV"] == "mm³" and units["BS/BV"] == "1/mm"


def test_reference_slice_and_voi_follow_the_truth(analysed):
    _, truth, out, _ = analysed
    df = pd.read_csv(out / "morphometry.csv").set_index("scan")
    for name, t in truth.items():
        r = df.loc[name]
        assert r.distal_end == t["distal_end"]
        err_mm = abs(r.ref_slice - t["ref_section"]) * t["voxel_mm"]
        assert err_mm <= 0.1, (name, r.ref_slice, t["ref_section"])
        # the VOI is 2.0 mm long and starts 1.0 mm proximal of the reference
        n_voi = r.voi_last_slice - r.voi_first_slice + 1
        assert n_voi * t["voxel_mm"] == pytest.approx(2.0, abs=t["voxel_mm"])
        near = r.voi_first_slice if t["distal_end"] == "first" else r.voi_last_slice
        assert abs(near - r.ref_slice) * t["voxel_mm"] == pytest.approx(1.0, abs=0.02)


def test_groups_differ_like_the_design(analysed):
    _, _, out, _ = analysed
    df = pd.read_csv(out / "morphometry.csv")
    g = df.groupby("group")["BV/TV"].mean()
    assert g["sham"] > g["OVX"] + 8  # design: ~30 % vs ~10 %
    # internal consistency of the definitions
    np.testing.assert_allclose(df["BV/TV"], 100 * df.BV / df.TV, rtol=1e-9)


def test_per_scan_json_carries_provenance(analysed):
    _, truth, out, _ = analysed
    for name in truth:
        info = json.loads((out / name / "morphometry.json").read_text())
        assert info["input_hash"].startswith("sha256:")
        assert info["versions"]["ctmorph"]
        assert info["config"]["roi"] == "auto"
        assert info["row"]["scan"] == name
        assert (out / name / "qc" / "longitudinal.png").stat().st_size > 1000
    assert (out / "qc_overview.png").stat().st_size > 1000


def test_report_group_summary(analysed):
    _, truth, out, _ = analysed
    res = _run(["report", str(out)])
    assert res.exit_code == 0, res.output
    s = pd.read_csv(out / "report" / "group_summary.csv")
    df = pd.read_csv(out / "morphometry.csv")
    r = s[(s.parameter == "BV/TV") & (s.group == "sham")].iloc[0]
    v = df[df.group == "sham"]["BV/TV"]
    assert r.n == 2 and r["mean"] == pytest.approx(v.mean()) and r["sd"] == pytest.approx(v.std())
    assert list(s[s.parameter == "BV/TV"].group) == ["sham", "OVX"]


def test_same_input_same_numbers(analysed):
    root, _, out, _ = analysed
    out2 = root / "out2"
    res = _run(["analyze", str(root / "scans" / "sham_a"), "--group", "sham",
                "--threshold", str(pd.read_csv(out / "morphometry.csv").threshold[0]),
                "-o", str(out2)])
    assert res.exit_code == 0, res.output
    a = pd.read_csv(out / "morphometry.csv").set_index("scan").loc["sham_a"]
    b = pd.read_csv(out2 / "morphometry.csv").set_index("scan").loc["sham_a"]
    for c in ["BV/TV", "Tb.Th", "Tb.Sp", "Tb.N", "BS/BV", "ref_slice", "input_hash"]:
        assert a[c] == b[c], c


def test_bad_scans_fail_alone(study, tmp_path):
    root, truth = study
    scans = tmp_path / "scans"
    shutil.copytree(root / "scans" / "sham_a", scans / "sham_a")
    shutil.copytree(root / "scans" / "OVX_a", scans / "gap_scan")
    victim = sorted((scans / "gap_scan").glob("*_rec0*.bmp"))[40]
    victim.unlink()  # a gap in the numbering
    shutil.copytree(root / "scans" / "OVX_b", scans / "nogroup")
    groups = tmp_path / "groups.csv"
    groups.write_text("scan,group\nsham_a,sham\ngap_scan,OVX\n")
    out = tmp_path / "out"
    res = _run(["analyze", str(scans), "--groups", str(groups), "-o", str(out)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    df = pd.read_csv(out / "morphometry.csv").set_index("scan")
    assert df.loc["sham_a", "status"] == "ok"
    assert df.loc["gap_scan", "status"] == "failed"
    assert "gap" in df.loc["gap_scan", "error"] and victim.stem[-4:].lstrip("0") in \
        df.loc["gap_scan", "error"]
    assert df.loc["nogroup", "status"] == "failed"
    assert "not listed with a group" in df.loc["nogroup", "error"]


def test_missing_folder_is_one_clear_line(tmp_path):
    res = _run(["analyze", str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert "nope" in res.output and "Traceback" not in res.output


def test_wrong_arguments_exit_2(tmp_path):
    res = _run(["analyze", str(tmp_path), "-o", str(tmp_path / "o"), "--roi", "box"])
    assert res.exit_code == 2
    res = _run(["analyze", str(tmp_path), "-o", str(tmp_path / "o"), "--threshold", "abc"])
    assert res.exit_code == 2 and "grey value or 'otsu'" in res.output


def test_roi_full_on_a_plate_phantom_folder(tmp_path):
    # 5-voxel plates with 9-voxel gaps, 20 µm voxels: Tb.Th = 0.1 mm, Tb.Sp = 0.18 mm
    mask = plates((84, 64, 64), 5, 9, axis=0, offset=3)
    grey = grey_from_mask(mask, blur=0.0, noise=0.0)
    write_nrecon_folder(tmp_path / "plates", grey, voxel_size_um=20.0, file_type="tif")
    out = tmp_path / "out"
    res = _run(["analyze", str(tmp_path / "plates"), "--roi", "full", "--threshold", "130",
                "--smooth-sigma", "0", "--save-maps", "-o", str(out)])
    assert res.exit_code == 0, res.output
    r = pd.read_csv(out / "morphometry.csv").iloc[0]
    h = 0.02
    # every bone voxel of a whole 5-voxel plate has local thickness 5.5 voxels (corrected);
    # the 2-voxel remnant cut by the image border at z = 0..1 measures 2·2 - 0.5 = 3.5 voxels
    # (sphere centres lie inside the image; the border itself does not limit them)
    hist = json.loads((out / "plates" / "morphometry.json").read_text())["histograms"]
    counts = np.array(hist["Tb.Th"]["counts"])
    assert mask[:2].all() and not mask[2:5].any()
    assert counts[5] == mask[2:].sum() and counts[3] == mask[:2].sum()
    assert np.array(hist["Tb.Sp"]["counts"]).sum() == (~mask).sum()
    import tifffile

    th_map = tifffile.imread(out / "plates" / "maps" / "thickness.tif")
    assert th_map.shape == mask.shape
    np.testing.assert_allclose(th_map[2:][mask[2:]], 5.5 * h, rtol=1e-5)
    assert (th_map[~mask] == 0).all()
    assert r["BV/TV"] == pytest.approx(100 * mask.mean())
    assert abs(r["Tb.Th"] - 5 * h) <= 0.5 * h + 1e-9
    assert abs(r["Tb.Sp"] - 9 * h) <= 0.5 * h + 1e-9
    assert r["Tb.N"] == pytest.approx(1 / (14 * h), rel=0.08)
    assert abs(r["SMI"]) < 0.5  # plates: SMI 0
    assert r["DA"] > 0.9  # parallel plates: fully anisotropic
    assert abs(r["MIL.dir.z"]) < 0.1  # longest intercepts lie in the plates, not across them


def test_roi_full_on_a_rod_lattice_folder(tmp_path):
    # cubic lattice of rods, pitch 10 voxels of 15 µm: Conn.D = 2 / p³ in the infinite lattice
    p, h = 10, 0.015
    mask = rod_lattice((60, 60, 60), p, 3.5)
    grey = grey_from_mask(mask, blur=0.0, noise=0.0)
    write_nrecon_folder(tmp_path / "rods", grey, voxel_size_um=15.0, file_type="png")
    out = tmp_path / "out"
    res = _run(["analyze", str(tmp_path / "rods"), "--roi", "full", "--threshold", "130",
                "--smooth-sigma", "0", "-o", str(out)])
    assert res.exit_code == 0, res.output
    r = pd.read_csv(out / "morphometry.csv").iloc[0]
    assert r["Conn.D"] == pytest.approx(2 / (p * h) ** 3, rel=0.15)
    assert r["DA"] < 0.15  # three equal rod directions: isotropic fabric


def test_inspect_prints_the_log(study):
    root, _ = study
    res = _run(["inspect", str(root / "scans" / "sham_a")])
    assert res.exit_code == 0, res.output
    assert "9" in res.output and "bmp" in res.output.lower()


def test_cortical_voi_matches_the_generator(study, tmp_path):
    root, truth = study
    f = make_femur(group="sham", seed=1, shape_yx=(160, 160), distal_first=True)
    h = f.voxel_um / 1000
    n_left = f.grey.shape[0] - f.ref_index  # slices proximal of the reference, ref included
    offset = round((n_left * h - 0.3), 3)
    out = tmp_path / "out"
    # threshold halfway between marrow (60) and cortical bone (215) of the generator, so the
    # segmented wall neither grows nor shrinks; a threshold off the midpoint moves both
    # surfaces of the ~14-voxel wall and changes Ct.Ar by several per cent
    res = _run(["analyze", str(root / "scans" / "sham_a"), "--group", "sham",
                "--threshold", "137.5",
                "--cortical-offset-mm", str(offset), "--cortical-height-mm", "0.2",
                "--no-qc", "-o", str(out)])
    assert res.exit_code == 0, res.output
    r = pd.read_csv(out / "morphometry.csv").iloc[0]
    z0 = r.ct_first_slice - 0  # sham_a starts at section 0
    z1 = r.ct_last_slice + 1
    assert (z1 - z0) * h == pytest.approx(0.2, abs=h)
    cortex = f.cortex_truth[z0:z1]
    inside = cortex | f.endocortical_truth[z0:z1]
    px = h * h
    ct_ar = cortex.sum(axis=(1, 2)).mean() * px
    tt_ar = inside.sum(axis=(1, 2)).mean() * px
    # segmentation of a blurred, noisy image: areas within 5 % of the generator's labels
    assert r["Ct.Ar"] == pytest.approx(ct_ar, rel=0.05)
    assert r["Tt.Ar"] == pytest.approx(tt_ar, rel=0.05)
    assert r["Ma.Ar"] == pytest.approx(r["Tt.Ar"] - r["Ct.Ar"])
    # too far: the scan ends before the cortical VOI
    res = _run(["analyze", str(root / "scans" / "sham_a"), "--group", "sham",
                "--cortical-offset-mm", "9", "--no-qc", "-o", str(tmp_path / "o2")])
    assert res.exit_code == 1 and "ends before the cortical VOI" in res.output


# ---------------------------------------------------------------------------------------------
# per scan


def test_each_scan_has_its_section_and_renderings(analysed):
    _, _, out, _ = analysed
    for name in SCANS:
        qc = out / name / "qc"
        info = json.loads((qc / "figure.json").read_text())
        assert set(info) == {"section_voi.png", "render_voi.png", "render_femur.png"}
        voxel = 0.009  # make_femur's default voxel size (mm)
        assert info["section_voi.png"]["pixel_mm"] == pytest.approx([voxel, voxel])
        assert info["render_voi.png"]["pixel_mm"] == [VOI_PIXEL_MM, VOI_PIXEL_MM]
        for png in info:
            with Image.open(qc / png) as im:
                assert im.size[0] > 100, png
        listed = json.loads((out / name / "morphometry.json").read_text())["outputs"]
        assert {f"qc/{p}" for p in [*info, "figure.json"]} <= set(listed)


def test_section_has_the_voi_outlined_above_the_growth_plate(analysed):
    """Distal end at the bottom whichever end the stack starts with: the VOI (proximal of the
    plate) is outlined in the upper half of the picture."""
    _, _, out, _ = analysed
    for name in SCANS:
        rgb = np.asarray(Image.open(out / name / "qc" / "section_voi.png").convert("RGB"))
        rows = np.flatnonzero((rgb == OUTLINE_RGB).all(axis=2).any(axis=1))
        assert rows.size > 10, name
        assert rows.mean() < 0.55 * rgb.shape[0], name


def test_renderings_show_bone_on_white(analysed):
    _, _, out, _ = analysed
    with Image.open(out / "sham_a" / "qc" / "render_voi.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    white = (rgb >= 250).all(axis=2)
    assert 0.02 < 1 - white.mean() < 0.8  # some bone, mostly background
    assert white[0].all() and white[:, 0].all()  # the bone is framed, not cut by the border


# ---------------------------------------------------------------------------------------------
# the report


def test_report_draws_the_paper_figure_with_every_group(analysed):
    """One report run (``--representative Tb.Th``): both figures, 300 dpi and a page wide, each
    group's Tb.Th representative in the legend. Same input, same bytes: tested for every report
    file, these included, in test_run_integrity.py."""
    _, _, out, _ = analysed
    res = _run(["report", out, "--model", "OVX", "--representative", "Tb.Th", "--no-excel"])
    assert res.exit_code == 0, res.output
    rep = out / "report"
    for stem in ("figure_renderings", "figure_paper"):
        assert (rep / f"{stem}.png").is_file() and (rep / f"{stem}.svg").is_file()
    with Image.open(rep / "figure_paper.png") as im:
        assert im.info["dpi"][0] == pytest.approx(300, abs=1)
        assert im.size[0] == pytest.approx(7.0 * 300, abs=30)  # a two-column page width
    methods = (rep / "methods.md").read_text()
    legend = methods[methods.index("**Figure legend.**"):]
    assert "whose Tb.Th is closest" in legend
    df = pd.read_csv(out / "morphometry.csv")
    want = representatives(df, ["sham", "OVX"], "Tb.Th")
    assert set(want) == {"sham", "OVX"}
    for g, r in want.items():
        assert f"{g}: " + markdown_text(f"{r.scan}, Tb.Th") in legend  # escaped for Markdown
    assert "paper figure" in (rep / "report.html").read_text()
    bad = _run(["report", out, "--representative", "Tb.Thick"])
    assert bad.exit_code == 2
    assert "--representative" in bad.output and "Tb.Thick" in bad.output


# ---------------------------------------------------------------------------------------------
# ctmorph render


def test_render_command_png_and_gif(analysed, tmp_path):
    _, _, out, _ = analysed
    png = tmp_path / "voi.png"
    res = _run([str(a) for a in ["render", out / "OVX_b", "-o", png, "--size", 300,
                                 "--view", "30,10"]])
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.size == (300, 300)
    gif = tmp_path / "turn.gif"
    res = _run(["render", out / "sham_a", "-o", gif, "--show", "femur", "--size", 160,
                "--frames", 4])
    assert res.exit_code == 0, res.output
    with Image.open(gif) as im:
        assert im.n_frames == 4


def test_render_command_refuses_a_bad_output(analysed, tmp_path):
    _, _, out, _ = analysed
    res = _run(["render", out / "sham_a", "-o", tmp_path / "x.jpg"])
    assert res.exit_code == 1
    assert "x.jpg" in res.output and ".png or .gif" in res.output
    assert not (tmp_path / "x.jpg").exists()




def test_render_a_scan_folder_at_the_study_threshold(analysed, tmp_path):
    """A scan folder rendered at the study's grey threshold is, byte for byte, the VOI
    rendering its analysis wrote (same VOI, view, scale and scale bar)."""
    root, _, out, _ = analysed
    thr = pd.read_csv(out / "morphometry.csv").threshold[0]
    png = tmp_path / "folder.png"
    res = _run(["render", root / "scans" / "OVX_a", "-o", png, "--threshold", thr])
    assert res.exit_code == 0, res.output
    assert png.read_bytes() == (out / "OVX_a" / "qc" / "render_voi.png").read_bytes()
