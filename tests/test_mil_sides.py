"""The MIL kernel's side map (ctmorph._kernels.mil.cell_sides): against a numpy reference,
its claim checked by replaying the trilinear interpolation's float arithmetic, and the line
counts with the map bitwise those of the plain walk (an all-MIXED map interpolates every
sample), on smoothed fields and on fields built to sit at and near the level and the margin."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctmorph._kernels.mil import (
    NO_LIMIT,
    SIDE_MARGIN,
    cell_sides,
    mil_counts,
    mil_counts_sides,
    mil_counts_window,
    side_margin,
)
from ctmorph.morphometry.anisotropy import hemisphere_directions


def naive_cell_sides(field, level, margin):
    """numpy reference: 1 when all 8 corners lie in (level + margin, 1e300), 2 when all lie in
    (-1e300, level - margin), else 0."""
    f = np.asarray(field, dtype=np.float64)
    corners = np.stack([f[a: f.shape[0] - 1 + a, b: f.shape[1] - 1 + b, c: f.shape[2] - 1 + c]
                        for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    with np.errstate(invalid="ignore"):
        above = np.all((corners > level + margin) & (corners < 1e300), axis=0)
        below = np.all((corners < level - margin) & (corners > -1e300), axis=0)
    return np.where(above, 1, np.where(below, 2, 0)).astype(np.uint8)


def sample_py(f, q0, q1, q2):
    """ctmorph._kernels.mil._sample in Python floats (IEEE double, the same operations)."""
    i0, j0, k0 = int(q0), int(q1), int(q2)
    f0, f1, f2 = q0 - i0, q1 - j0, q2 - k0
    g0, g1, g2 = 1.0 - f0, 1.0 - f1, 1.0 - f2
    v = [[[float(f[i0 + a, j0 + b, k0 + c]) for c in (0, 1)] for b in (0, 1)] for a in (0, 1)]
    c00 = v[0][0][0] * g2 + v[0][0][1] * f2
    c01 = v[0][1][0] * g2 + v[0][1][1] * f2
    c10 = v[1][0][0] * g2 + v[1][0][1] * f2
    c11 = v[1][1][0] * g2 + v[1][1][1] * f2
    return (c00 * g1 + c01 * f1) * g0 + (c10 * g1 + c11 * f1) * f0


def near_level_field(rng, shape, level, dtype=np.float32):
    """Values at the level, one float step off it, at and one step around ``level ± margin``,
    a little beyond, and far, in smooth patches (so uniform cells with corners right at the
    margin occur next to cells straddling the level)."""
    margin = side_margin(level)
    lv = np.array(level, dtype)
    up = [lv, np.nextafter(lv, dtype(np.inf)), lv + dtype(margin),
          np.nextafter(lv + dtype(margin), dtype(np.inf)),
          np.nextafter(np.nextafter(lv + dtype(margin), dtype(np.inf)), dtype(np.inf)),
          lv + dtype(1.5 * margin), lv + dtype(0.3 * max(1.0, abs(level)))]
    down = [lv, np.nextafter(lv, dtype(-np.inf)), lv - dtype(margin),
            np.nextafter(lv - dtype(margin), dtype(-np.inf)),
            np.nextafter(np.nextafter(lv - dtype(margin), dtype(-np.inf)), dtype(-np.inf)),
            lv - dtype(1.5 * margin), lv - dtype(0.3 * max(1.0, abs(level)))]
    sign = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5
    pick = ndimage.zoom(rng.integers(0, 7, (4, 4, 4)), np.array(shape) / 4, order=0)
    pick = np.where(rng.random(shape) < 0.15, rng.integers(0, 7, shape), pick[: shape[0],
                    : shape[1], : shape[2]])
    out = np.where(sign, np.take(np.array(up, dtype), pick), np.take(np.array(down, dtype), pick))
    return np.ascontiguousarray(out.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", [0.5, 0.0, -3.0, 1234.5])
def test_cell_sides_matches_numpy_reference(dtype, level):
    rng = np.random.default_rng(7)
    field = near_level_field(rng, (9, 11, 10), level, dtype)
    flat = field.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, np.finfo(dtype).max, -np.finfo(dtype).max]
    flat[rng.choice(flat.size, 12, replace=False)] = np.resize(np.array(specials, dtype), 12)
    if dtype == np.float64:
        flat[:3] = (1e300, 2e300, -1e300)  # at / past the magnitude bound
    margin = side_margin(level)
    got = cell_sides(field, level, margin)
    want = naive_cell_sides(field, level, margin)
    np.testing.assert_array_equal(got, want)
    assert got.shape == tuple(n - 1 for n in field.shape)
    assert set(np.unique(got)) == {0, 1, 2}


def test_cell_sides_degenerate_shapes():
    assert cell_sides(np.zeros((1, 4, 4), np.float32), 0.5, 1e-4).shape == (0, 3, 3)
    assert cell_sides(np.ones((2, 2, 2), np.float32), 0.5, 1e-4).tolist() == [[[1]]]
    assert side_margin(0.5) == SIDE_MARGIN and side_margin(-200.0) == 200.0 * SIDE_MARGIN


@pytest.mark.parametrize("level", [0.5, 0.0, -3.0, 1234.5])
def test_uniform_cells_interpolate_to_their_side(level):
    # Replay the kernel's interpolation at the extreme fractions (0, just below 1, 1/2) and
    # random ones in every uniform cell whose corners come nearest the margin: the computed
    # value lies on the side the map claims.
    rng = np.random.default_rng(1)
    field = near_level_field(rng, (12, 12, 12), level)
    field[0, 0, 0] = np.finfo(np.float32).max  # a huge corner among ones just past the margin
    field[11, 11, 11] = -np.finfo(np.float32).max
    margin = side_margin(level)
    side = cell_sides(field, level, margin)
    f = field.astype(np.float64)
    corners = np.stack([f[a: 11 + a, b: 11 + b, c: 11 + c]
                        for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    # uniform cells with a corner within half a margin of the margin are among those tested
    assert corners.min(axis=0)[side == 1].min() < level + 1.5 * margin
    assert corners.max(axis=0)[side == 2].max() > level - 1.5 * margin
    def positions(i):  # the cell's first and last float index, its middle, random ones
        return [float(i), float(np.nextafter(i + 1.0, 0.0)), i + 0.5, *(i + rng.random(3))]

    checked = 0
    for i, j, k in zip(*np.nonzero(side), strict=True):
        for _ in range(6):
            q = (rng.choice(positions(i)), rng.choice(positions(j)), rng.choice(positions(k)))
            assert (sample_py(field, *q) > level) == (side[i, j, k] == 1)
            checked += 1
    assert checked > 300


def _directions():
    dirs = hemisphere_directions(14)
    dirs[::3, 0] *= -1.0  # going down in z
    dirs[1] = (0.0, 0.6, 0.8)  # horizontal
    dirs[2] = (1.0, 0.0, 0.0)  # along an axis: samples on cell faces
    return dirs


def _fields():
    rng = np.random.default_rng(5)
    shape = (13, 12, 11)
    smooth = ndimage.gaussian_filter((rng.random(shape) < 0.4).astype(np.float32), 0.7)
    yield "smoothed", np.pad(smooth.astype(np.float32), 1, mode="edge"), 0.5
    yield "binary", np.pad((rng.random(shape) < 0.4).astype(np.float32), 1, mode="edge"), 0.5
    for level in (0.5, -3.0):
        yield f"near level {level}", np.pad(near_level_field(rng, shape, level), 1,
                                            mode="edge"), level


@pytest.mark.parametrize("name, field, level", list(_fields()),
                         ids=[f[0] for f in _fields()])
def test_counts_with_side_map_equal_the_plain_walk(name, field, level):
    rng = np.random.default_rng(9)
    voi = np.pad((rng.random(np.array(field.shape) - 2) < 0.8).astype(np.uint8), 1, mode="edge")
    sp = np.array([0.011, 0.009, 0.01])
    dirs = _directions()
    nz, ny, nx = (n - 2 for n in field.shape)
    side = cell_sides(field, level, side_margin(level))
    assert (side == 0).any() and (side == 1).any() and (side == 2).any()
    plain = np.zeros_like(side)
    for full in (True, False):
        for h, ds in ((0.013, 0.009), (0.02, 0.0037), (0.011, 0.023)):
            want = mil_counts_sides(field, plain, voi, full, sp, dirs, h, ds, level,
                                    nz, ny, nx, 0, -NO_LIMIT, NO_LIMIT)
            got = mil_counts_sides(field, side, voi, full, sp, dirs, h, ds, level,
                                   nz, ny, nx, 0, -NO_LIMIT, NO_LIMIT)
            whole = mil_counts(field, voi, full, sp, dirs, h, ds, level)
            for g in (got, whole):
                np.testing.assert_array_equal(g[0], want[0])
                np.testing.assert_array_equal(g[1], want[1])
            assert want[1].sum() > 0
            # a window: its own map, built inside mil_counts_window, gives the same counts
            o0, o1 = 5, 8
            reach = int(ds / sp[0]) + 2  # the window the kernel's contract asks for
            w0, w1 = max(o0 - reach, 0), min(o1 + reach, nz + 2)
            a = mil_counts_window(np.ascontiguousarray(field[w0:w1]),
                                  np.ascontiguousarray(voi[w0:w1]), full, sp, dirs, h, ds,
                                  level, nz, ny, nx, w0, o0, o1)
            b = mil_counts_sides(np.ascontiguousarray(field[w0:w1]), plain[w0:w1 - 1],
                                 np.ascontiguousarray(voi[w0:w1]), full, sp, dirs, h, ds,
                                 level, nz, ny, nx, w0, o0, o1)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
