"""Euler characteristic, edge-corrected connectivity and Conn.D (morphometry.connectivity)."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
from skimage.measure import euler_number

from ctmorph._kernels.euler import config_histograms, euler_lut8
from ctmorph.errors import ConfigError, SegmentationError
from ctmorph.morphometry.connectivity import connectivity
from ctmorph.phantoms.shapes import ball, cube_with_cavity, rod_lattice, torus

# ---------------------------------------------------------------------------------------------
# oracles


def naive_histograms(bone: np.ndarray, voi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pure-Python loop over every vertex of the once-padded volume (kernel contract)."""
    b = np.pad(bone.astype(np.uint8), 1)
    v = np.pad(voi.astype(np.uint8), 1)
    masked = np.zeros(256, np.int64)
    weighted = np.zeros((9, 256), np.int64)
    zp, yp, xp = b.shape
    for i, j, k in itertools.product(range(zp - 1), range(yp - 1), range(xp - 1)):
        code_b = code_m = n = 0
        for bit, (dz, dy, dx) in enumerate(itertools.product((0, 1), repeat=3)):
            bb, vv = b[i + dz, j + dy, k + dx], v[i + dz, j + dy, k + dx]
            code_b |= int(bb) << bit
            code_m |= int(bb and vv) << bit
            n += int(vv)
        masked[code_m] += 1
        inner = 1 <= i <= zp - 3 and 1 <= j <= yp - 3 and 1 <= k <= xp - 3
        if inner and n > 0:
            weighted[n, code_b] += 1
    return masked, weighted


def odgaard_gundersen_box(bone: np.ndarray) -> float:
    """Box formula Δχ = χ(V) − χ₂/2 + χ₁/4 − χ₀/8 (Odgaard & Gundersen 1993), from
    skimage's χ of the whole box, of its six face images and of its twelve edge lines."""
    chi3 = euler_number(bone, connectivity=3)
    chi2 = 0
    for axis in range(3):
        for end in (0, -1):
            chi2 += euler_number(np.take(bone, end, axis=axis), connectivity=2)
    chi1 = 0
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for e0, e1 in itertools.product((0, -1), repeat=2):
            idx = [slice(None)] * 3
            idx[others[0]], idx[others[1]] = e0, e1
            line = bone[tuple(idx)].astype(np.int8)
            chi1 += int(np.count_nonzero(np.diff(np.concatenate(([0], line))) == 1))
    chi0 = sum(int(bone[c]) for c in itertools.product((0, -1), repeat=3))
    return chi3 - chi2 / 2 + chi1 / 4 - chi0 / 8


# ---------------------------------------------------------------------------------------------
# known topology


@pytest.mark.parametrize(
    ("volume", "chi"),
    [
        (ball(21, 7), 1),
        (np.pad(np.ones((5, 6, 7), bool), 2), 1),
        (cube_with_cavity(24, 16, 6), 2),
        (torus((16, 48, 48), 14, 5), 0),
    ],
    ids=["ball", "box", "cube with cavity", "torus"],
)
def test_euler_of_known_shapes(volume, chi):
    assert connectivity(volume, spacing=0.01)["Euler"] == chi


def test_single_cube_and_two_components():
    vol = np.zeros((12, 12, 12), bool)
    vol[2:5, 2:5, 2:5] = True
    assert connectivity(vol, spacing=1.0)["Euler"] == 1
    vol[7:10, 7:10, 7:10] = True  # a second, separate cube
    assert connectivity(vol, spacing=1.0)["Euler"] == 2
    vol[5, 5, 5] = vol[6, 6, 6] = True  # corner-to-corner bridge: 26-connected, one body
    assert connectivity(vol, spacing=1.0)["Euler"] == 1


def test_euler_matches_skimage_on_random_volumes():
    rng = np.random.default_rng(7)
    for shape, p in [((9, 13, 11), 0.3), ((16, 7, 12), 0.5), ((20, 20, 20), 0.65)]:
        vol = rng.random(shape) < p
        assert connectivity(vol, spacing=1.0)["Euler"] == euler_number(vol, connectivity=3)
        voi = rng.random(shape) < 0.8
        got = connectivity(vol, voi, spacing=1.0)["Euler"]
        assert got == euler_number(vol & voi, connectivity=3)


def test_lut_matches_skimage_per_configuration():
    lut = euler_lut8()
    for code in range(256):
        block = np.array([(code >> b) & 1 for b in range(8)], bool).reshape(2, 2, 2)
        # summed over the 27 vertices of the padded block: 8 * chi
        masked, _ = naive_histograms(block, np.ones_like(block))
        assert int(masked @ lut) == 8 * euler_number(block, connectivity=3)


def test_kernel_matches_pure_python_histograms():
    rng = np.random.default_rng(3)
    bone = rng.random((7, 9, 8)) < 0.45
    voi = rng.random((7, 9, 8)) < 0.7
    masked, weighted = config_histograms(
        np.pad(bone.view(np.uint8), 1), np.pad(voi.view(np.uint8), 1), 3
    )
    want_m, want_w = naive_histograms(bone, voi)
    np.testing.assert_array_equal(masked, want_m)
    np.testing.assert_array_equal(weighted, want_w)


# ---------------------------------------------------------------------------------------------
# edge correction


def test_box_correction_equals_odgaard_gundersen_formula():
    rng = np.random.default_rng(11)
    for shape in [(10, 12, 9), (15, 15, 15)]:
        vol = rng.random(shape) < 0.5
        got = connectivity(vol, spacing=1.0)["Euler.corrected"]
        assert got == pytest.approx(odgaard_gundersen_box(vol), abs=1e-12)
        # context=False gives the same when the VOI is the whole box
        assert connectivity(vol, spacing=1.0, context=False)["Euler.corrected"] == got


def test_closed_objects_inside_the_volume_are_not_corrected():
    vol = cube_with_cavity(24, 16, 6)
    r = connectivity(vol, spacing=1.0)
    assert r["Euler.corrected"] == r["Euler"] == 2
    assert r["Conn"] == -1


@pytest.mark.parametrize("offset", [(0, 0, 0), (3, 5, 1), (7, 2, 9), (5, 8, 4), (9, 9, 9)])
def test_rod_lattice_conn_d_is_two_per_cell(offset):
    pitch, n = 10, 60
    big = rod_lattice(n + pitch, pitch, 3.5)
    oz, oy, ox = offset
    vol = big[oz:oz + n, oy:oy + n, ox:ox + n]
    spacing = (0.009, 0.009, 0.009)
    truth = 2.0 / (pitch * 0.009) ** 3
    assert connectivity(vol, spacing=spacing)["Conn.D"] == pytest.approx(truth, rel=0.15)


def test_context_makes_an_inner_voi_exact_for_a_periodic_lattice():
    pitch = 16
    big = rod_lattice(100, pitch, 5)
    for o in (2, 5, 11):
        voi = np.zeros(big.shape, bool)
        voi[o:o + 64, o + 1:o + 65, o + 2:o + 66] = True
        r = connectivity(big, voi, spacing=1.0)
        assert r["Euler.corrected"] == -2 * (64 // pitch) ** 3  # 4³ cells, χ = −2 each
        # the VOI-only estimator sees a cut box: same as the cropped volume
        r_cut = connectivity(big, voi, spacing=1.0, context=False)
        crop = connectivity(big[o:o + 64, o + 1:o + 65, o + 2:o + 66], spacing=1.0)
        assert r_cut["Euler.corrected"] == crop["Euler.corrected"]


def test_non_box_voi_uses_only_voi_weights():
    rng = np.random.default_rng(5)
    bone = rng.random((14, 14, 14)) < 0.5
    inside = np.zeros_like(bone)
    inside[3:11, 2:12, 4:10] = True
    outside = ~inside
    a = connectivity(bone, inside, spacing=1.0)["Euler.corrected"]
    b = connectivity(bone, outside, spacing=1.0)["Euler.corrected"]
    whole = connectivity(bone, spacing=1.0)["Euler.corrected"]
    assert a + b == pytest.approx(whole, abs=1e-12)  # additivity of the shares


# ---------------------------------------------------------------------------------------------
# units, determinism, validation


def test_doubling_spacing_divides_conn_d_by_eight_exactly():
    vol = rod_lattice(40, 10, 3.5)
    a = connectivity(vol, spacing=(0.01, 0.012, 0.009))
    b = connectivity(vol, spacing=(0.02, 0.024, 0.018))
    assert a["Conn.D"] == 8 * b["Conn.D"]
    assert a["Conn"] == b["Conn"]


def test_thread_count_does_not_change_the_result():
    vol = rod_lattice(48, 10, 3.5) ^ (np.random.default_rng(0).random((48, 48, 48)) < 0.05)
    n_max = numba.config.NUMBA_NUM_THREADS
    if n_max < 2:
        pytest.skip("needs 2 numba threads")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = connectivity(vol, spacing=1.0)
        numba.set_num_threads(2)
        two = connectivity(vol, spacing=1.0)
    finally:
        numba.set_num_threads(before)
    assert one == two


def test_validation_messages():
    vol = np.zeros((4, 4, 4), bool)
    with pytest.raises(ConfigError, match="3-D"):
        connectivity(vol[0], spacing=1.0)
    with pytest.raises(ConfigError, match="voi has shape"):
        connectivity(vol, np.ones((4, 4, 5), bool), spacing=1.0)
    with pytest.raises(SegmentationError, match="empty"):
        connectivity(vol, np.zeros_like(vol), spacing=1.0)
    with pytest.raises(ConfigError, match="boolean"):
        connectivity(vol.astype(float) + 0.5, spacing=1.0)  # a grey image passed by mistake
    with pytest.raises(ConfigError, match="spacing"):
        connectivity(vol, spacing=(1.0, -1.0, 1.0))
    assert connectivity(vol.astype(np.uint8), spacing=1.0)["Euler"] == 0
