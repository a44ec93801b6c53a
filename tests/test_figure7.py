"""Figure 7A: the per-scan section and renderings, the representative animal of each group,
figure_renderings / figure_paper in the report, and ``ctmorph render``.

The study is the end-to-end one of ``test_cli_end_to_end`` (four small synthetic femurs, two
per group, stored either end first), analysed once here with the default settings, which
render. Geometry of the renderer itself (disc area, silhouettes, lighting) is in
``test_render.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ctmorph.cli import cli
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms.femur import make_femur
from ctmorph.pipeline.render import VOI_PIXEL_MM, pool_mask
from ctmorph.pipeline.stream import Preview
from ctmorph.qc.figure_pictures import OUTLINE_RGB, section_picture
from ctmorph.report.renderings import representatives
from ctmorph.textsafe import markdown_text

SPECS = [("sham_a", "sham", 1, True), ("sham_b", "sham", 2, False),
         ("OVX_a", "OVX", 3, True), ("OVX_b", "OVX", 4, False)]


def _run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig7")
    for name, group, seed, distal_first in SPECS:
        f = make_femur(group=group, seed=seed, shape_yx=(160, 160), distal_first=distal_first)
        write_nrecon_folder(root / "scans" / name, f.grey, voxel_size_um=f.voxel_um)
    (root / "groups.csv").write_text("scan,group\n" + "".join(f"{n},{g}\n"
                                                               for n, g, _, _ in SPECS))
    out = root / "out"
    res = _run(["analyze", root / "scans", "--groups", root / "groups.csv", "-o", out])
    assert res.exit_code == 0, res.output
    return root, out


# ---------------------------------------------------------------------------------------------
# per scan


def test_each_scan_has_its_section_and_renderings(analysed):
    _, out = analysed
    for name, _, _, _ in SPECS:
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
    _, out = analysed
    for name, _, _, _ in SPECS:
        rgb = np.asarray(Image.open(out / name / "qc" / "section_voi.png").convert("RGB"))
        rows = np.flatnonzero((rgb == OUTLINE_RGB).all(axis=2).any(axis=1))
        assert rows.size > 10, name
        assert rows.mean() < 0.55 * rgb.shape[0], name


def test_renderings_show_bone_on_white(analysed):
    _, out = analysed
    with Image.open(out / "sham_a" / "qc" / "render_voi.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    white = (rgb >= 250).all(axis=2)
    assert 0.02 < 1 - white.mean() < 0.8  # some bone, mostly background
    assert white[0].all() and white[:, 0].all()  # the bone is framed, not cut by the border


# ---------------------------------------------------------------------------------------------
# the report


def test_report_draws_the_paper_figure_with_every_group(analysed):
    _, out = analysed
    res = _run(["report", out, "--model", "OVX"])
    assert res.exit_code == 0, res.output
    rep = out / "report"
    for stem in ("figure_renderings", "figure_paper"):
        assert (rep / f"{stem}.png").is_file() and (rep / f"{stem}.svg").is_file()
    with Image.open(rep / "figure_paper.png") as im:
        assert im.info["dpi"][0] == pytest.approx(300, abs=1)
        assert im.size[0] == pytest.approx(7.0 * 300, abs=30)  # a two-column page width
    methods = (rep / "methods.md").read_text()
    legend = methods[methods.index("**Figure legend.**"):]
    df = pd.read_csv(out / "morphometry.csv")
    want = representatives(df, ["sham", "OVX"], "BV/TV")
    for g, r in want.items():
        assert f"{g}: {markdown_text(r.scan)}, BV/TV" in legend  # names escaped for Markdown
    assert "paper figure" in (rep / "report.html").read_text()
    first = (rep / "figure_paper.png").read_bytes()
    assert _run(["report", out, "--model", "OVX"]).exit_code == 0
    assert (rep / "figure_paper.png").read_bytes() == first  # same input, same bytes


def test_representative_option(analysed):
    _, out = analysed
    res = _run(["report", out, "--representative", "Tb.Th", "--no-excel"])
    assert res.exit_code == 0, res.output
    assert "whose Tb.Th is closest" in (out / "report" / "methods.md").read_text()
    bad = _run(["report", out, "--representative", "Tb.Thick"])
    assert bad.exit_code == 2
    assert "--representative" in bad.output and "Tb.Thick" in bad.output


def test_representative_is_closest_to_the_group_median_ties_by_name():
    df = pd.DataFrame({"scan": ["c", "a", "b", "d", "e", "f"], "status": "ok",
                       "group": ["g1", "g1", "g1", "g2", "g2", "g3"],
                       "BV/TV": [10.0, 30.0, 21.0, 5.0, 7.0, np.nan]})
    reps = representatives(df, ["g1", "g2", "g3"], "BV/TV")
    assert (reps["g1"].scan, reps["g1"].median) == ("b", 21.0)
    assert reps["g2"].scan == "d"  # 5 and 7 are both 1 from the median 6: the first name
    assert "g3" not in reps  # no finite value


# ---------------------------------------------------------------------------------------------
# ctmorph render


def test_render_command_png_and_gif(analysed, tmp_path):
    _, out = analysed
    png = tmp_path / "voi.png"
    res = _run(["render", out / "OVX_b", "-o", png, "--size", 300, "--view", "30,10"])
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.size == (300, 300)
    again = tmp_path / "again.png"
    assert _run(["render", out / "OVX_b", "-o", again, "--size", 300,
                 "--view", "30,10"]).exit_code == 0
    assert again.read_bytes() == png.read_bytes()
    gif = tmp_path / "turn.gif"
    res = _run(["render", out / "sham_a", "-o", gif, "--show", "femur", "--size", 160,
                "--frames", 4])
    assert res.exit_code == 0, res.output
    with Image.open(gif) as im:
        assert im.n_frames == 4


def test_render_command_refuses_a_bad_output(analysed, tmp_path):
    _, out = analysed
    res = _run(["render", out / "sham_a", "-o", tmp_path / "x.jpg"])
    assert res.exit_code == 1
    assert "x.jpg" in res.output and ".png or .gif" in res.output
    assert not (tmp_path / "x.jpg").exists()


# ---------------------------------------------------------------------------------------------
# building blocks against oracles


@pytest.mark.parametrize("f", [1, 2, 3])
def test_preview_counts_equal_block_sums(f):
    rng = np.random.default_rng(f)
    bone = rng.random((23, 17, 14)) < 0.4
    p = Preview(f, np.zeros((-(-23 // f), 17 // f, 14 // f), np.uint16))
    for s, e in ((0, 5), (5, 6), (6, 23)):  # chunks not aligned with the blocks
        p.add(s, bone[s:e])
    for (i, j, k), c in np.ndenumerate(p.counts):
        want = bone[i * f:(i + 1) * f, j * f:(j + 1) * f, k * f:(k + 1) * f].sum()
        assert c == want


def test_pool_mask_is_half_of_each_block():
    rng = np.random.default_rng(5)
    m = rng.random((9, 10, 7)) < 0.5
    got = pool_mask(m, 3)
    for (i, j, k), v in np.ndenumerate(got):
        block = m[i * 3:(i + 1) * 3, j * 3:(j + 1) * 3, k * 3:(k + 1) * 3]
        assert v == (2 * block.sum() >= 27)


def test_section_picture_outline_crop_and_orientation():
    grey = np.zeros((40, 30))
    bone = np.zeros((40, 30), bool)
    bone[2:38, 5:25] = True  # the bone: rows 2..37, columns 5..24
    voi = np.zeros((40, 30), bool)
    voi[20:30, 8:20] = True
    pic = section_picture(grey, bone, voi, (20, 30), distal_first=True)
    # rows: the distal end of the bone (2) to the VOI's end + 15 % of its length (30 + 2)
    # columns: the bone ± 8 px, clipped; distal end at the bottom
    assert pic.shape == (32 - 2, 30, 3)
    outline = (pic == OUTLINE_RGB).all(axis=2)
    assert outline.sum() == 2 * (10 + 12) - 4  # the rectangle's perimeter
    rows = np.flatnonzero(outline.any(axis=1))
    assert (rows.min(), rows.max()) == (32 - 30, 32 - 21)
