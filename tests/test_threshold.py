"""Thresholding: Otsu against scikit-image, chunked smoothing against whole-volume smoothing,
speck removal against hand-built volumes."""

import numba
import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from ctmorph.errors import SegmentationError
from ctmorph.segment.threshold import (
    binarize,
    despeckle,
    grey_histogram,
    otsu_threshold,
    smooth,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_otsu_matches_skimage_on_overlapping_modes(seed):
    # overlapping modes: no empty bins between them, so the maximum is unique
    rng = np.random.default_rng(seed)
    img = np.concatenate([rng.normal(80, 25, 40000), rng.normal(170, 25, 15000)])
    img = img.clip(0, 255).astype(np.uint8)
    hist = grey_histogram(img, gmax=255)
    assert otsu_threshold(hist) == pytest.approx(threshold_otsu(hist=hist))


def test_otsu_plateau_takes_midpoint():
    # two clean modes at 40 and 200: every t in 40..199 separates them perfectly
    hist = np.zeros(256, dtype=np.int64)
    hist[40], hist[200] = 1000, 500
    assert otsu_threshold(hist) == pytest.approx((40 + 199) / 2)


def test_otsu_errors():
    with pytest.raises(SegmentationError, match="histogram is empty"):
        otsu_threshold(np.zeros(256))
    with pytest.raises(SegmentationError, match="single grey value"):
        otsu_threshold(np.eye(1, 256, 7).ravel())


def test_histogram_excludes_no_data_zeros():
    img = np.array([[0, 0, 5], [5, 255, 0]], dtype=np.uint8)
    h = grey_histogram(img, gmax=255, no_data_zero=True)
    assert h[0] == 0 and h[5] == 2 and h[255] == 1 and h.sum() == 3
    h16 = grey_histogram(img.astype(np.uint16) * 200, gmax=65535)
    assert h16.size == 65536 and h16[1000] == 2


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sigma", [0.0, 0.8, 1.5])
def test_binarize_in_chunks_equals_whole_volume(sigma, threads):
    """Chunks with halos, smoothed by one thread or two, give the whole volume's bone."""
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 255, size=(45, 20, 18), dtype=np.uint8)
    whole = smooth(grey, sigma) > 127.5
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        assert np.array_equal(binarize(grey, 127.5, sigma_vox=sigma, chunk=7), whole)
    finally:
        numba.set_num_threads(before)


def test_smooth_matches_scipy():
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 255, size=(10, 12, 14), dtype=np.uint8)
    ref = ndimage.gaussian_filter(grey.astype(np.float64), 1.2, mode="nearest")
    np.testing.assert_allclose(smooth(grey, 1.2), ref, atol=1e-3)


def test_despeckle_removes_islands_and_fills_pores():
    bone = np.zeros((20, 20, 20), dtype=bool)
    bone[2:18, 2:18, 2:18] = True  # a big block (4096 voxels)
    bone[8:10, 8:10, 8:10] = False  # a closed 8-voxel pore inside it
    bone[0, 0, 19] = True  # a 1-voxel speck in a corner
    bone[0:2, 19, 0:2] = True  # a 4-voxel speck
    out = despeckle(bone, min_bone_voxels=10, min_marrow_voxels=10)
    expected = np.zeros_like(bone)
    expected[2:18, 2:18, 2:18] = True
    assert np.array_equal(out, expected)


def test_despeckle_keeps_pores_touching_border_and_no_data():
    bone = np.ones((10, 10, 10), dtype=bool)
    bone[0, 4, 4] = False  # pore on the border: may continue outside the volume
    bone[5, 5, 5] = False  # inner pore, but it is no-data
    valid = np.ones_like(bone)
    valid[5, 5, 5] = False
    out = despeckle(bone, min_bone_voxels=0, min_marrow_voxels=5, valid=valid)
    assert not out[0, 4, 4] and not out[5, 5, 5]


def test_despeckle_connectivity():
    # two bone voxels touching by a corner are one 26-connected island of 2
    bone = np.zeros((5, 5, 5), dtype=bool)
    bone[1, 1, 1] = bone[2, 2, 2] = True
    assert despeckle(bone, min_bone_voxels=2, min_marrow_voxels=0).sum() == 2
    assert despeckle(bone, min_bone_voxels=3, min_marrow_voxels=0).sum() == 0
