"""Chunked local thickness with halos: voxel for voxel equal to the whole-volume map, over chunk
sizes, conventions, spacings and input kinds; statistics; the halo check; bad input."""

from __future__ import annotations

import sys

import numpy as np
import oracles
import pytest

from ctmorph._kernels.thickness import masked_stats
from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry import chunked as chunked_mod
from ctmorph.morphometry import (
    local_thickness,
    local_thickness_chunked,
    thickness_stats_chunked,
    write_local_thickness,
)
from ctmorph.morphometry.chunked import _FIRST_HALO, thickness_halo
from ctmorph.phantoms import plates, random_trabecular, rod_lattice

da = pytest.importorskip("dask.array")

# Commensurate voxel sizes: the kernels work on exact integer squared distances, so the chunked
# map must be bitwise identical to the whole-volume one (same integers, same float32 ops).
EXACT_SPACINGS = [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.5, 0.25, 0.375)]


@pytest.fixture(autouse=True)
def _one_thread(threads):
    # One numba thread: hundreds of tiny chunks each launch ~7 parallel regions, and on a
    # loaded machine every launch can wait for a descheduled thread (tens of seconds in all).
    # The kernels' thread-count independence is tested in test_thickness.py; the Dask test
    # runs with 2 threads (and concurrent tasks).
    threads(1)


def _volumes():
    blobs = random_trabecular((22, 16, 17), bv_tv=0.3, scale=1.5, seed=3)
    yield "blobs", blobs
    yield "marrow", ~blobs
    yield "plates z", plates((23, 9, 10), 3, 4, axis=0, offset=2)
    yield "plates y", plates((17, 15, 9), 4, 5, axis=1, offset=1)
    yield "rods", rod_lattice((21, 14, 14), 7, 3.0)
    yield "noise", np.random.default_rng(5).random((13, 11, 12)) < 0.6


def _chunked(mask, **kw) -> np.ndarray:
    out = np.full(mask.shape, np.nan, dtype=np.float32)  # every voxel must be written
    write_local_thickness(mask, out, **kw)
    return out


@pytest.mark.parametrize("convention", ["corrected", "uncorrected"])
@pytest.mark.parametrize("spacing", EXACT_SPACINGS)
def test_equals_whole_volume(spacing, convention):
    for name, mask in _volumes():
        want = local_thickness(mask, spacing=spacing, convention=convention)
        for c in (1, 2, 5, mask.shape[0]):
            got = _chunked(mask, spacing=spacing, convention=convention, chunk_slices=c)
            assert np.array_equal(got, want), (name, c)


@pytest.mark.parametrize("ridge_slices", [1, 2, 3])
def test_ridges_collected_a_few_slices_at_a_time(monkeypatch, ridge_slices):
    # the ridge balls of a chunk's neighbourhood are gathered from slabs of distances with a
    # one-slice overlap (the ridge test sees the 26 neighbours only): any slab size gives the
    # whole-volume map, bit for bit
    monkeypatch.setattr(chunked_mod, "_RIDGE_SLICES", ridge_slices)
    for name, mask in _volumes():
        want = local_thickness(mask, spacing=(2.0, 1.0, 1.0))
        for c in (1, 4):
            got = _chunked(mask, spacing=(2.0, 1.0, 1.0), chunk_slices=c)
            assert np.array_equal(got, want), (name, c)


def test_equals_brute_force_oracle():
    # independent of local_thickness: the definition evaluated directly (float64, mm)
    mask = np.random.default_rng(8).random((12, 10, 11)) < 0.55
    want = oracles.local_thickness(mask, (2.0, 1.0, 1.0), "uncorrected")
    got = _chunked(mask, spacing=(2.0, 1.0, 1.0), convention="uncorrected", chunk_slices=2)
    # the same value rounded to float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_incommensurate_spacing_float_path():
    # Voxel ratios 137:90:101 take the floating-point path; the block's distance transform may
    # round differently from the whole volume's (its parabola offsets differ), so the promise is
    # float32 rounding (rtol 1e-6 = a few ulp), and the same support.
    spacing = (0.0137, 0.009, 0.0101)
    for name, mask in _volumes():
        want = local_thickness(mask, spacing=spacing, convention="uncorrected")
        for c in (1, 3):
            got = _chunked(mask, spacing=spacing, convention="uncorrected", chunk_slices=c)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=name)
            assert np.array_equal(got > 0, want > 0)


def _slab():
    # A plate 70 slices thick filling y and x (the image border is no surface): its largest
    # ball has radius 35 slices (centre slice 44: background at 9 and 80), far beyond the
    # first halo guess and beyond any chunk of a few slices.
    mask = np.zeros((90, 6, 7), bool)
    mask[10:80] = True
    return mask


def test_thick_slab_grows_the_halo():
    mask = _slab()
    info = thickness_halo(mask, spacing=1.0, chunk_slices=8)
    # analytic: R = 35; centres within K = 34 slices (34² < 35²), background within M = 35
    assert info.radius == 35.0 and info.centre_slices == 34 and info.background_slices == 35
    assert info.halo == info.required == 69 > 2 * _FIRST_HALO
    assert info.n_phase == 70 * 6 * 7
    want = local_thickness(mask, spacing=1.0)
    np.testing.assert_array_equal(want[mask], 69.5)  # 70 slices, even: 70 - 0.5
    for c in (1, 8, 40):
        assert np.array_equal(_chunked(mask, spacing=1.0, chunk_slices=c), want)
    # anisotropic: dz = 2 halves the slices needed (R = 70 = 35 slices of 2)
    sp = (2.0, 1.0, 1.0)
    info = thickness_halo(mask, spacing=sp, chunk_slices=8)
    assert (info.radius, info.centre_slices, info.background_slices) == (70.0, 34, 35)
    assert np.array_equal(_chunked(mask, spacing=sp, chunk_slices=8),
                          local_thickness(mask, spacing=sp))


def test_largest_radius_is_exact_not_a_block_artefact():
    # Background: the column x = 0 on every slice and the whole slice z = 30, shape (40, 1, 64).
    # True largest distance: 30 (slice 0, x >= 30: slice 30 is 30 away). A block of slices
    # 0-23 (chunk 0-7, first halo 16) misses slice 30 and sees 63 at (0, 0, 63); the run-time
    # check (63 > 24 slices to the block's edge) must reject it and redo the chunk.
    mask = np.ones((40, 1, 64), bool)
    mask[:, :, 0] = False
    mask[30] = False
    info = thickness_halo(mask, spacing=1.0, chunk_slices=8)
    assert info.radius == 30.0 and info.halo == 29 + 30
    assert np.array_equal(_chunked(mask, spacing=1.0, chunk_slices=8),
                          local_thickness(mask, spacing=1.0))


def test_explicit_halo_checked():
    mask = _slab()
    # pass 1 cannot prove the distances with 10 slices of context
    with pytest.raises(ConfigError, match=r"halo=10 slices is too small"):
        _chunked(mask, spacing=1.0, chunk_slices=8, halo=10)
    # enough for the distances (M = 35) but not for the ball centres too (K + M = 69)
    with pytest.raises(ConfigError, match=r"halo=50 slices is smaller than the 69 needed"):
        _chunked(mask, spacing=1.0, chunk_slices=8, halo=50)
    # a larger halo than needed changes nothing
    got = _chunked(mask, spacing=1.0, chunk_slices=8, halo=75)
    assert np.array_equal(got, local_thickness(mask, spacing=1.0))


def test_memmap_inputs_and_npy_output(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    mask = random_trabecular((20, 15, 16), bv_tv=0.35, scale=1.5, seed=4)
    want = local_thickness(mask, spacing=(0.5, 0.25, 0.375))
    np.save(tmp_path / "m.npy", mask)
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    # a uint8 0/255 TIFF memmap: integer masks count nonzero as phase
    tm = tifffile.memmap(tmp_path / "m.tif", shape=mask.shape, dtype=np.uint8)
    tm[:] = mask * np.uint8(255)
    tm.flush()
    tm = tifffile.memmap(tmp_path / "m.tif", mode="r")
    for src in (mm, tm):
        out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32,
                                        shape=mask.shape)
        write_local_thickness(src, out, spacing=(0.5, 0.25, 0.375), chunk_slices=3)
        assert np.array_equal(np.load(tmp_path / "out.npy"), want)
    write_local_thickness(mm, tmp_path / "sub" / "map.npy", spacing=(0.5, 0.25, 0.375),
                          chunk_slices=6)
    assert np.array_equal(np.load(tmp_path / "sub" / "map.npy"), want)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["map.npy"]  # no temporary left
    lazy = local_thickness_chunked(mm, spacing=(0.5, 0.25, 0.375), chunk_slices=7)
    assert lazy.dtype == np.float32 and lazy.chunks[0] == (7, 7, 6)
    assert np.array_equal(lazy.compute(), want)


def test_dask_input_and_output(threads):
    threads(2)
    mask = random_trabecular((24, 14, 15), bv_tv=0.3, scale=1.5, seed=6)
    want = local_thickness(~mask, spacing=(2.0, 1.0, 1.0), convention="uncorrected")
    src = ~da.from_array(mask, chunks=((5, 7, 3, 9), 14, 15))  # irregular z-chunks, lazy invert
    lazy = local_thickness_chunked(src, spacing=(2.0, 1.0, 1.0), convention="uncorrected")
    assert lazy.chunks[0] == (5, 7, 3, 9)  # the input's chunks by default
    assert np.array_equal(lazy.compute(scheduler="threads"), want)
    assert np.array_equal(lazy.compute(scheduler="sync"), want)
    assert np.array_equal(_chunked(src, spacing=(2.0, 1.0, 1.0), convention="uncorrected",
                                   chunk_slices=4), want)


def _full_stats(tau, sel):
    n, mean, sd, vmax = masked_stats(tau, np.ascontiguousarray(sel))
    return n, mean, sd, vmax


@pytest.mark.parametrize("phase", ["bone", "marrow"])
def test_stats_equal_full_map(phase):
    bone = random_trabecular((26, 18, 18), bv_tv=0.3, scale=1.6, seed=9)
    mask = bone if phase == "bone" else ~bone
    voi = np.zeros_like(bone)
    voi[4:21, 3:15, 2:16] = True  # structure outside the VOI is context
    sp = (0.5, 0.25, 0.375)
    tau = local_thickness(mask, spacing=sp)
    for v, sel in ((None, mask), (voi, mask & voi), (da.from_array(voi, chunks=(5, -1, -1)),
                                                     mask & voi)):
        n, mean, sd, vmax = _full_stats(tau, sel)
        for c in (1, 4, 26):
            got = thickness_stats_chunked(mask, v, spacing=sp, chunk_slices=c)
            assert got.n == n and got.max == vmax  # same float32 values: max is exact
            # chunk-wise sums merged (Chan et al.) vs one sequential sum: float64 rounding
            assert got.mean == pytest.approx(mean, rel=1e-12)
            assert got.sd == pytest.approx(sd, rel=1e-10)


def test_empty_and_full_phase():
    empty = np.zeros((6, 5, 5), bool)
    assert np.array_equal(_chunked(empty, spacing=1.0, chunk_slices=2), np.zeros(empty.shape))
    st = thickness_stats_chunked(empty, spacing=1.0, chunk_slices=2)
    assert st.n == 0 and np.isnan(st.mean) and np.isnan(st.sd) and np.isnan(st.max)
    assert thickness_halo(empty, spacing=1.0).halo == 0
    with pytest.raises(SegmentationError, match="fills the whole volume"):
        _chunked(~empty, spacing=1.0, chunk_slices=2)
    # a chunk with no phase in a volume with phase elsewhere: zeros, no distance transform
    some = empty.copy()
    some[0, 2, 2] = True
    assert np.array_equal(_chunked(some, spacing=1.0, chunk_slices=1),
                          local_thickness(some, spacing=1.0))


def test_bad_input():
    good = np.zeros((6, 5, 5), bool)
    good[2:4] = True
    with pytest.raises(ConfigError, match=r"3-D \(Z, Y, X\) array, got shape \(5, 5\)"):
        thickness_halo(good[0], spacing=1.0)
    with pytest.raises(ConfigError, match="boolean .* got dtype float64"):
        thickness_halo(good.astype(float), spacing=1.0)
    with pytest.raises(ConfigError, match="chunked along y/x"):
        local_thickness_chunked(da.from_array(good, chunks=(2, 2, 5)), spacing=1.0)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="chunk_slices must be a positive integer"):
            thickness_halo(good, spacing=1.0, chunk_slices=bad)
    with pytest.raises(ConfigError, match="halo must be a non-negative"):
        thickness_halo(good, spacing=1.0, halo=-1)
    with pytest.raises(ConfigError, match="convention must be one of"):
        local_thickness_chunked(good, spacing=1.0, convention="bonej")
    with pytest.raises(ConfigError, match="spacing"):
        thickness_halo(good, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match=r"voi has shape \(6, 5, 4\), expected \(6, 5, 5\)"):
        thickness_stats_chunked(good, good[:, :, :4], spacing=1.0)
    with pytest.raises(ConfigError, match="out must be an array of shape"):
        write_local_thickness(good, np.zeros((6, 5, 4), np.float32), spacing=1.0)
    with pytest.raises(ConfigError, match="floating-point dtype"):
        write_local_thickness(good, np.zeros((6, 5, 5), np.uint8), spacing=1.0)


def test_without_dask_names_the_extra(monkeypatch):
    good = np.zeros((6, 5, 5), bool)
    good[2:4] = True
    monkeypatch.setitem(sys.modules, "dask.array", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'ctmorph\[distributed\]'"):
        local_thickness_chunked(good, spacing=1.0)
    # the streaming functions need no Dask
    assert thickness_stats_chunked(good, spacing=1.0).n == good.sum()


class _Changing:
    """Array-like whose data change after ``after`` reads (a file rewritten mid-analysis)."""

    def __init__(self, mask, after):
        self.mask, self.after, self.reads = mask, after, 0
        self.shape, self.dtype = mask.shape, mask.dtype

    def __getitem__(self, key):
        self.reads += 1
        if self.reads > self.after:
            changed = self.mask.copy()
            changed[changed.shape[0] // 2, 3:6, 3:6] ^= True
            return changed[key]
        return self.mask[key]


def test_input_changed_between_passes():
    mask = random_trabecular((16, 10, 10), bv_tv=0.3, scale=1.5, seed=2)
    # pass 1 reads each of the 4 chunks once (halo 16 covers everything: no retry)
    src = _Changing(mask, after=4)
    with pytest.raises(ConfigError, match="mask changed between the two passes"):
        _chunked(src, spacing=1.0, chunk_slices=4)
    # unchanged data through the same array-like protocol: identical to the whole map
    assert np.array_equal(_chunked(_Changing(mask, after=10**6), spacing=1.0, chunk_slices=4),
                          local_thickness(mask, spacing=1.0))
