"""The worker pool: a worker that dies costs only the task it was running."""

from __future__ import annotations

import os
import signal

import pytest

from ctmorph.workers import WorkerDied, WorkerPool, describe_exit


def square_or_die(x: int) -> int:
    """A task; -9 kills its own worker (as the OOM killer would), -6 aborts it (a crash)."""
    if x == -9:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == -6:
        os.abort()
    if x == -1:
        raise ValueError("bad input -1")
    if x == -2:
        return lambda: None  # a result that cannot be pickled
    return x * x


def remember_slot(slot: int, path: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{slot} {os.getpid()}\n")


def test_a_dead_worker_fails_only_its_task_and_is_replaced(tmp_path):
    deaths: list[int] = []
    log = tmp_path / "starts.txt"
    tasks = [(k, (k,)) for k in (1, 2, -9, 3, 4, -6, 5, 6)]
    with WorkerPool(2, initializer=remember_slot, initargs=(str(log),),
                    on_death=deaths.append) as pool:
        out = dict(pool.map_unordered(square_or_die, tasks))
        again = dict(pool.map_unordered(square_or_die, [(7, (7,))]))  # the pool still works
    assert {k: v for k, v in out.items() if k > 0} == {k: k * k for k in (1, 2, 3, 4, 5, 6)}
    assert isinstance(out[-9], WorkerDied) and out[-9].exitcode == -signal.SIGKILL
    assert str(out[-9]) == "the worker process was killed (SIGKILL)"
    assert isinstance(out[-6], WorkerDied) and "crashed (SIGABRT)" in str(out[-6])
    assert again == {7: 49}
    # two deaths, each replaced by a new process in the same slot
    assert len(deaths) == 2 and set(deaths) <= {0, 1}
    starts = [line.split() for line in log.read_text().splitlines()]
    assert len(starts) == 4 and len({pid for _, pid in starts}) == 4


def test_task_exceptions_come_back_as_outcomes():
    with WorkerPool(1) as pool:
        out = dict(pool.map_unordered(square_or_die, [(-1, (-1,)), (-2, (-2,)), (3, (3,))]))
    assert isinstance(out[-1], ValueError) and str(out[-1]) == "bad input -1"
    assert "cannot send the task's outcome back" in str(out[-2])
    assert out[3] == 9


def test_exit_descriptions():
    assert describe_exit(-signal.SIGSEGV) == "crashed (SIGSEGV)"
    assert describe_exit(-signal.SIGTERM) == "was killed (SIGTERM)"
    assert describe_exit(3) == "exited with code 3"
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerPool(0)


def test_a_worker_killed_mid_scan_fails_that_scan_only(tmp_path, caplog):
    """Issue 14 item 2: ``--jobs 2``, the worker measuring one scan is killed by pid (as the
    OOM killer would); before, every pending scan failed (BrokenProcessPool)."""
    import logging

    import numpy as np
    import pandas as pd

    from ctmorph.batch import run_analysis
    from ctmorph.config import AnalysisConfig
    from ctmorph.io.writer import write_nrecon_folder
    from ctmorph.phantoms import grey_from_mask, random_trabecular

    root = tmp_path / "scans"
    big = random_trabecular((100, 100, 100), bv_tv=0.2, scale=2.0, seed=9)  # measured first
    write_nrecon_folder(root / "big", grey_from_mask(big, seed=9), voxel_size_um=10.0)
    for i in range(5):
        m = random_trabecular((40, 48, 48), bv_tv=0.2 + 0.02 * i, scale=2.0, seed=i)
        write_nrecon_folder(root / f"s{i}", grey_from_mask(m, seed=i), voxel_size_um=10.0)

    class KillBig(logging.Handler):
        killed: list[int] = []

        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if msg.startswith("big: measured in process") and not self.killed:
                pid = int(msg.rsplit(" ", 1)[1])
                self.killed.append(pid)
                os.kill(pid, signal.SIGKILL)

    caplog.set_level(logging.DEBUG, logger="ctmorph")
    handler = KillBig()
    logging.getLogger("ctmorph.batch").addHandler(handler)
    try:
        s = run_analysis([root], tmp_path / "out", AnalysisConfig(roi="full", threshold=128.0),
                         group="g", jobs=2, write_qc=False)
    finally:
        logging.getLogger("ctmorph.batch").removeHandler(handler)
    assert len(handler.killed) == 1
    df = pd.DataFrame(s.rows).set_index("scan")
    assert df.loc["big", "status"] == "failed"
    assert df.loc["big", "error"] == (
        "big: the worker process measuring it was killed (SIGKILL) (out of memory?); the other "
        "scans were not affected. Re-run with --jobs 1 to give each scan all the memory")
    assert (df.drop(index="big").status == "ok").all()
    assert np.isfinite(df.drop(index="big")["BV/TV"]).all()
    assert not (tmp_path / "out" / "big" / "morphometry.json").exists()
