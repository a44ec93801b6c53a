"""Connectivity, SMI, Tb.Pf and BS read from a ZSource in z-blocks (the one implementation of each;
the array functions read one block): block-size invariant and equal to independent oracles, over
chunk sizes (1-3 slices, awkward cuts), VOIs touching the slab ends, blocks without VOI or bone,
and bad input; no read ever holds the whole source."""

from __future__ import annotations

import importlib

import numpy as np
import oracles
import pytest
from scipy import ndimage
from skimage.measure import euler_number

from ctmorph._kernels.euler import euler_lut8
from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry.basic import bone_surface, bone_surface_chunked
from ctmorph.morphometry.connectivity import connectivity, connectivity_chunked
from ctmorph.morphometry.pattern import pattern_factor, pattern_factor_chunked
from ctmorph.morphometry.smi import smi, smi_chunked
from ctmorph.morphometry.zsource import ArraySource
from ctmorph.phantoms import random_trabecular, rod_lattice

SPACING = (0.02, 0.01, 0.015)  # anisotropic, so a swapped axis would show
CHUNKS = [1, 2, 3, 5, 7, None]  # 7 cuts the 8-slice mesh chunks of BS at awkward places


@pytest.fixture(autouse=True)
def _one_thread(threads):
    # Chunk size 1 launches the parallel Euler kernel once per slice; one thread avoids waits
    # for descheduled threads on a loaded machine (thread independence: test_connectivity.py).
    threads(1)


class RecordingSource(ArraySource):
    """An ArraySource that records the slices of every read."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.reads: list[tuple[int, int]] = []

    def read(self, z0: int, z1: int):
        assert 0 <= z0 <= z1 <= self.shape[0]
        self.reads.append((z0, z1))
        return super().read(z0, z1)


def _cases():
    """(bone, voi) pairs: ragged VOI, VOI touching both slab ends, two VOI pieces with empty
    blocks between them, a VOI over empty bone slices, no VOI."""
    bone = random_trabecular((26, 21, 23), bv_tv=0.3, scale=1.5, seed=4)
    rng = np.random.default_rng(4)
    shp = bone.shape
    ragged = np.zeros(shp, bool)
    ragged[3:22, 2:19, 4:20] = True
    ragged &= rng.random(shp) < 0.9
    ends = np.zeros(shp, bool)
    ends[:, 1:20, 0:23] = True  # touches z = 0, z = Z and the x border
    two = np.zeros(shp, bool)
    two[1:5, 3:15, 2:12] = True
    two[17:25, 6:18, 9:21] = True
    gap = bone.copy()
    gap[8:16] = False  # bone-free slices inside the VOI
    return [(bone, ragged), (bone, ends), (bone, two), (gap, ragged), (bone, None)]


CASES = _cases()
IDS = ["ragged", "ends", "two_pieces", "bone_gap", "no_voi"]


def _max_read(src: RecordingSource) -> int:
    return max(z1 - z0 for z0, z1 in src.reads)


# ---------------------------------------------------------------------------------------------
# connectivity


def _delta_chi_oracle(bone: np.ndarray, voi: np.ndarray, context: bool) -> float:
    """Δχ by brute force over the whole image: every vertex whose 8 voxels lie in the image,
    weighted by the VOI count n/8 (context) or counted when n = 8 (no context)."""
    lut = euler_lut8()
    zs, ys, xs = (n - 1 for n in bone.shape)
    code = np.zeros((zs, ys, xs), np.int64)
    n_in = np.zeros((zs, ys, xs), np.int64)
    for b in range(8):
        dz, dy, dx = b >> 2, (b >> 1) & 1, b & 1
        sl = (slice(dz, dz + zs), slice(dy, dy + ys), slice(dx, dx + xs))
        code |= bone[sl].astype(np.int64) << b
        n_in += voi[sl]
    if context:
        return float((lut[code] * n_in).sum()) / 64.0
    return float(lut[code][n_in == 8].sum()) / 8.0


@pytest.mark.parametrize(("bone", "voi"), CASES, ids=IDS)
def test_connectivity_chunked_equals_whole_and_oracles(bone, voi):
    v = np.ones(bone.shape, bool) if voi is None else voi
    for context in (True, False):
        whole = connectivity(bone, voi, spacing=SPACING, context=context)
        # independent checks of the whole-array result: skimage's χ, brute-force Δχ
        assert whole["Euler"] == euler_number(bone & v, connectivity=3)
        assert whole["Euler.corrected"] == _delta_chi_oracle(bone, v, context)
        for chunk in CHUNKS:
            src = RecordingSource(bone, voi)
            got = connectivity_chunked(src, spacing=SPACING, context=context,
                                       chunk_slices=chunk)
            assert got == whole  # integer counts: exactly equal
            if chunk is not None:
                assert _max_read(src) <= chunk + 3


def test_connectivity_chunked_rod_lattice_is_exact_with_context():
    # analytic: a rod lattice of pitch 8 has χ = −2 per cell; an inner VOI of 4³ cells with
    # context reads exactly −128, read one slice at a time
    big = rod_lattice(48, 8, 3)
    voi = np.zeros(big.shape, bool)
    voi[5:37, 6:38, 7:39] = True
    for chunk in (1, 4, 13):
        r = connectivity_chunked(ArraySource(big, voi), spacing=1.0, chunk_slices=chunk)
        assert r["Euler.corrected"] == -2 * 4**3


# ---------------------------------------------------------------------------------------------
# bone surface


@pytest.fixture
def mesh_chunk_8(monkeypatch):
    # BS meshes max(8, _CHUNK_VOXELS // plane) slices at a time: 8 here, so the whole-array
    # function meshes in several chunks too
    monkeypatch.setattr("ctmorph.morphometry.basic._CHUNK_VOXELS", 64)


@pytest.mark.parametrize(("bone", "voi"), CASES, ids=IDS)
def test_bone_surface_chunked_equals_whole_and_oracle(bone, voi, mesh_chunk_8):
    whole = bone_surface(bone, voi, spacing=SPACING)
    v = np.ones(bone.shape, bool) if voi is None else voi
    # independent: one marching-cubes call on the uncropped image; same triangles, summed in
    # another order (~1e4 terms, double precision: 1e-9 is far above the rounding)
    assert whole == pytest.approx(oracles.bone_surface(bone, v, SPACING), rel=1e-9)
    for chunk in CHUNKS:
        src = RecordingSource(bone, voi)
        got = bone_surface_chunked(src, spacing=SPACING, chunk_slices=chunk)
        if chunk is None:
            assert got == whole  # same mesh chunks, same order of summation
        else:
            # the same triangle areas grouped differently: rounding only
            assert got == pytest.approx(whole, rel=1e-12)
            assert _max_read(src) <= chunk + 2
    for chunk in (8, 16):  # multiples of the 8-slice mesh chunk: bitwise
        assert bone_surface_chunked(ArraySource(bone, voi), spacing=SPACING,
                                    chunk_slices=chunk) == whole


def test_bone_surface_chunked_axis_aligned_plates_are_exact():
    # analytic: marching cubes is exact on axis-aligned faces, and the image border is no
    # surface, so a slab spanning the image has area 2 × its cross-section (mm²); one plate is
    # cut by the z-blocks, one lies across them
    nz, ny, nx = 12, 14, 16
    dz, dy, dx = SPACING
    across = np.zeros((nz, ny, nx), bool)
    across[3:9] = True
    along = np.zeros((nz, ny, nx), bool)
    along[:, :, 4:9] = True
    for bone, truth in ((across, 2 * ny * dy * nx * dx), (along, 2 * nz * dz * ny * dy)):
        for chunk in (1, 2, 5):
            got = bone_surface_chunked(ArraySource(bone), spacing=SPACING, chunk_slices=chunk)
            assert got == pytest.approx(truth, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# pattern factor


@pytest.mark.parametrize(("bone", "voi"), CASES, ids=IDS)
def test_pattern_factor_chunked_equals_whole_and_oracle(bone, voi, mesh_chunk_8):
    v = np.ones(bone.shape, bool) if voi is None else voi
    for nbh in (6, 26):
        whole = pattern_factor(bone, voi, spacing=SPACING, neighbourhood=nbh)
        # independent: dilate the uncropped image, uncropped marching cubes
        dil = ndimage.binary_dilation(bone, ndimage.generate_binary_structure(3, nbh // 13 + 1))
        vv = np.prod(SPACING)
        ref = (oracles.bone_surface(bone, v, SPACING) - oracles.bone_surface(dil, v, SPACING)) \
            / ((np.count_nonzero(bone & v) - np.count_nonzero(dil & v)) * vv)
        assert whole == pytest.approx(ref, rel=1e-9)  # BS to rounding (see above), BV exact
        for chunk in CHUNKS:
            src = RecordingSource(bone, voi)
            got = pattern_factor_chunked(src, spacing=SPACING, neighbourhood=nbh,
                                         chunk_slices=chunk)
            if chunk is None:
                assert got == whole
            else:
                # BS sums regrouped; Tb.Pf = ΔBS/ΔBV divides a difference of two sums of
                # ~1e4 terms, which can lose a couple of digits: 1e-10
                assert got == pytest.approx(whole, rel=1e-10)
                assert _max_read(src) <= chunk + 4


# ---------------------------------------------------------------------------------------------
# SMI


@pytest.mark.parametrize(("bone", "voi"), CASES[:3], ids=IDS[:3])
def test_smi_chunked_equals_whole(bone, voi, monkeypatch):
    # slabs of 8 owned slices (max(8, _CHUNK_VOXELS // plane)) for the whole-array function too
    monkeypatch.setattr(importlib.import_module("ctmorph.morphometry.smi"), "_CHUNK_VOXELS", 1000)
    whole = smi(bone, voi, spacing=SPACING)
    src = RecordingSource(bone, voi)
    assert smi_chunked(src, spacing=SPACING) == whole  # the same slabs: bitwise
    assert _max_read(src) <= 8 + 2 * 7 + 1 < bone.shape[0]  # slab + halos (+1: cube rows)
    for chunk in (1, 2, 3, 5):
        src = RecordingSource(bone, voi)
        got = smi_chunked(src, spacing=SPACING, chunk_slices=chunk)
        # other slab cuts: float32 vertex z in slab-local coordinates rounds differently
        # (see test_smi.py::test_slab_by_slab_mesh_equals_the_whole_box): BS to 1e-6,
        # dBS/dr-based values to 1e-3 absolute
        assert got["BS.mesh"] == pytest.approx(whole["BS.mesh"], rel=1e-6)
        for key in ("SMI", "SMI+", "SMI-", "concave_fraction"):
            assert got[key] == pytest.approx(whole[key], abs=1e-3)
        halo = 4 + 3  # ceil(4 σ) + 3 with σ = 1
        assert _max_read(src) <= chunk + 2 * halo + 1


def test_smi_triangle_batches_do_not_change_the_result(monkeypatch):
    # the per-triangle steps run in batches of _FACE_BATCH triangles (bounded temporaries);
    # the arithmetic per triangle is the same, so the result is bitwise the same
    bone, voi = CASES[0]
    one_batch = smi_chunked(ArraySource(bone, voi), spacing=SPACING, chunk_slices=4)
    monkeypatch.setattr(importlib.import_module("ctmorph.morphometry.smi"), "_FACE_BATCH", 37)
    assert smi_chunked(ArraySource(bone, voi), spacing=SPACING, chunk_slices=4) == one_batch


def test_smi_chunked_rod_reads_three():
    # analytic: a long cylinder has SMI 3 (the VOI excludes its ends)
    zz, yy, xx = np.mgrid[:24, :20, :20]
    rod = (yy - 9.5) ** 2 + (xx - 9.5) ** 2 <= 6.0**2
    voi = np.zeros(rod.shape, bool)
    voi[4:20] = True
    r = smi_chunked(ArraySource(rod, voi), spacing=1.0, chunk_slices=3)
    assert r["SMI"] == pytest.approx(3.0, abs=0.15)  # digitised radius-6 rod (as test_smi.py)


# ---------------------------------------------------------------------------------------------
# bad input: the errors of the whole-array functions


def test_empty_voi_errors_like_whole():
    bone = CASES[0][0]
    src = ArraySource(bone, np.zeros(bone.shape, bool))
    with pytest.raises(SegmentationError, match="empty"):
        connectivity_chunked(src, spacing=1.0)
    with pytest.raises(SegmentationError, match="empty"):
        smi_chunked(src, spacing=1.0)
    with pytest.raises(SegmentationError, match="empty"):
        pattern_factor_chunked(src, spacing=1.0)
    assert bone_surface_chunked(src, spacing=1.0) == 0.0 == bone_surface(
        bone, np.zeros(bone.shape, bool), spacing=1.0)


def test_no_bone_errors_like_whole():
    empty = np.zeros((12, 10, 10), bool)
    with pytest.raises(SegmentationError, match="no bone in the VOI"):
        smi_chunked(ArraySource(empty), spacing=1.0, chunk_slices=2)
    with pytest.raises(SegmentationError, match="no bone in the VOI"):
        smi(empty, spacing=1.0)
    with pytest.raises(SegmentationError, match="undefined"):
        pattern_factor_chunked(ArraySource(empty), spacing=1.0, chunk_slices=2)
    full = np.ones((12, 10, 10), bool)  # all bone: dilation adds nothing
    with pytest.raises(SegmentationError, match="adds no voxel"):
        pattern_factor_chunked(ArraySource(full), spacing=1.0, chunk_slices=3)
    with pytest.raises(SegmentationError, match="no bone surface"):
        smi_chunked(ArraySource(full), spacing=1.0, chunk_slices=3)
    assert connectivity_chunked(ArraySource(empty), spacing=1.0, chunk_slices=1)["Euler"] == 0


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4"])
def test_bad_chunk_slices(bad):
    src = ArraySource(CASES[0][0])
    for fn in (connectivity_chunked, smi_chunked, pattern_factor_chunked, bone_surface_chunked):
        with pytest.raises(ConfigError, match="chunk_slices must be a positive integer"):
            fn(src, spacing=1.0, chunk_slices=bad)


def test_bad_parameters():
    src = ArraySource(CASES[0][0])
    for fn in (connectivity_chunked, smi_chunked, pattern_factor_chunked, bone_surface_chunked):
        with pytest.raises(ConfigError, match="spacing"):
            fn(src, spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ConfigError, match="smooth"):
        smi_chunked(src, spacing=1.0, smooth=-1.0)
    with pytest.raises(ConfigError, match="neighbourhood"):
        pattern_factor_chunked(src, spacing=1.0, neighbourhood=18)
