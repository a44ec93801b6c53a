"""Tb.N in bounded memory: the thinning kernel with growing work buffers (bit-identical to the
fixed-buffer algorithm), the mirror margin and mirror indexing measured block by block, and
``midaxis_spacing_chunked`` (the one implementation; ``midaxis_spacing`` is it read as one
block) bitwise invariant over chunk sizes, spacings,
VOIs touching the slab ends, empty blocks, marrow spaces and the error cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctmorph._kernels.skeleton import CON, OBJ, is_isthmus, is_simple, thin
from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry.tbn import (
    _mirror_margin,
    _symmetric_index,
    medial_skeleton,
    midaxis_spacing,
    midaxis_spacing_chunked,
)
from ctmorph.morphometry.zsource import ArraySource
from ctmorph.phantoms import ball, plates, random_trabecular, rod_lattice


@pytest.fixture(autouse=True)
def _one_thread(threads):
    # One numba thread: the chunked path launches a few parallel regions per tiny block, and
    # on a loaded machine each launch can wait for a descheduled thread. Thread-count
    # independence of the thickness kernels is tested in test_thickness.py.
    threads(1)


# ---------------------------------------------------------------------------------------------
# thinning kernel: growing buffers vs the fixed-buffer algorithm


def _thin_reference(img: np.ndarray) -> np.ndarray:
    """The thinning algorithm as the kernel implemented it with work buffers of one entry per
    object voxel, in plain Python (lists, no capacity): the same scan order, sub-iterations,
    sequential re-check, isthmus freezing and border-list compaction. Returns the final image."""
    img = img.copy()
    nz, ny, nx = img.shape
    flat = img.ravel()
    sz, sy = ny * nx, nx
    off27 = [(i // 9 - 1) * sz + ((i // 3) % 3 - 1) * sy + (i % 3 - 1) for i in range(27)]
    dirs = [sz, -sz, sy, -sy, 1, -1]
    inl = 4

    def load(p: int) -> int:
        return sum(1 << i for i in range(27) if flat[p + off27[i]] & OBJ)

    border = []
    for z in range(1, nz - 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                p = z * sz + y * sy + x
                if not flat[p] & OBJ or flat[p] & CON:
                    continue
                if all(flat[p + d] & OBJ for d in dirs):
                    continue
                if is_isthmus(load(p)):
                    flat[p] |= CON
                    continue
                flat[p] |= inl
                border.append(p)
    while True:
        deleted_pass = 0
        for step in dirs:
            cand = [p for p in border if not flat[p + step] & OBJ and is_simple(load(p))]
            deleted = []
            for p in cand:
                if is_simple(load(p)):
                    flat[p] &= 0xFF ^ OBJ
                    deleted.append(p)
            if not deleted:
                continue
            deleted_pass += len(deleted)
            dirty, seen = [], set()
            for p in deleted:
                for o in off27:
                    q = p + o
                    if flat[q] & OBJ and not flat[q] & CON and q not in seen:
                        seen.add(q)
                        dirty.append(q)
            for q in dirty:
                if is_isthmus(load(q)):
                    flat[q] |= CON
                elif not flat[q] & inl:
                    flat[q] |= inl
                    border.append(q)
            kept = []
            for p in border:
                if flat[p] & OBJ and not flat[p] & CON:
                    kept.append(p)
                else:
                    flat[p] &= 0xFF ^ inl
            border = kept
        if deleted_pass == 0:
            break
    flat &= OBJ | CON
    return img


def _padded(mask: np.ndarray, frozen_pad: bool = False) -> np.ndarray:
    img = np.pad(mask.astype(np.uint8) * np.uint8(OBJ), 1)
    if frozen_pad:
        img[[0, -1]] = img[:, [0, -1]] = img[:, :, [0, -1]] = OBJ | CON
    return img


def _run_thin(img: np.ndarray, size: int, dtype=np.int32, presize: bool = False) -> np.ndarray:
    """Thin a copy; by default without pre-sizing, so buffers shorter than needed go through
    the growth path."""
    out = img.copy()
    thin(out, np.empty(size, dtype), np.empty(size, dtype), np.empty(size, dtype), presize)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_growing_buffers_match_reference_on_noise(seed):
    # random noise: many tiny components, isthmuses and cavities; buffers of 0 and 1 entries
    # make every append go through the growth path
    rng = np.random.default_rng(seed)
    mask = rng.random((9, 10, 11)) < (0.45, 0.6, 0.75)[seed]
    for frozen in (False, True):
        img = _padded(mask, frozen)
        ref = _thin_reference(img)
        for size, dtype in ((0, np.int32), (1, np.int64), (int(mask.sum()), np.int32)):
            np.testing.assert_array_equal(_run_thin(img, size, dtype), ref)
        np.testing.assert_array_equal(_run_thin(img, 0, presize=True), ref)


@pytest.mark.parametrize("name", ["trabecular", "plates", "rods"])
def test_growing_buffers_match_reference_on_phantoms(name):
    mask = {"trabecular": random_trabecular(18, bv_tv=0.3, scale=1.5, seed=4),
            "plates": plates((16, 10, 10), 4, 4, offset=-1),
            "rods": rod_lattice(16, 8, 3)}[name]
    img = _padded(mask)
    ref = _thin_reference(img)
    assert (ref & OBJ).sum() < mask.sum()  # something was thinned
    np.testing.assert_array_equal(_run_thin(img, 1), ref)
    np.testing.assert_array_equal(_run_thin(img, 1, presize=True), ref)


def test_growing_buffers_match_full_buffers_on_larger_volume():
    # the fixed-size path (buffers never full) is the previous kernel line for line; the
    # growth path must give the same image on a volume too large for the Python reference
    mask = random_trabecular(40, bv_tv=0.25, scale=2.0, seed=8)
    img = _padded(mask)
    n = int(mask.sum())
    full = _run_thin(img, n)
    np.testing.assert_array_equal(_run_thin(img, 3), full)
    np.testing.assert_array_equal(_run_thin(img, 3, presize=True), full)


# ---------------------------------------------------------------------------------------------
# mirror indexing and margin


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_symmetric_index_matches_np_pad(n):
    for m in (0, 1, n, 2 * n + 1, 3 * n + 2):
        expected = np.pad(np.arange(n), m, mode="symmetric")
        np.testing.assert_array_equal(_symmetric_index(np.arange(-m, n + m), n), expected)


def _margin_cases():
    thick = ball((30, 26, 26), 11.5, centre=(14, 13, 12))  # largest distance ~12 voxels
    full = np.ones((6, 7, 8), bool)
    deep = np.ones((12, 9, 9), bool)
    deep[0, 4, 4] = False  # one background voxel: distances up to ~13, cut at max(shape)
    return {"trabecular": random_trabecular((30, 24, 26), bv_tv=0.3, scale=2.0, seed=1),
            "ball": thick, "all_bone": full, "deep": deep,
            "empty": np.zeros((5, 6, 7), bool)}


def _margin_oracle(bone: np.ndarray) -> int:
    """The mirror margin from scipy's exact EDT of the whole mask: ceil(largest inscribed
    ball radius, as the float32 root of the integer squared distance) + 1, at most the longest
    side; 1 without bone, the longest side without background."""
    if not bone.any():
        return 1
    if bone.all():
        return max(bone.shape)
    d2 = int(round(float(ndimage.distance_transform_edt(bone).max()) ** 2))
    return min(int(np.ceil(float(np.sqrt(np.float32(d2))))) + 1, max(bone.shape))


@pytest.mark.parametrize("name", list(_margin_cases()))
def test_mirror_margin_is_block_size_invariant_and_matches_the_edt_oracle(name):
    bone = _margin_cases()[name]
    for c in (1, 2, 5, 40):
        got = _mirror_margin(ArraySource(bone), c)
        assert got == (_margin_oracle(bone), int(bone.sum())), c


# ---------------------------------------------------------------------------------------------
# midaxis_spacing_chunked == midaxis_spacing, to the last bit


def _case(name: str):
    """(bone, voi, marrow_space) of a small slab."""
    bone = random_trabecular((26, 28, 30), bv_tv=0.25, scale=2.0, seed=7)
    voi = np.zeros(bone.shape, bool)
    if name == "middle":
        voi[6:19, 5:22, 7:26] = True
        return bone, voi, None
    if name == "touching_ends":  # VOI from the first to the last slice, irregular in-plane
        yy, xx = np.mgrid[:28, :30]
        voi[:] = ((yy - 14) ** 2 + (xx - 15) ** 2 < 11**2)[None]
        return bone, voi, None
    if name == "empty_blocks":  # slices without bone at both ends and a bone-free gap
        bone[:4] = bone[11:14] = bone[-3:] = False
        voi[2:24, 3:25, 3:27] = True
        return bone, voi, None
    if name == "marrow_space":  # marrow confined to a cylinder; VOI inside it
        yy, xx = np.mgrid[:28, :30]
        ms = np.broadcast_to(((yy - 14) ** 2 + (xx - 15) ** 2 < 12**2)[None], bone.shape).copy()
        voi[3:26] = ms[3:26] & ((yy - 14) ** 2 + (xx - 15) ** 2 < 9**2)[None]
        return bone, voi, ms
    if name == "one_slice_voi":
        voi[12, 4:24, 5:25] = True
        return bone, voi, None
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["middle", "touching_ends", "empty_blocks", "marrow_space",
                                  "one_slice_voi"])
def test_block_size_invariant_bitwise(name):
    # Bitwise: the chunked local thickness is voxel for voxel the whole map (exact integer
    # squared distances with commensurate voxel sizes), and the VOI values are summed in the
    # same C order with the same sequential float64 additions as masked_stats.
    bone, voi, ms = _case(name)
    src = ArraySource(bone, voi, ms)
    for sp in ((0.02, 0.01, 0.01), 0.01):
        whole = midaxis_spacing(bone, voi, spacing=sp, marrow_space=ms)
        for c in ((1, 3, 5, None) if sp == 0.01 else (2, 7)):
            assert midaxis_spacing_chunked(src, spacing=sp, chunk_slices=c) == whole, (sp, c)


def test_block_size_invariant_incommensurate_spacing():
    # voxel-size ratios that are no small fractions take the floating-point thickness path,
    # whose chunked map agrees to float32 rounding (module notes of chunked.py), in practice
    # bitwise; a 1e-12 relative tolerance would still catch any real difference (>1e-7).
    bone, voi, _ = _case("middle")
    sp = (0.0131, 0.01, 0.0113)
    whole = midaxis_spacing(bone, voi, spacing=sp)
    got = midaxis_spacing_chunked(ArraySource(bone, voi), spacing=sp, chunk_slices=4)
    assert got == pytest.approx(whole, rel=1e-12)


def test_chunked_whole_volume_voi_and_default_source():
    # no VOI and no marrow space in the source: the whole slab, marrow everywhere
    bone = random_trabecular((20, 22, 24), bv_tv=0.3, scale=2.0, seed=2)
    whole = midaxis_spacing(bone, spacing=0.01)
    assert midaxis_spacing_chunked(ArraySource(bone), spacing=0.01, chunk_slices=3) == whole


def test_chunked_plates_analytic():
    # plates of period P = 9 voxels along z (odd P reads P - 0.5 voxel), cut by every border;
    # independent truth, not only agreement with the whole-array version. 3-voxel plates at
    # z = 9k..9k+2 have their mid-surfaces at z = 9k + 1; the VOI runs over whole periods from
    # one mid-surface (z = 10) to another (z = 37, excluded), away from the mirrored ends.
    # In-plane the VOI keeps 3 voxels from the sides: the skeleton stops one voxel short of the
    # mirrored image's edge, so marrow balls there reach ~0.1 voxel into the slab.
    bone = plates((45, 16, 16), 3, 6, offset=0)
    voi = np.zeros(bone.shape, bool)
    voi[10:37, 3:13, 3:13] = True
    got = midaxis_spacing_chunked(ArraySource(bone, voi), spacing=0.01, chunk_slices=2)
    # the local-thickness map is float32 (0.075 has a relative rounding error of ~4e-8)
    assert got == pytest.approx(8.5 * 0.01, rel=1e-6)
    assert got == midaxis_spacing(bone, voi, spacing=0.01)


def test_medial_skeleton_unchanged_by_small_start_buffers():
    # medial_skeleton starts with small buffers that grow: topology and shape results as before
    bone = plates((30, 12, 12), 5, 5, offset=-3)
    skel = medial_skeleton(bone)
    np.testing.assert_array_equal(np.flatnonzero(skel.any(axis=(1, 2))), [5, 15, 25])


# ---------------------------------------------------------------------------------------------
# errors: the whole-array version's, same class and meaning


def test_errors_match_whole_version():
    bone, voi, _ = _case("middle")
    cases = [
        (bone, np.zeros_like(voi), None, "VOI is empty"),
        (np.zeros_like(bone), voi, None, "no bone voxels"),
    ]
    # a VOI holding only skeleton voxels: one voxel of the mid-surface of a plate
    plate = np.zeros((11, 8, 8), bool)
    plate[3:8] = True
    one = np.zeros_like(plate)
    one[5, 4, 4] = True
    cases.append((plate, one, None, "only skeleton voxels"))
    for b, v, ms, msg in cases:
        with pytest.raises(SegmentationError, match=msg):
            midaxis_spacing(b, v, spacing=0.01, marrow_space=ms)
        with pytest.raises(SegmentationError, match=msg):
            midaxis_spacing_chunked(ArraySource(b, v, ms), spacing=0.01, chunk_slices=2)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_chunk_slices(bad):
    bone, voi, _ = _case("middle")
    with pytest.raises(ConfigError, match="chunk_slices must be a positive integer"):
        midaxis_spacing_chunked(ArraySource(bone, voi), spacing=0.01, chunk_slices=bad)


def test_bad_spacing():
    bone, voi, _ = _case("middle")
    with pytest.raises(ConfigError, match="positive and finite"):
        midaxis_spacing_chunked(ArraySource(bone, voi), spacing=(0.01, -0.01, 0.01))
