"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture
def threads():
    """Set the numba thread count inside a test (``threads(n)``) and restore it afterwards."""
    import numba

    before = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(before)
