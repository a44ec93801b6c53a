"""Block-size invariance of the pipeline: a VOI slab measured in bounded z-blocks equals the
same slab read as one block.

``measure_scan`` measures every VOI through one path, :func:`ctmorph.pipeline.measure.measure_voi`
over a slab source: a small slab is held as arrays and read as one block; a slab of more than
``CHUNKED_MEASURE_VOXELS`` voxels is packed into a ``SlabStore`` (in memory up to
``STORE_RAM_BYTES``, else a temporary file) and read in blocks of about 8 M voxels. The tests
force the store on a small femur by monkeypatching the two limits and compare it with the
one-block run, which the rest of the suite checks against analytic truth.

Tolerances: counts (TV, BV, Euler, Conn, MIL intercepts) and the local-thickness maps are
identical; means merged chunk by chunk (Tb.Th, Tb.Sp, Tb.N) and mesh sums (BS, SMI) differ only
by the order of float64 summation, ~1e-15 relative: 1e-9 leaves six orders of margin and still
catches any voxel counted twice or missed (one voxel of ~1e4 changes a mean by ~1e-4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctmorph import pipeline
from ctmorph.config import AnalysisConfig
from ctmorph.errors import SegmentationError
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.morphometry.zsource import PHASES, ArraySource, Block, read_phase
from ctmorph.phantoms.femur import make_femur

THR = 132.0
FEMUR = dict(group="OVX", seed=4, shape_yx=(96, 96), voxel_um=20.0, length_mm=2.8,
             distal_first=False, round_roi=True)
CFG = dict(threshold=THR, roi_offset_mm=0.5, roi_height_mm=1.0, save_maps=True)
SKIP = {"seconds"}


@pytest.fixture(scope="module")
def femur_folder(tmp_path_factory):
    f = make_femur(**FEMUR)
    folder = tmp_path_factory.mktemp("chunked") / "F04_rec"
    write_nrecon_folder(folder, f.grey, voxel_size_um=f.voxel_um, round_roi=True)
    return folder


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    """A calibration line, so the rows carry BMD and TMD (density from the grey in the store)."""
    from ctmorph.calibration import Calibration, save_calibration

    path = tmp_path_factory.mktemp("cal") / "calibration.json"
    return save_calibration(Calibration(slope=12.0, intercept=-0.2, r_squared=1.0), path)


@pytest.fixture(scope="module")
def results(femur_folder, calibration_file):
    cfg = AnalysisConfig(**CFG, calibration=str(calibration_file))
    mp = pytest.MonkeyPatch()
    stores = []
    measure_voi = pipeline.measure.measure_voi

    def spy(src, *args, **kwargs):
        stores.append(getattr(src, "in_memory", "arrays"))
        return measure_voi(src, *args, **kwargs)

    try:
        mp.setattr(pipeline.scan, "measure_voi", spy)
        in_memory = pipeline.measure_scan(femur_folder, cfg)
        mp.setattr(pipeline.store, "CHUNKED_MEASURE_VOXELS", 0)
        packed_ram = pipeline.measure_scan(femur_folder, cfg)
        mp.setattr(pipeline.store, "STORE_RAM_BYTES", 0)
        packed_file = pipeline.measure_scan(femur_folder, cfg)
    finally:
        mp.undo()
    assert stores == ["arrays", True, False]  # the small slab as arrays, then the two stores
    return in_memory, packed_ram, packed_file


def _same(a, b, key):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a):
            assert math.isnan(b), key
        else:
            assert b == pytest.approx(a, rel=1e-9, abs=1e-12), key
    else:
        assert a == b, key


@pytest.mark.parametrize("which", [1, 2], ids=["store-in-memory", "store-in-file"])
def test_rows_equal(results, which):
    ref, got = results[0], results[which]
    assert set(ref.row) == set(got.row)
    assert ref.row["BV/TV"] > 1.0  # a real trabecular VOI
    assert ref.row["TMD"] > ref.row["BMD"] > 0  # density measured (round ROI: grey 0 = no data)
    for key in ref.row:
        if key not in SKIP:
            _same(ref.row[key], got.row[key], key)


@pytest.mark.parametrize("which", [1, 2], ids=["store-in-memory", "store-in-file"])
def test_histograms_maps_and_qc_equal(results, which):
    ref, got = results[0], results[which]
    assert ref.details["histograms"] == got.details["histograms"]
    assert sum(ref.details["histograms"]["Tb.Th"]["counts"]) > 0
    for name in ("thickness", "separation"):
        assert np.array_equal(ref.maps[name], got.maps[name]), name
        assert ref.maps[name].max() > 0
    assert np.array_equal(ref.qc.longitudinal_voi, got.qc.longitudinal_voi)
    assert ref.qc.longitudinal_voi.any()
    for a, b in zip(ref.qc.axials, got.qc.axials, strict=True):
        assert a.label == b.label and np.array_equal(a.voi, b.voi)


# --------------------------------------------------------------------------------------------
# the store itself


def _slab(seed=0, shape=(13, 9, 11)):
    rng = np.random.default_rng(seed)
    return rng.random(shape) < 0.4, rng.random(shape) < 0.7


@pytest.mark.parametrize("in_memory", [True, False], ids=["ram", "file"])
def test_store_reads_back_what_was_written(in_memory):
    bone, region = _slab()
    store = pipeline.store.SlabStore(bone.shape, (3, 10), in_memory=in_memory)
    for z0, z1 in ((0, 4), (4, 5), (5, 13)):  # uneven writes
        store.write(z0, bone[z0:z1].copy(), region[z0:z1].copy())
    voi = np.zeros_like(region)
    voi[3:10] = region[3:10]
    want = ArraySource(bone, voi, region)
    for z0, z1 in ((0, 13), (2, 4), (9, 11), (12, 13), (5, 5)):
        got, ref = store.read(z0, z1), want.read(z0, z1)
        assert isinstance(got, Block)
        for g, r in zip(got, ref, strict=True):
            assert g.dtype == bool and np.array_equal(g, r)
        for kind in PHASES:  # the store's own one-mask reads equal the generic ones
            assert np.array_equal(read_phase(store, z0, z1, kind),
                                  read_phase(want, z0, z1, kind)), kind
    assert store.voi_box() == want.voi_box()
    assert np.array_equal(store.region_count, region.sum(axis=(1, 2)))
    store.close()


@pytest.mark.parametrize("with_voi", [True, False])
@pytest.mark.parametrize("with_space", [True, False])
def test_array_source_phases_equal_its_blocks(with_voi, with_space):
    bone, region = _slab(seed=3)
    src = ArraySource(bone, region if with_voi else None, ~region if with_space else None)
    for z0, z1 in ((0, 13), (2, 7), (5, 5)):
        blk = src.read(z0, z1)  # the generic definitions, from whole blocks
        want = {"bone": blk.bone, "voi": blk.voi, "marrow": blk.marrow_space & ~blk.bone,
                "space": blk.marrow_space | blk.bone}
        for kind in PHASES:
            got = src.read_phase(z0, z1, kind)
            assert got.dtype == bool and np.array_equal(got, want[kind]), kind
            assert not np.shares_memory(got, bone), kind  # a new array, never a view


@pytest.mark.parametrize("in_memory", [True, False], ids=["ram", "file"])
def test_store_keeps_grey_when_asked(in_memory):
    bone, region = _slab(seed=5)
    grey = np.random.default_rng(5).integers(0, 65535, bone.shape).astype(np.uint16)
    store = pipeline.store.SlabStore(bone.shape, (3, 10), in_memory=in_memory, grey_dtype=np.uint16)
    for z0, z1 in ((0, 6), (6, 13)):
        store.write(z0, bone[z0:z1].copy(), region[z0:z1].copy(), grey[z0:z1])
    for z0, z1 in ((0, 13), (4, 9), (12, 13)):
        got = store.read_grey(z0, z1)
        assert got.dtype == np.uint16 and np.array_equal(got, grey[z0:z1])
    store.close()
    plain = pipeline.store.SlabStore(bone.shape, (3, 10), in_memory=True)
    with pytest.raises(ValueError, match="keeps no grey"):
        plain.read_grey(0, 1)


def test_store_refuses_writes_out_of_order_and_empty_voi():
    bone, region = _slab()
    store = pipeline.store.SlabStore(bone.shape, (3, 10), in_memory=True)
    with pytest.raises(AssertionError, match="out of order"):
        store.write(2, bone[2:4], region[2:4])
    store.write(0, bone, np.zeros_like(region))
    with pytest.raises(SegmentationError, match="VOI is empty"):
        store.voi_box()


def test_thickness_histogram_in_chunks_equals_one_go_and_a_slow_count():
    rng = np.random.default_rng(3)
    bin_mm = 0.009
    # local thickness takes values on a lattice of voxel multiples: include exact bin edges
    values = np.concatenate([rng.random(500) * 0.2, np.arange(0, 20) * bin_mm]).astype(np.float32)
    one = pipeline.thickness_histogram(values, bin_mm)
    h = pipeline.ThicknessHistogram(bin_mm)
    for part in np.array_split(values, 7):
        h.add(part)
    h.add(values[:0])
    assert h.result() == one
    n = len(one["counts"])
    slow = [0] * n
    for v in values.astype(np.float64):
        slow[min(n - 1, int(math.floor(v / bin_mm)))] += 1
    assert one["counts"] == slow and sum(slow) == values.size
    assert one["bin_edges_mm"][-1] >= float(values.max())
    assert one["bin_edges_mm"][1] == pytest.approx(bin_mm)


# --------------------------------------------------------------------------------------------
# trabecular_morphometry_chunked: block-size invariance, and the one-block statistics


def _sponge(seed=2, shape=(30, 34, 36)):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    bone = ndimage.gaussian_filter(rng.normal(size=shape), 2.0) > 0.03
    space = np.zeros(shape, bool)
    space[:, 3:31, 4:33] = True
    voi = np.zeros(shape, bool)
    voi[7:24] = space[7:24]
    voi[:, :, :9] = False
    return bone, voi, space


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_trabecular_block_size_invariant(chunk):
    from ctmorph.morphometry import trabecular_morphometry, trabecular_morphometry_chunked

    bone, voi, space = _sponge()
    sp = (0.02, 0.01, 0.01)
    want = trabecular_morphometry(bone, voi, spacing=sp, marrow_space=space)
    got = trabecular_morphometry_chunked(ArraySource(bone, voi, space), spacing=sp,
                                         chunk_slices=chunk)
    assert list(got) == list(want)
    for key in want:
        _same(want[key], got[key], key)


@pytest.mark.parametrize("case, message", [
    ("empty", "VOI is empty"), ("no bone", "no bone voxels"), ("all bone", "entirely bone"),
    ("no marrow space", "no marrow voxels"),
])
def test_trabecular_chunked_refuses_what_the_whole_version_refuses(case, message):
    from ctmorph.morphometry import trabecular_morphometry, trabecular_morphometry_chunked

    bone, voi, space = _sponge()
    if case == "empty":
        voi[:] = False
    elif case == "no bone":
        bone[:] = False
    elif case == "all bone":
        bone[:] = True
    else:
        space &= bone
    for run in (lambda: trabecular_morphometry(bone, voi, spacing=0.01, marrow_space=space),
                lambda: trabecular_morphometry_chunked(ArraySource(bone, voi, space),
                                                       spacing=0.01)):
        with pytest.raises(SegmentationError, match=message):
            run()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_chunk_slices_must_be_a_positive_integer(bad):
    from ctmorph.errors import ConfigError
    from ctmorph.morphometry import trabecular_morphometry_chunked

    bone, voi, space = _sponge()
    with pytest.raises(ConfigError, match="chunk_slices must be a positive integer"):
        trabecular_morphometry_chunked(ArraySource(bone, voi, space), spacing=0.01,
                                       chunk_slices=bad)


def test_unknown_phase_is_a_clear_error():
    bone, region = _slab()
    store = pipeline.store.SlabStore(bone.shape, (3, 10), in_memory=True)
    store.write(0, bone, region)
    for src in (store, ArraySource(bone, None, region)):
        with pytest.raises(ValueError, match="unknown phase 'cortex'"):
            read_phase(src, 0, 2, "cortex")


@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_one_block_gives_the_whole_map_statistics_bit_for_bit(seed):
    """``trabecular_morphometry`` is the block-wise implementation read as one block: Tb.Th
    and Tb.Sp are then exactly the sequential float64 statistics (``masked_stats``) of the
    whole-volume local-thickness maps, an independent path (no halos, no chunks)."""
    from ctmorph._kernels.thickness import masked_stats
    from ctmorph.morphometry import local_thickness, trabecular_morphometry

    bone, voi, space = _sponge(seed)
    sp = (0.02, 0.01, 0.01)
    got = trabecular_morphometry(bone, voi, spacing=sp, marrow_space=space)
    for key, phase in (("Tb.Th", bone), ("Tb.Sp", space & ~bone)):
        tau = local_thickness(phase, spacing=sp)
        _, mean, sd, vmax = masked_stats(tau, np.ascontiguousarray(voi & phase))
        assert (got[key], got[f"{key}.SD"], got[f"{key}.Max"]) == (mean, sd, vmax), key


@pytest.mark.parametrize("seed", [7, 15, 48])
def test_moments_of_one_chunk_are_that_chunks_statistics(seed):
    """Merging a single chunk returns its statistics unchanged. Seeds 15 and 48 draw values
    for which the merge formula itself, ``mean·n/n`` and ``sqrt(sd²·n/n)``, rounds off the
    last bit of the SD (found by search: about 1 draw in 60); the old merge failed them."""
    from ctmorph._kernels.thickness import masked_stats
    from ctmorph.morphometry.chunked import Moments

    rng = np.random.default_rng(seed)
    for n in (1, 7, 1000, 4321):
        values = rng.random(n).astype(np.float32) * 0.3
        sel = rng.random(n) < 0.6
        sel[0] = True
        m = Moments()
        m.add(values, sel)
        m.add(values[:0], sel[:0])  # an empty chunk changes nothing
        _, mean, sd, vmax = masked_stats(values, sel)
        assert m.result() == (mean, sd, vmax)
