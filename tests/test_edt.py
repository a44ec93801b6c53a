"""Exact Euclidean distance transform: against brute force and scipy, over spacing, memory order
and thread count."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
from scipy import ndimage

from ctmorph.errors import ConfigError
from ctmorph.morphometry import distance_transform
from ctmorph.phantoms import random_trabecular

EXACT_SPACINGS = oracles.EXACT_SPACINGS


def _random_masks():
    rng = np.random.default_rng(42)
    yield "noise", rng.random((11, 13, 12)) < 0.6
    yield "sparse background", rng.random((9, 14, 10)) < 0.97
    yield "sponge", random_trabecular((14, 12, 16), bv_tv=0.6, scale=1.5, seed=3)


@pytest.mark.parametrize("spacing", EXACT_SPACINGS)
def test_matches_brute_force(spacing):
    for name, mask in _random_masks():
        got = distance_transform(mask, spacing=spacing)
        want = np.sqrt(oracles.squared_edt(mask, spacing)).astype(np.float32)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_irregular_anisotropic_spacing_matches_brute_force():
    spacing = (0.0137, 0.009, 0.0101)  # no simple ratios: the general (non-integer) path
    for name, mask in _random_masks():
        got = distance_transform(mask, spacing=spacing)
        want = np.sqrt(oracles.squared_edt(mask, spacing))
        np.testing.assert_allclose(got, want, rtol=2e-7, err_msg=name)


def test_matches_scipy_on_padded_volume():
    # scipy measures to the nearest background voxel inside the array too; padding with a
    # phase shell checks that the image border is never taken as background.
    mask = random_trabecular(24, bv_tv=0.7, scale=2.0, seed=5)
    padded = np.pad(mask, 3, constant_values=True)
    spacing = (0.02, 0.01, 0.015)
    got = distance_transform(padded, spacing=spacing)
    want = ndimage.distance_transform_edt(padded, sampling=spacing)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0, 0, 0] > 0.02  # a border voxel is not next to background


def test_border_is_not_background():
    mask = np.ones((1, 1, 7), bool)
    mask[0, 0, 2] = False
    got = distance_transform(mask, spacing=(1.0, 1.0, 0.5))[0, 0]
    np.testing.assert_array_equal(got, [1.0, 0.5, 0.0, 0.5, 1.0, 1.5, 2.0])


def test_line_without_background_uses_other_lines():
    mask = np.ones((3, 3, 3), bool)
    mask[0, 0, 0] = False
    got = distance_transform(mask, spacing=1.0)
    assert got[2, 2, 2] == pytest.approx(np.sqrt(12.0))


def test_no_background_is_infinite():
    got = distance_transform(np.ones((4, 5, 6), bool), spacing=0.01)
    assert np.isinf(got).all()


def test_memory_order_and_threads(threads):
    mask = random_trabecular((20, 17, 23), bv_tv=0.5, scale=2.0, seed=7)
    spacing = (0.5, 0.25, 0.375)
    threads(1)
    ref = distance_transform(mask, spacing=spacing)
    threads(2)
    np.testing.assert_array_equal(distance_transform(mask, spacing=spacing), ref)
    np.testing.assert_array_equal(distance_transform(np.asfortranarray(mask), spacing=spacing),
                                  ref)
    np.testing.assert_array_equal(distance_transform(mask.astype(np.uint8), spacing=spacing),
                                  ref)
    # a strided view
    np.testing.assert_array_equal(distance_transform(mask[::2], spacing=spacing),
                                  distance_transform(mask[::2].copy(), spacing=spacing))


def test_bad_input():
    with pytest.raises(ConfigError, match="boolean"):
        distance_transform(np.zeros((3, 3, 3), np.float32), spacing=1.0)
    with pytest.raises(ConfigError, match="3-D"):
        distance_transform(np.zeros((3, 3), bool), spacing=1.0)
    with pytest.raises(ConfigError, match="positive"):
        distance_transform(np.zeros((3, 3, 3), bool), spacing=(1.0, 0.0, 1.0))


def test_inplane_matches_brute_force_per_slice():
    """Each slice on its own: the brute-force 2-D squared distance, ``inf`` in a slice
    without background (slice 0 below), whatever the neighbouring slices hold."""
    from ctmorph.segment.femur.base import inplane_sq_edt

    sp = (0.5, 0.009, 0.011)
    for name, mask in _random_masks():
        mask = mask.copy()
        mask[0] = True
        got = inplane_sq_edt(mask, sp)
        assert np.isinf(got[0]).all(), name
        for z in range(1, mask.shape[0]):
            want = oracles.squared_edt(mask[z:z + 1], (1.0, *sp[1:]))[0]
            np.testing.assert_allclose(got[z], want, rtol=1e-6, err_msg=f"{name} slice {z}")


def test_inplane_equals_3d_kernel_with_decoupled_slices():
    """Regression for the in-plane passes alone: bit for bit what the 3-D kernel gives with a
    z voxel size so large that no slice reaches another (how the envelope maps were made
    before), so the femur's envelopes, and every VOI, stay the same."""
    from ctmorph._kernels.edt import squared_edt
    from ctmorph.segment.femur.base import inplane_sq_edt

    big = 1.0e12
    sp = (0.009, 0.009, 0.009)
    for name, mask in _random_masks():
        mask = mask.copy()
        mask[1] = True  # a slice without background
        ph = mask.astype(np.uint8)
        old = np.empty(mask.shape, np.float32)
        squared_edt(ph, np.array([big, sp[1] ** 2, sp[2] ** 2]), old)
        old[old > big * 0.5] = np.inf
        np.testing.assert_array_equal(inplane_sq_edt(mask, sp), old, err_msg=name)
