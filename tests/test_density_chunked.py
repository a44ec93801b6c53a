"""density_metrics_chunked, the one implementation of BMD and TMD (``density_metrics`` is it read
as one block): block-size invariance, and a numpy oracle.

The sums are of integer grey values (exact in float64), so equality is exact, for any block
size, erosion radius and no-data handling.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctmorph.calibration import Calibration
from ctmorph.errors import ConfigError
from ctmorph.morphometry.density import density_metrics, density_metrics_chunked
from ctmorph.morphometry.zsource import ArraySource

CAL = Calibration(slope=12.0, intercept=-0.2, r_squared=1.0)
WINDOW = (-0.01, 0.09)


class GreySource(ArraySource):
    """An in-memory source that also has the raw grey values."""

    def __init__(self, grey, bone, voi) -> None:
        super().__init__(bone, voi)
        self.grey = grey
        self.grey_reads: list[tuple[int, int]] = []

    def read_grey(self, z0: int, z1: int) -> np.ndarray:
        self.grey_reads.append((z0, z1))
        return self.grey[z0:z1].copy()


def _volume(seed: int, shape=(23, 17, 19), dtype=np.uint8):
    rng = np.random.default_rng(seed)
    bone = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5  # blobs with a real interior
    top = np.iinfo(dtype).max
    grey = np.where(bone, rng.integers(top // 2, top, shape), rng.integers(1, top // 3, shape))
    grey = grey.astype(dtype)
    grey[:, :, :3] = 0  # a no-data band (round-ROI scans)
    voi = np.zeros(shape, bool)
    voi[4:19, 2:15, 1:18] = True
    return grey, bone, voi


@pytest.mark.parametrize("radius", [0, 1, 1.5, 2.5])
@pytest.mark.parametrize("chunk", [1, 2, 5, 100])
@pytest.mark.parametrize("no_data_zero", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_block_size_invariant(radius, chunk, no_data_zero, dtype):
    grey, bone, voi = _volume(int(radius * 10) + chunk, dtype=dtype)
    gmax = int(np.iinfo(dtype).max)
    whole = density_metrics(grey, bone, voi, scan_window=WINDOW, gmax=gmax, calibration=CAL,
                            tmd_erosion_vox=radius, valid=(grey != 0) if no_data_zero else None)
    src = GreySource(grey, bone, voi)
    got = density_metrics_chunked(src, scan_window=WINDOW, gmax=gmax, calibration=CAL,
                                  tmd_erosion_vox=radius, no_data_zero=no_data_zero,
                                  chunk_slices=chunk)
    assert got == whole
    if radius <= 1.5:  # the test is not vacuous: bone survives the erosion
        assert np.isfinite(whole["TMD"])
    # blocks outside the VOI are skipped before their grey is read
    assert all(hi > 4 and lo < 19 for lo, hi in src.grey_reads)


def test_context_outside_the_voi_counts_for_the_erosion():
    # a bone slab whose surface lies just outside the VOI: the VOI's first bone slice is
    # one voxel from marrow, so radius 1 removes it only when the block sees that marrow
    grey = np.full((12, 6, 6), 200, np.uint8)
    bone = np.zeros(grey.shape, bool)
    bone[3:] = True
    grey[:3] = 50
    voi = np.zeros(grey.shape, bool)
    voi[4:] = True
    whole = density_metrics(grey, bone, voi, scan_window=WINDOW, gmax=255, calibration=CAL)
    for chunk in (1, 2, 3):
        got = density_metrics_chunked(GreySource(grey, bone, voi), scan_window=WINDOW,
                                      gmax=255, calibration=CAL, chunk_slices=chunk)
        assert got == whole


def test_bad_arguments_are_clear_errors():
    grey, bone, voi = _volume(0)
    src = GreySource(grey, bone, voi)
    with pytest.raises(ConfigError, match="tmd_erosion_vox"):
        density_metrics_chunked(src, scan_window=WINDOW, gmax=255, calibration=CAL,
                                tmd_erosion_vox=-1)
    with pytest.raises(ConfigError, match="chunk_slices"):
        density_metrics_chunked(src, scan_window=WINDOW, gmax=255, calibration=CAL,
                                chunk_slices=0)
    empty = GreySource(grey, bone, np.zeros_like(voi))
    with pytest.raises(ConfigError, match="no voxel with data"):
        density_metrics_chunked(empty, scan_window=WINDOW, gmax=255, calibration=CAL)


@pytest.mark.parametrize("radius", [0, 1, 2.5])
@pytest.mark.parametrize("chunk", [2, None])
def test_matches_a_numpy_oracle(radius, chunk):
    """BMD: the density of the mean grey value of the VOI voxels with data; TMD: of the bone
    voxels of the VOI farther than ``radius`` voxels from any non-bone voxel (scipy's exact
    EDT of the whole image, whose border is not a surface). ``density_metrics`` (one block)
    and the block-wise reading both equal it; float tolerance 1e-12 for the mean's summation
    order (the sums themselves are integers)."""
    from ctmorph.calibration.convert import grey_to_density

    grey, bone, voi = _volume(11)
    region = voi & (grey != 0)
    deep = bone & region if radius == 0 else (ndimage.distance_transform_edt(bone) > radius)
    tissue = deep & region
    want = {"BMD": grey_to_density(grey[region].mean(), CAL, WINDOW, 255),
            "TMD": grey_to_density(grey[tissue].mean(), CAL, WINDOW, 255)}
    assert tissue.sum() >= 10  # TMD is defined, and the erosion removes voxels when asked
    assert radius == 0 or tissue.sum() < (bone & region).sum()
    one = density_metrics(grey, bone, voi, scan_window=WINDOW, gmax=255, calibration=CAL,
                          tmd_erosion_vox=radius, valid=grey != 0)
    blocks = density_metrics_chunked(GreySource(grey, bone, voi), scan_window=WINDOW, gmax=255,
                                     calibration=CAL, tmd_erosion_vox=radius,
                                     no_data_zero=True, chunk_slices=chunk)
    for got in (one, blocks):
        for key in want:
            assert got[key] == pytest.approx(float(want[key]), rel=1e-12), key
