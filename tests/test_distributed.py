"""Scans on a Dask distributed cluster give the same rows as local calls (ctmorph.distributed).

Everything runs on a throw-away cluster of worker processes listening on 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import ipaddress
import json
import math
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctmorph.errors import ConfigError

HAVE_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
needs_distributed = pytest.mark.skipif(
    not HAVE_DISTRIBUTED,
    reason="optional 'distributed' not installed (pip install 'ctmorph[distributed]')",
)

# Columns that legitimately differ between two runs of the same scan.
VOLATILE = {"seconds"}


@pytest.fixture(scope="module")
def cluster():
    from ctmorph.distributed import local_cluster

    with local_cluster(n_workers=2, threads_per_worker=1) as (cl, client):
        client.wait_for_workers(2, timeout=30)
        yield cl, client


@pytest.fixture(scope="module")
def scan_dirs(tmp_path_factory) -> list[Path]:
    from ctmorph.io.writer import write_nrecon_folder
    from ctmorph.phantoms import grey_from_mask, random_trabecular

    root = tmp_path_factory.mktemp("scans")
    dirs = []
    for i in range(2):
        mask = random_trabecular((40, 48, 48), bv_tv=0.25, scale=2.0, seed=i)
        dirs.append(write_nrecon_folder(
            root / f"rat{i}", grey_from_mask(mask, seed=i), voxel_size_um=10.0
        ))
    return dirs


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host(address: str) -> str:
    return address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# --- connecting -------------------------------------------------------------------------------


def test_missing_distributed_names_the_extra(monkeypatch):
    from ctmorph import distributed as cd

    monkeypatch.setitem(sys.modules, "distributed", None)  # import now fails
    with pytest.raises(ConfigError, match=r"pip install 'ctmorph\[distributed\]'"):
        cd.connect("tcp://127.0.0.1:8786")


@needs_distributed
def test_closed_port_is_a_fast_config_error_naming_the_address():
    from ctmorph.distributed import connect

    address = f"tcp://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=f"cannot reach the Dask scheduler at {address}"):
        connect(address, timeout=1.0)
    assert time.perf_counter() - t0 < 10.0


@needs_distributed
def test_no_address_says_how_to_give_one(monkeypatch):
    from ctmorph.distributed import connect

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match="--scheduler tcp://HOST:PORT or set DASK_SCHEDULER"):
        connect()


@needs_distributed
@pytest.mark.parametrize("bad", ["no-port-here", "tcp://", "tcp://host:port"])
def test_malformed_address_is_a_config_error(bad):
    from ctmorph.distributed import connect

    with pytest.raises(ConfigError, match="not a usable Dask scheduler address"):
        connect(bad, timeout=1.0)


@needs_distributed
def test_address_from_environment_and_scheduler_file(cluster, monkeypatch, tmp_path):
    from ctmorph.distributed import connect

    cl, _ = cluster
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cl.scheduler_address)
    with connect(timeout=5.0) as client:
        assert client.scheduler.address == cl.scheduler_address
    sched_file = tmp_path / "scheduler.json"
    sched_file.write_text(json.dumps({"type": "Scheduler", "address": cl.scheduler_address}))
    with connect(sched_file, timeout=5.0) as client:
        assert client.scheduler.address == cl.scheduler_address
    with pytest.raises(ConfigError, match="scheduler file not found"):
        connect(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not a Dask scheduler file \(not JSON\)"):
        connect(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ConfigError, match="no 'address' in it"):
        connect(tmp_path / "empty.json")


def _make_tls_files(folder: Path) -> dict[str, str]:
    """A throw-away CA and one certificate for 127.0.0.1, signed by it (openssl CLI)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=ctmorph test CA", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "node.key", "-out", "node.csr")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "node.pem")
    return {name: str(folder / name) for name in ("ca.pem", "node.pem", "node.key")}


@needs_distributed
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_scheduler_needs_and_accepts_certificates(tmp_path, monkeypatch):
    from distributed import Security

    from ctmorph.distributed import connect, local_cluster, map_unordered

    files = _make_tls_files(tmp_path)
    roles = {f"tls_{role}_{kind}": files[name] for role in ("scheduler", "worker", "client")
             for kind, name in (("cert", "node.pem"), ("key", "node.key"))}
    security = Security(tls_ca_file=files["ca.pem"], require_encryption=True, **roles)
    with local_cluster(n_workers=1, protocol="tls://", security=security) as (cl, client):
        address = cl.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        assert dict(map_unordered(client, abs, [-2])) == {-2: 2}
        with pytest.raises(ConfigError, match=f"{address}: a tls:// scheduler needs this client"):
            connect(address, timeout=5.0)
        with connect(address, security=security, timeout=5.0) as tls_client:
            assert dict(map_unordered(tls_client, abs, [-3])) == {-3: 3}


# --- the local cluster ------------------------------------------------------------------------


@needs_distributed
def test_local_cluster_listens_on_loopback_only(cluster):
    import psutil

    cl, client = cluster
    addresses = [cl.scheduler_address]
    for nanny in cl.workers.values():
        addresses += [nanny.address, nanny.worker_address]
    addresses += list(client.scheduler_info()["workers"])
    assert len(addresses) == 1 + 2 * 2 + 2
    assert {_host(a) for a in addresses} == {"127.0.0.1"}

    # Every listening socket of this process (the scheduler and its HTTP endpoint live here)
    # and of the worker and nanny processes, not only the advertised addresses.
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        conns = getattr(proc, "net_connections", proc.connections)(kind="inet")
        listening += [(proc.pid, c.laddr) for c in conns if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 1 + 2 * 2
    public = [(pid, la) for pid, la in listening if not ipaddress.ip_address(la.ip).is_loopback]
    assert not public, f"listening beyond loopback: {public}"


@needs_distributed
def test_numba_threads_per_task_divides_the_machine(cluster):
    import numba

    from ctmorph.distributed import numba_threads_per_task

    _, client = cluster
    # two single-threaded workers on this machine share its numba threads
    assert numba_threads_per_task(client) == max(1, numba.config.NUMBA_NUM_THREADS // 2)


@needs_distributed
def test_check_versions(cluster, monkeypatch):
    from ctmorph.distributed import check_versions

    _, client = cluster
    check_versions(client)  # same interpreter, same environment

    real = importlib.metadata.version
    monkeypatch.setattr(  # only this process sees the fake version; workers read their own
        importlib.metadata, "version", lambda name: "9.9.9" if name == "ctmorph" else real(name)
    )
    with pytest.raises(ConfigError, match=r"tcp://127\.0\.0\.1:\d+: ctmorph .* \(here 9\.9\.9\)"):
        check_versions(client, ["ctmorph", "numpy"])


# --- map_unordered ----------------------------------------------------------------------------


@needs_distributed
def test_a_failing_item_yields_its_exception_and_the_others_their_results(cluster):
    from ctmorph.distributed import map_unordered

    _, client = cluster
    out = dict(map_unordered(client, math.sqrt, [4.0, -1.0, 9.0, 16.0]))
    assert set(out) == {4.0, -1.0, 9.0, 16.0}
    assert isinstance(out[-1.0], ValueError)
    assert "math domain error" in str(out[-1.0])
    assert (out[4.0], out[9.0], out[16.0]) == (2.0, 3.0, 4.0)


@needs_distributed
def test_same_item_twice_runs_twice(cluster):
    from ctmorph.distributed import map_unordered

    _, client = cluster
    out = [r for _, r in map_unordered(client, abs, [-3, -3, -3])]
    assert out == [3, 3, 3]


def _tasks_left(client, prefix: str, wait: float = 10.0) -> int:
    def count(dask_scheduler):
        return sum(str(k).startswith(prefix) for k in dask_scheduler.tasks)

    deadline = time.monotonic() + wait
    while client.run_on_scheduler(count) and time.monotonic() < deadline:
        time.sleep(0.1)
    return client.run_on_scheduler(count)


@needs_distributed
@pytest.mark.parametrize("how", ["interrupt", "close"])
def test_stopping_early_cancels_the_rest(cluster, how):
    from ctmorph.distributed import map_unordered

    _, client = cluster
    prefix = f"sleepy{how}"
    gen = map_unordered(client, time.sleep, [0.0, 1.5, 1.5, 30.0, 30.0], key_prefix=prefix)
    assert next(gen) == (0.0, None)
    if how == "interrupt":
        # Ctrl-C while waiting: the traceback keeps the generator's frame (and its futures)
        # alive, so only an explicit cancel stops the queued tasks.
        with pytest.raises(KeyboardInterrupt) as info:
            gen.throw(KeyboardInterrupt)
        assert _tasks_left(client, f"{prefix}-") == 0
        del info
    else:
        gen.close()  # the caller stopped iterating
        assert _tasks_left(client, f"{prefix}-") == 0
    time.sleep(1.5)  # the running 1.5 s sleeps finish on their workers; later tests get them idle


# --- a real workload --------------------------------------------------------------------------


@needs_distributed
def test_measure_scan_on_the_cluster_matches_local_calls(cluster, scan_dirs, tmp_path):
    from ctmorph.config import AnalysisConfig
    from ctmorph.distributed import map_unordered, numba_compile_stats
    from ctmorph.errors import ScanError
    from ctmorph.pipeline import measure_scan

    _, client = cluster
    cfg = AnalysisConfig(roi="full", threshold=128.0)
    # The local runs come first: they also leave numba's cache warm for the workers.
    local = {d: measure_scan(d, cfg).row for d in scan_dirs}
    broken = tmp_path / "no_such_scan"

    remote = dict(map_unordered(client, functools.partial(measure_scan, config=cfg),
                                [*scan_dirs, broken]))

    assert isinstance(remote[broken], ScanError)
    assert str(broken) in str(remote[broken])
    for d in scan_dirs:
        row = remote[d].row
        assert row["status"] == "ok"
        assert row.keys() == local[d].keys()
        diff = {k: (row[k], local[d][k]) for k in row
                if k not in VOLATILE and not _same(row[k], local[d][k])}
        assert not diff, f"{d.name}: cluster and local rows differ: {diff}"

    # The workers load the kernels from the cache the local run wrote, in the same place.
    here = {v["cache_path"] for v in numba_compile_stats().values()}
    per_worker = client.run(numba_compile_stats)
    used = {addr: st for addr, st in per_worker.items()  # workers that ran a kernel
            if any(v["hits"] or v["misses"] for v in st.values())}
    assert used, "no worker ran a numba kernel"
    for addr, st in used.items():
        assert {v["cache_path"] for v in st.values()} <= here
        hits = sum(v["hits"] for v in st.values())
        misses = {k: v["misses"] for k, v in st.items() if v["misses"]}
        assert hits > 0, f"{addr} compiled every kernel itself ({misses}), none from the cache"
