"""Local thickness: voxel-for-voxel against the brute-force definition, conventions, plates,
thread count, memory order, bad input."""

from __future__ import annotations

import numpy as np
import oracles
import pytest

from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry import local_thickness
from ctmorph.phantoms import plates, random_trabecular

EXACT_SPACINGS = oracles.EXACT_SPACINGS


def _volumes():
    rng = np.random.default_rng(1)
    yield "noise", rng.random((14, 12, 13)) < 0.55
    sponge = random_trabecular((22, 20, 18), bv_tv=0.35, scale=1.6, seed=11)
    yield "sponge", sponge
    yield "sponge marrow", ~sponge


@pytest.mark.parametrize("spacing", EXACT_SPACINGS)
def test_matches_brute_force(spacing):
    h = float(np.mean(spacing))
    for name, mask in _volumes():
        want = oracles.local_thickness(mask, spacing)
        raw = local_thickness(mask, spacing=spacing, convention="uncorrected")
        cor = local_thickness(mask, spacing=spacing, convention="corrected")
        assert raw.dtype == cor.dtype == np.float32
        # the same value rounded to float32: identical up to float32 rounding
        np.testing.assert_allclose(raw, want, rtol=1e-6, atol=0, err_msg=name)
        np.testing.assert_allclose(cor[mask], want[mask] - h / 2, rtol=1e-6, err_msg=name)
        assert np.array_equal(raw > 0, mask) and np.array_equal(cor > 0, mask)


def test_irregular_spacing_matches_brute_force():
    # Voxel ratios 137:90:101 have no small common unit: the kernel takes its floating-point
    # path (geometric containment test, balls shrunk by 1e-6 against float32 rounding). The
    # oracle works on the integer voxel sizes, where every distance is exact.
    spacing = (0.0137, 0.009, 0.0101)
    for name, mask in _volumes():
        got = local_thickness(mask, spacing=spacing, convention="uncorrected")
        want = oracles.local_thickness(mask, (137.0, 90.0, 101.0)) * 1e-4
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)


def test_rounded_spacing_ratio_is_exact():
    # 0.03 / 0.01 is 2.9999999999999996 in floating point: ties must still be decided as for
    # the exact ratio 3, i.e. identical to spacing (3, 1, 1) scaled by 0.01.
    mask = random_trabecular((16, 18, 17), bv_tv=0.4, scale=1.5, seed=2)
    got = local_thickness(mask, spacing=(0.03, 0.01, 0.01))
    ref = local_thickness(mask, spacing=(3.0, 1.0, 1.0))
    np.testing.assert_allclose(got, ref * 0.01, rtol=1e-6)
    want = oracles.local_thickness(mask, (3.0, 1.0, 1.0), "corrected") * 0.01
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_plate_parity(n):
    # An ideal plate of n voxels: uncorrected n + 1 (odd) or n (even); corrected n ± 0.5.
    mask = np.zeros((n + 8, 5, 6), bool)
    mask[4:4 + n] = True
    raw = local_thickness(mask, spacing=1.0, convention="uncorrected")
    cor = local_thickness(mask, spacing=1.0)
    want = n + 1 if n % 2 else n
    np.testing.assert_array_equal(raw[mask], want)
    np.testing.assert_array_equal(cor[mask], want - 0.5)
    assert abs(cor[mask][0] - n) == 0.5
    assert not raw[~mask].any()


def test_plates_along_each_axis_with_anisotropic_spacing():
    spacing = (0.02, 0.01, 0.015)
    for axis in range(3):
        mask = plates((20, 21, 22), 3, 4, axis=axis, offset=1)
        got = local_thickness(mask, spacing=spacing, convention="uncorrected")
        # away from the border-cut plates: 3 voxels thick, uncorrected = 4 voxels
        inner = [slice(None)] * 3
        inner[axis] = slice(5, 16)
        sel = mask[tuple(inner)]
        np.testing.assert_allclose(got[tuple(inner)][sel], 4 * spacing[axis], rtol=1e-6)


def test_threads_and_memory_order(threads):
    mask = random_trabecular((40, 36, 38), bv_tv=0.3, scale=2.0, seed=4)
    spacing = (0.5, 0.25, 0.375)
    threads(1)
    ref = local_thickness(mask, spacing=spacing)
    ref_m = local_thickness(~mask, spacing=spacing)
    threads(2)
    np.testing.assert_array_equal(local_thickness(mask, spacing=spacing), ref)
    np.testing.assert_array_equal(local_thickness(~mask, spacing=spacing), ref_m)
    np.testing.assert_array_equal(local_thickness(np.asfortranarray(mask), spacing=spacing), ref)


def test_scaling_spacing_scales_thickness():
    mask = random_trabecular((20, 20, 20), bv_tv=0.3, scale=1.5, seed=9)
    a = local_thickness(mask, spacing=(0.02, 0.01, 0.01))
    b = local_thickness(mask, spacing=(0.04, 0.02, 0.02))
    np.testing.assert_allclose(b, 2 * a, rtol=1e-6)


def test_empty_mask_gives_zeros():
    got = local_thickness(np.zeros((4, 5, 6), bool), spacing=1.0)
    assert got.shape == (4, 5, 6) and got.dtype == np.float32 and not got.any()


def test_bad_input():
    mask = np.zeros((5, 5, 5), bool)
    mask[2] = True
    with pytest.raises(ConfigError, match="convention must be one of"):
        local_thickness(mask, spacing=1.0, convention="bonej")
    with pytest.raises(SegmentationError, match="fills the whole volume"):
        local_thickness(np.ones((5, 5, 5), bool), spacing=1.0)
    with pytest.raises(ConfigError, match="boolean"):
        local_thickness(mask.astype(float), spacing=1.0)
    with pytest.raises(ConfigError, match="3 values"):
        local_thickness(mask, spacing=(1.0, 1.0))
