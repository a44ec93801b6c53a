"""Shared pytest fixtures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Real data lives next to the repository (../shared/data), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real-data folder ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `real_log`: one test per real SkyScan log in ../shared/data/skyscan_logs, or one skipped
    # test when the folder is absent.
    if "real_log" in metafunc.fixturenames:
        folder = SHARED_DATA / "skyscan_logs"
        logs = sorted(folder.glob("*.log"))
        params = [pytest.param(p, id=p.name, marks=pytest.mark.realdata) for p in logs] or [
            pytest.param(None, id="absent", marks=pytest.mark.skip(reason=f"{folder} is absent"))
        ]
        metafunc.parametrize("real_log", params)


#: The real human trabecular core: 495 TIFF slices of 257², 19.5 µm, no log.
HUMAN_CORE = SHARED_DATA / "human_trabecular_core"


@dataclass(frozen=True)
class HumanCore:
    """The human core read once per session: smoothed grey, drilled cylinder, Otsu threshold."""

    smoothed: np.ndarray  # float, Gaussian sigma 1 voxel
    cylinder: np.ndarray  # bool: non-zero grey (the core), holes filled slice by slice
    threshold: float  # Otsu on the smoothed grey inside the cylinder
    spacing: tuple[float, float, float]  # mm


@pytest.fixture(scope="session")
def human_core_scan() -> HumanCore:
    """:class:`HumanCore`; skips the test when the real data is absent."""
    if not HUMAN_CORE.is_dir() or not any(HUMAN_CORE.glob("*.tif")):
        pytest.skip(f"real data {HUMAN_CORE} is absent")
    from scipy import ndimage

    from ctmorph.io import read_scan
    from ctmorph.segment.threshold import otsu_threshold, smooth

    scan = read_scan(HUMAN_CORE, voxel_size_um=19.5)
    grey = scan.read_volume()
    cyl = np.stack([ndimage.binary_fill_holes(s > 0) for s in grey])
    sm = smooth(grey, 1.0)
    hist = np.bincount(np.rint(sm[cyl]).astype(np.int64), minlength=256)
    return HumanCore(sm, cyl, float(otsu_threshold(hist)), scan.spacing)


@pytest.fixture
def threads():
    """Set the numba thread count inside a test (``threads(n)``) and restore it afterwards."""
    import numba

    before = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(before)
