"""Figure 7A's building blocks against oracles: the representative animal, the pass-1 preview,
the block pooling of the renderings and the section picture. The pictures, the report's
figures and ``ctmorph render`` on an analysed study are tested end to end in
``test_cli_end_to_end.py``; the renderer's geometry in ``test_render.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctmorph.pipeline.render import pool_mask
from ctmorph.pipeline.stream import Preview
from ctmorph.qc.figure_pictures import OUTLINE_RGB, section_picture
from ctmorph.report.renderings import representatives


def test_representative_is_closest_to_the_group_median_ties_by_name():
    df = pd.DataFrame({"scan": ["c", "a", "b", "d", "e", "f"], "status": "ok",
                       "group": ["g1", "g1", "g1", "g2", "g2", "g3"],
                       "BV/TV": [10.0, 30.0, 21.0, 5.0, 7.0, np.nan]})
    reps = representatives(df, ["g1", "g2", "g3"], "BV/TV")
    assert (reps["g1"].scan, reps["g1"].median) == ("b", 21.0)
    assert reps["g2"].scan == "d"  # 5 and 7 are both 1 from the median 6: the first name
    assert "g3" not in reps  # no finite value


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
