"""The structure measures that run on one core run in a second thread beside the parallel
kernels (``pipeline.measure.measure_voi`` on arrays in memory): the same numbers, the same
column order and the same first error as the measures run one after the other."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ctmorph import pipeline
from ctmorph._kernels.threads import concurrent_kernels_ok
from ctmorph.config import AnalysisConfig
from ctmorph.errors import SegmentationError
from ctmorph.morphometry import (
    connectivity_chunked,
    trabecular_morphometry_chunked,
)
from ctmorph.morphometry.zsource import ArraySource
from ctmorph.phantoms import random_trabecular

SP = (0.009, 0.009, 0.009)


def _slab(seed=5):
    bone = random_trabecular((48, 40, 44), bv_tv=0.3, scale=2.0, seed=seed)
    voi = np.zeros(bone.shape, bool)
    voi[6:42, 5:35, 5:39] = True
    return ArraySource(bone, voi)


def _measure(src):
    return pipeline.measure.measure_voi(src, SP, AnalysisConfig(), (slice(None), slice(None)),
                                        src.shape[1:], lambda stage: None)


def test_same_values_and_order_as_one_after_the_other():
    src = _slab()
    metrics, _, _ = _measure(src)
    want = trabecular_morphometry_chunked(src, spacing=SP, convention="corrected")
    want.update(pipeline.measure.structure_metrics_chunked(src, spacing=SP))
    assert list(metrics) == list(want)
    assert {k: repr(v) for k, v in metrics.items()} == {k: repr(v) for k, v in want.items()}


def test_single_core_measures_run_in_a_second_thread(monkeypatch):
    """Connectivity runs beside (not in) the thread that measures thickness (the threading
    layer of this numba build allows it: ``omp`` or ``tbb``)."""
    threads = []

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return connectivity_chunked(*args, **kwargs)

    monkeypatch.setattr(pipeline.measure, "connectivity_chunked", spy)
    _measure(_slab())
    assert len(threads) == 1
    if concurrent_kernels_ok():
        assert threads[0].startswith("ctmorph-beside")
    else:
        assert threads[0] == threading.current_thread().name


def test_first_error_is_the_sequential_one(monkeypatch):
    """No bone: the trabecular measures fail first, as they did before the second thread (and
    a failing structure measure beside them is not the error reported)."""
    bone = np.zeros((20, 20, 20), bool)
    src = ArraySource(bone, np.ones(bone.shape, bool))

    def boom(*args, **kwargs):
        raise RuntimeError("must not be the error reported")

    monkeypatch.setattr(pipeline.measure, "smi_chunked", boom)
    with pytest.raises(SegmentationError):
        _measure(src)


def test_error_of_a_measure_beside_is_raised(monkeypatch):
    def boom(*args, **kwargs):
        raise SegmentationError("pattern factor failed")

    monkeypatch.setattr(pipeline.measure, "pattern_factor_chunked", boom)
    with pytest.raises(SegmentationError, match="pattern factor failed"):
        _measure(_slab())
