"""The thinning kernel (parallel isthmus tests, exact shortcuts of the selection and re-check,
branch-free gathers) against the previous sequential kernel (``thin_sequential``), bit for
bit, with 1 and 2 numba threads; the shortcuts' lemmas checked on neighbourhood masks."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange
from thin_sequential import _load_bits, t6bar_fixpoint, t26_fixpoint, thin_sequential

from ctmorph._kernels.skeleton import CON, OBJ, _load, is_simple, t6bar, t26, thin
from ctmorph.phantoms import ball, cube_with_cavity, plates, random_trabecular, rod_lattice, torus


def _padded(mask: np.ndarray, frozen_pad: bool = False) -> np.ndarray:
    img = np.pad(mask.astype(np.uint8) * np.uint8(OBJ), 1)
    if frozen_pad:
        img[[0, -1]] = img[:, [0, -1]] = img[:, :, [0, -1]] = OBJ | CON
    return img


def _both(img: np.ndarray, size: int = 1 << 10, presize: bool = True):
    """(kernel image, kernel passes, reference image, reference passes)."""
    out, ref = img.copy(), img.copy()
    buf = [np.empty(size, np.int32) for _ in range(3)]
    passes = thin(out, *buf, presize)
    return out, passes, ref, thin_sequential(ref)


def _phantom(name: str) -> np.ndarray:
    return {
        "blob-a": random_trabecular(36, bv_tv=0.3, scale=1.5, seed=4),
        "blob-b": random_trabecular((30, 44, 38), bv_tv=0.22, scale=2.5, seed=11),
        "blob-dense": random_trabecular(32, bv_tv=0.55, scale=2.0, seed=2),
        "plates": plates((24, 16, 18), 5, 3, offset=-1),
        "thick-plates": plates((30, 20, 20), 9, 5),
        "rods": rod_lattice(24, 8, 3),
        "rods-x": rod_lattice(28, 9, 4, axes=(2,)),
        "ball": ball(21, 7),
        "torus": torus(32, 10, 4),
        "cavity": cube_with_cavity(24, 16, 6),
    }[name]


NAMES = ["blob-a", "blob-b", "blob-dense", "plates", "thick-plates", "rods", "rods-x", "ball",
         "torus", "cavity"]


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_thin_equals_sequential_kernel_on_phantoms(name, nthreads, threads):
    threads(nthreads)
    mask = _phantom(name)
    for frozen in (False, True):
        out, passes, ref, ref_passes = _both(_padded(mask, frozen))
        np.testing.assert_array_equal(out, ref)
        assert passes == ref_passes
        assert (out[1:-1, 1:-1, 1:-1] & OBJ).sum() < mask.sum()  # something was thinned


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_thin_equals_sequential_kernel_on_noise(seed, nthreads, threads):
    # noise: isolated points (the one non-simple kind of border point), tiny cavities and
    # tunnels, many isthmuses; buffers of 0 entries without presizing take the growth path
    threads(nthreads)
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(6, 24, size=3))
    mask = rng.random(shape) < (0.15, 0.35, 0.5, 0.6, 0.75, 0.9)[seed]
    img = _padded(mask, frozen_pad=bool(seed % 2))
    out, passes, ref, ref_passes = _both(img)
    np.testing.assert_array_equal(out, ref)
    assert passes == ref_passes
    out0, _, _, _ = _both(img, size=0, presize=False)
    np.testing.assert_array_equal(out0, ref)


def test_thin_does_not_depend_on_thread_count(threads):
    mask = random_trabecular(48, bv_tv=0.28, scale=2.5, seed=21)
    img = _padded(mask)
    ref = img.copy()
    ref_passes = thin_sequential(ref)
    for n in (1, 2, 1):
        threads(n)
        out = img.copy()
        buf = [np.empty(0, np.int64) for _ in range(3)]
        assert thin(out, *buf) == ref_passes
        np.testing.assert_array_equal(out, ref)


def test_load_gathers_the_obj_bits():
    # every bit pattern of the flags, not only OBJ: the other bits must not leak into the mask
    rng = np.random.default_rng(5)
    img = rng.integers(0, 32, size=(7, 8, 9), dtype=np.uint8)
    nz, ny, nx = img.shape
    flat = img.ravel()
    off27 = np.array([(i // 9 - 1) * ny * nx + ((i // 3) % 3 - 1) * nx + (i % 3 - 1)
                      for i in range(27)], np.int64)
    for z in range(1, nz - 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                p = (z * ny + y) * nx + x
                assert _load(flat, p, off27) == _load_bits(flat, p, off27)


_N26 = ((1 << 27) - 1) & ~(1 << 13)
_FACE_BITS = (4, 10, 12, 14, 16, 22)


@njit(parallel=True)
def _exhaustive_failures():
    """Over every neighbourhood mask (the centre bit plays no part): ``t26``/``t6bar`` against
    their fixpoint versions, and the selection lemma for background on the +z face (bit 22):
    a point that is no isthmus is then simple iff it has an object 26-neighbour."""
    n = 1 << 26
    bad = np.zeros(n, np.uint8)
    for m in prange(n):
        nb = (m & ((1 << 13) - 1)) | ((m >> 13) << 14) | (1 << 13)  # insert the centre bit
        a, b = t26(nb), t6bar(nb)
        wrong = a != t26_fixpoint(nb) or b != t6bar_fixpoint(nb)
        if not nb & (1 << 22) and a <= 1 and b <= 1:
            wrong = wrong or (a == 1 and b == 1) != (nb & _N26 != 0)
        bad[m] = wrong
    return bad.sum()


def test_topological_numbers_and_selection_lemma_exhaustive():
    assert _exhaustive_failures() == 0


@pytest.mark.parametrize("face", _FACE_BITS)
def test_selection_shortcut_lemma_sampled_for_every_face(face):
    rng = np.random.default_rng(face)
    masks = rng.integers(0, 1 << 27, size=200_000)
    # sparse and dense neighbourhoods too, where the isthmus and T26 = 0 cases lie
    masks[:50_000] &= rng.integers(0, 1 << 27, size=50_000)
    masks[50_000:100_000] |= rng.integers(0, 1 << 27, size=50_000)
    for nb in masks.tolist():
        nb = (nb | (1 << 13)) & ~(1 << face)
        if t26(nb) >= 2 or t6bar(nb) >= 2:
            continue
        assert t6bar(nb) == 1
        assert is_simple(nb) == (nb & _N26 != 0)
