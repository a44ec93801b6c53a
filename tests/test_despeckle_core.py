"""despeckle_core: a slab's despeckle is returned only when it equals the whole scan's.

Oracles: :func:`despeckle` of the whole volume (the truth on the core) and :func:`despeckle`
of the slab alone (what ``check=False`` must return). ``_old_refuses`` is the previous,
coarser proof (kept here only to count the cases the sharper one now accepts).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctmorph.errors import ConfigError
from ctmorph.segment.threshold import despeckle, despeckle_core


def _old_refuses(slab, core, *, min_bone_voxels, min_marrow_voxels, valid, cut_start, cut_end):
    """The former check: refuse when a small island at a cut end meets the core, or a marrow
    component meeting the core is small at a cut end or contains such an island."""
    c0, c1 = core
    if not (cut_start or cut_end):
        return False
    faces = ([0] if cut_start else []) + ([-1] if cut_end else [])
    out = slab.copy()
    uncertain = np.zeros(slab.shape, dtype=bool)
    if min_bone_voxels > 1 and out.any():
        lab, n = ndimage.label(out, structure=np.ones((3, 3, 3), bool))
        small = np.bincount(lab.ravel(), minlength=n + 1) < min_bone_voxels
        small[0] = False
        unc = np.zeros(n + 1, dtype=bool)
        unc[np.unique(lab[faces])] = True
        unc &= small
        if unc[lab[c0:c1]].any():
            return True
        uncertain = unc[lab]
        out[small[lab]] = False
    if min_marrow_voxels <= 1:
        return False
    lab, n = ndimage.label(~out if valid is None else ~out & valid)
    small = np.bincount(lab.ravel(), minlength=n + 1) < min_marrow_voxels
    doubt = np.zeros(n + 1, dtype=bool)
    doubt[np.unique(lab[faces])] = True
    doubt &= small
    doubt[lab[uncertain]] = True
    doubt[0] = False
    return bool(doubt[lab[c0:c1]].any())


def _sweep(bone, valid, mb, mm, cores, halos):
    """Every (core, halo): the answer is None or the whole scan's; ``check=False`` is the slab's
    own despeckle; the full halo ``mb + mm`` is never refused; whatever the old proof accepted
    is accepted. Returns (accepted, refused, accepted now but refused by the old proof)."""
    nz = bone.shape[0]
    kw = dict(min_bone_voxels=mb, min_marrow_voxels=mm)
    ref = despeckle(bone, valid=valid, **kw)
    acc = ref_n = gained = 0
    for c0, c1 in cores:
        for h in halos:
            wa, wb = max(0, c0 - h), min(nz, c1 + h)
            v = None if valid is None else valid[wa:wb]
            core = (c0 - wa, c1 - wa)
            cuts = dict(cut_start=wa > 0, cut_end=wb < nz)
            got = despeckle_core(bone[wa:wb], core, valid=v, **cuts, **kw)
            old = _old_refuses(bone[wa:wb], core, valid=v, **cuts, **kw)
            if got is None:
                ref_n += 1
                assert old, (c0, c1, h)  # the new proof accepts all the old one did
                assert h < mb + mm, (c0, c1, h)  # the full halo always proves exactness
            else:
                acc += 1
                gained += old
                assert np.array_equal(got, ref[c0:c1]), (c0, c1, h)
            own = despeckle(bone[wa:wb], valid=v, **kw)[core[0] : core[1]]
            unchecked = despeckle_core(bone[wa:wb], core, valid=v, check=False, **cuts, **kw)
            assert np.array_equal(unchecked, own), (c0, c1, h)
            if h >= mb + mm:
                assert np.array_equal(unchecked, ref[c0:c1]), (c0, c1, h)
    return acc, ref_n, gained


def _speckled(seed, shape=(36, 14, 14), *, with_valid=False, mask_bone=True):
    """Blobs and pores of all sizes (thresholded smoothed noise) plus 1-voxel specks and
    pinholes; optionally a round field of view and scattered no-data zeros."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
    bone = field > rng.uniform(0.0, 0.6) * field.std()
    bone ^= rng.random(shape) < 0.004
    valid = None
    if with_valid:
        yy, xx = np.mgrid[: shape[1], : shape[2]]
        c = (shape[1] - 1) / 2
        disk = (yy - c) ** 2 + (xx - c) ** 2 <= (0.48 * shape[1]) ** 2
        valid = np.broadcast_to(disk, shape) & (rng.random(shape) > 0.01)
        if mask_bone:
            bone &= valid
    return bone, valid


_CORES = [(0, 5), (3, 11), (12, 13), (14, 24), (20, 36), (31, 36), (0, 36)]
_HALOS = (0, 1, 2, 4, 8)


@pytest.mark.parametrize(("mb", "mm"), [(6, 5), (4, 9), (9, 2), (1, 6), (7, 1)])
def test_random_slabs(mb, mm):
    totals = np.zeros(3, dtype=int)
    for seed in range(4):
        for with_valid, mask_bone in [(False, True), (True, True), (True, False)]:
            bone, valid = _speckled(seed + 100 * mb, with_valid=with_valid,
                                    mask_bone=mask_bone)
            totals += _sweep(bone, valid, mb, mm, _CORES, sorted(set(_HALOS) | {mb + mm}))
    acc, refused, gained = totals
    # measured (of 420-504 answers each): accepted 364-481, refused 23-56, of the accepted
    # 98-154 refused by the old proof for mb, mm > 1 (20 for mb = 1: a small marrow component
    # at a cut end that also touches the y/x border is kept for sure). Refusals happen, so
    # the check is needed; the old proof had no marrow doubts when mm = 1.
    assert acc > 0.5 * (acc + refused) and refused > 0
    if mm > 1:
        assert gained > (50 if mb > 1 else 5)
    else:
        assert gained == 0


def _marrow_box(nz=40, n=13):
    """A marrow space inside solid bone walls on the y/x border, open at both z ends."""
    bone = np.ones((nz, n, n), dtype=bool)
    bone[:, 1:-1, 1:-1] = False
    return bone


def test_speck_at_the_cut_face_no_longer_refuses():
    # a 1-voxel speck on the cut face, floating in the big marrow space that meets the core:
    # the old proof refused every core of that marrow space; whichever way the scan decides
    # the speck, the big marrow space stays big
    bone = _marrow_box()
    bone[18, 6, 6] = True  # the speck; removed by the whole scan too
    bone[5:8, 3:5, 3:5] = True  # a kept trabecula (12 voxels) inside the core
    kw = dict(min_bone_voxels=5, min_marrow_voxels=6)
    core, cuts = (2, 10), dict(cut_start=False, cut_end=True)
    assert _old_refuses(bone[:19], core, valid=None, **cuts, **kw)
    got = despeckle_core(bone[:19], core, **cuts, **kw)
    assert got is not None and np.array_equal(got, despeckle(bone, **kw)[2:10])
    # the same with the speck growing on past the cut into a thread the scan keeps
    bone[18:30, 6, 6] = True
    ref = despeckle(bone, **kw)
    assert ref[18:30, 6, 6].all()
    got = despeckle_core(bone[:19], core, **cuts, **kw)
    assert got is not None and np.array_equal(got, ref[2:10])


@pytest.mark.parametrize("rod", [3, 30], ids=["island-removed", "island-kept"])
def test_pore_sealed_only_by_an_island_in_the_halo(rod):
    # a hollow bone box (closed 3x3x5 shell of 42 voxels around a 3-voxel cavity) floating in
    # the marrow space, with a rod from its top on through the cut face: in the slab an
    # uncertain island of 43 voxels, in the scan 42 + rod (removed below 50, kept above).
    # Its cavity is sealed only by it.
    bone = _marrow_box()
    bone[20:25, 5:8, 5:8] = True
    bone[21:24, 6, 6] = False
    bone[25 : 25 + rod, 6, 6] = True
    kw = dict(min_bone_voxels=50, min_marrow_voxels=5)
    ref = despeckle(bone, **kw)
    assert ref[22, 6, 6] == (rod == 30)  # the cavity is filled iff the box stays
    slab, cuts = bone[:26], dict(cut_start=False, cut_end=True)
    # a core far from the box: the old proof refused (the removed box joins its cavity to
    # the big marrow space of the core); the big marrow space is big either way: exact
    assert _old_refuses(slab, (2, 12), valid=None, **cuts, **kw)
    got = despeckle_core(slab, (2, 12), **cuts, **kw)
    assert got is not None and np.array_equal(got, ref[2:12])
    # a core meeting the box: the island may be kept or removed, so refused
    assert despeckle_core(slab, (10, 22), **cuts, **kw) is None
    assert despeckle_core(slab, (10, 22), check=False, **cuts, **kw)[11, 6, 6] == 0
    _sweep(bone, None, 50, 5, [(0, 10), (10, 20), (18, 23), (24, 40)], (0, 1, 3, 6, 55))


def test_small_pore_at_the_cut_face_holding_a_speck_is_refused():
    # a closed 6x5x5 pore (150 voxels) in solid bone holding a floating 1-voxel speck; the
    # scan removes the speck and fills the pore (< 200). A slab cut through the pore sees it
    # touching the cut face: it might continue, so cores meeting it are refused.
    bone = np.ones((30, 9, 9), dtype=bool)
    bone[10:16, 2:7, 2:7] = False
    bone[13, 4, 4] = True
    kw = dict(min_bone_voxels=2, min_marrow_voxels=200)
    ref = despeckle(bone, **kw)
    assert ref.all()
    cuts = dict(cut_start=False, cut_end=True)
    assert despeckle_core(bone[:14], (5, 12), **cuts, **kw) is None
    assert not despeckle_core(bone[:14], (5, 12), check=False, **cuts, **kw).all()
    got = despeckle_core(bone[:14], (2, 8), **cuts, **kw)  # the core ends below the pore
    assert got is not None and np.array_equal(got, ref[2:8])
    got = despeckle_core(bone[:17], (5, 12), **cuts, **kw)  # the whole pore in the slab
    assert got is not None and np.array_equal(got, ref[5:12])


@pytest.mark.parametrize("plug", [3, 10], ids=["plug-removed", "plug-kept"])
def test_pore_sealed_by_an_island_and_no_data(plug):
    # no-data voxels are walls that are not bone, so an island may touch them: a tube of
    # marrow walled by no-data voxels, closed by bone below, plugged by a bone island that
    # runs on through the cut face. Below the plug 8 marrow voxels, in the core: filled by
    # the scan iff the plug stays (min_marrow_voxels 10). The slab cannot tell: refused.
    bone = np.ones((40, 11, 11), dtype=bool)
    valid = np.ones(bone.shape, dtype=bool)
    valid[8:28, 4:7, 4:7] = False
    bone[8:28, 4:7, 4:7] = False
    valid[8:28, 5, 5] = True  # the tube: marrow, plug from slice 16
    bone[16 : 16 + plug, 5, 5] = True
    kw = dict(min_bone_voxels=5, min_marrow_voxels=10)
    ref = despeckle(bone, valid=valid, **kw)
    assert ref[8:16, 5, 5].all() == (plug == 10)
    assert not (ref & ~valid).any()
    cuts = dict(cut_start=False, cut_end=True)
    args = (bone[:19], (4, 14))
    assert despeckle_core(*args, valid=valid[:19], **cuts, **kw) is None
    assert not despeckle_core(*args, valid=valid[:19], check=False, **cuts, **kw)[6, 5, 5]
    _sweep(bone, valid, 5, 10, [(0, 6), (4, 14), (14, 20), (26, 40)], (0, 1, 2, 5, 9, 15))


@pytest.mark.parametrize("cut", ["start", "end"])
def test_thin_thread_crossing_the_cut(cut):
    # a 1-voxel bone thread of 12 slices crossing the cut: kept by the scan (>= 10), an
    # island of 4-7 voxels in the slab. Cores it meets are refused; the slab alone is wrong.
    bone = _marrow_box(nz=40)
    bone[14:26, 6, 6] = True
    if cut == "start":
        bone = bone[::-1].copy()
    kw = dict(min_bone_voxels=10, min_marrow_voxels=4)
    ref = despeckle(bone, **kw)
    assert ref[14:26, 6, 6].all()
    if cut == "end":
        slab, core, cuts, sl = bone[:20], (10, 16), dict(cut_start=False, cut_end=True), (10, 16)
    else:
        slab, core, cuts, sl = bone[20:], (4, 10), dict(cut_start=True, cut_end=False), (24, 30)
    assert despeckle_core(slab, core, **cuts, **kw) is None
    assert not np.array_equal(despeckle_core(slab, core, check=False, **cuts, **kw),
                              ref[sl[0] : sl[1]])
    _sweep(bone, None, 10, 4, [(0, 8), (8, 14), (12, 20), (19, 27), (30, 40)],
           (0, 1, 3, 6, 9, 14))


@pytest.mark.parametrize("size", [7, 8, 9])
def test_island_of_exactly_min_bone_voxels(size):
    # an L-shaped island of `size` voxels, min_bone_voxels = 8: kept from 8 on. Cut through
    # it (one voxel beyond the cut), it is uncertain unless the slab already holds 8.
    bone = _marrow_box(nz=30)
    bone[10 : 10 + size - 2, 4, 4] = True
    bone[10, 4, 5:7] = True
    kw = dict(min_bone_voxels=8, min_marrow_voxels=3)
    ref = despeckle(bone, **kw)
    assert ref[10, 4, 5] == (size >= 8)
    top = 10 + size - 2  # first slice above the island
    cuts = dict(cut_start=False, cut_end=True)
    got = despeckle_core(bone[: top + 1], (5, top), **cuts, **kw)
    assert got is not None and np.array_equal(got, ref[5:top])
    got = despeckle_core(bone[: top - 1], (5, top - 2), **cuts, **kw)
    if size - 1 < 8:
        assert got is None  # the island touches the cut face and meets the core
    else:
        assert got is not None and np.array_equal(got, ref[5 : top - 2])
    _sweep(bone, None, 8, 3, [(0, 9), (9, 11), (11, 15), (15, 30)], (0, 1, 2, 4, 7, 11))


def test_round_field_of_view_with_no_data_zeros():
    for seed, mask_bone in [(7, True), (8, False)]:
        bone, valid = _speckled(seed, with_valid=True, mask_bone=mask_bone)
        acc, refused, _ = _sweep(bone, valid, 5, 6, _CORES, (0, 2, 4, 11))
        assert acc > 0 and refused > 0


def test_bad_arguments():
    bone = np.zeros((10, 5, 5), dtype=bool)
    kw = dict(min_bone_voxels=3, min_marrow_voxels=3, cut_start=True, cut_end=False)
    with pytest.raises(ConfigError, match="core slices 4..12 outside the slab's 10"):
        despeckle_core(bone, (4, 12), **kw)
    with pytest.raises(ConfigError, match="core slices 5..4"):
        despeckle_core(bone, (5, 4), **kw)
    with pytest.raises(ConfigError, match=r"valid has shape \(10, 5, 4\)"):
        despeckle_core(bone, (0, 5), valid=np.ones((10, 5, 4), bool), **kw)
    with pytest.raises(ConfigError, match=r"must be a \(Z, Y, X\) volume"):
        despeckle_core(bone[0], (0, 1), **kw)
    assert despeckle_core(bone, (3, 3), **kw).shape == (0, 5, 5)
