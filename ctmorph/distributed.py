"""Run independent tasks (one per scan) on a Dask distributed cluster.

A small executor adapter for :mod:`ctmorph.batch`: connect to an existing scheduler, submit one
picklable, top-level function per item, and get ``(item, result)`` pairs back as they finish,
with a worker's exception in place of the result of the item that raised it. Nothing here knows
about scans; the batch decides what an item is and what a failure means.

``distributed`` is an optional dependency (``pip install 'ctmorph[distributed]'``); this module
imports it lazily, so importing ``ctmorph.distributed`` never fails.

Notes
-----
Everything ctmorph starts itself (:func:`local_cluster`) listens on the loopback interface only
unless the caller passes another ``host``. Connections to a real cluster take a
``distributed.security.Security`` object or the ``distributed.comm.tls.*`` Dask configuration for
``tls://`` addresses; see ``docs/cluster.md``.

Workers need the same ctmorph and numerical library versions as the client for identical
numbers (:func:`check_versions`), and must see the scan and output folders at the same absolute
paths (a shared filesystem).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from distributed import Client, LocalCluster, Security

__all__ = [
    "ENV_ADDRESS",
    "INSTALL_HINT",
    "VERSION_PACKAGES",
    "check_versions",
    "connect",
    "local_cluster",
    "map_unordered",
    "numba_compile_stats",
    "numba_threads_per_task",
]

logger = logging.getLogger(__name__)

#: Environment variable read when no address is given (the one Dask itself reads).
ENV_ADDRESS = "DASK_SCHEDULER_ADDRESS"
#: What to tell a user who asked for a cluster without the optional dependency.
INSTALL_HINT = "pip install 'ctmorph[distributed]'"
#: Distributions whose versions must match between client and workers for identical numbers.
VERSION_PACKAGES = ("ctmorph", "numpy", "scipy", "numba", "scikit-image", "tifffile", "pillow")

_LOOPBACK = "127.0.0.1"

T = TypeVar("T")
R = TypeVar("R")


def _import_distributed() -> Any:
    """Import ``distributed`` or raise a ConfigError that says how to install it."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise ConfigError(
            f"running on a Dask cluster needs the optional 'distributed' package "
            f"({exc}); install it with: {INSTALL_HINT}"
        ) from None


def connect(
    address: str | os.PathLike[str] | None = None,
    *,
    security: Security | None = None,
    timeout: float = 5.0,
) -> Client:
    """Connect to a running Dask scheduler.

    Parameters
    ----------
    address : str or path, optional
        ``tcp://HOST:PORT`` or ``tls://HOST:PORT``, or the path of a scheduler file written by
        ``dask scheduler --scheduler-file FILE``. Default: the ``DASK_SCHEDULER_ADDRESS``
        environment variable.
    security : distributed.security.Security, optional
        TLS certificates for a ``tls://`` scheduler; without it Dask's configuration
        (``distributed.comm.tls.*``) applies.
    timeout : float
        Seconds to wait for the scheduler before giving up.

    Returns
    -------
    distributed.Client
        A client that is *not* made Dask's process-wide default; close it when done (it is a
        context manager).

    Raises
    ------
    ConfigError
        If ``distributed`` is not installed, no address is given, the address is malformed, or
        the scheduler cannot be reached within ``timeout`` (the message names the address).
    """
    distributed = _import_distributed()
    raw = address if address is not None else os.environ.get(ENV_ADDRESS, "")
    addr = os.fspath(raw).strip()
    if not addr:
        raise ConfigError(
            f"no Dask scheduler address: pass --scheduler tcp://HOST:PORT or set {ENV_ADDRESS}"
        )
    if "://" not in addr and (addr.endswith(".json") or Path(addr).is_file()):
        target = _address_from_file(Path(addr))
        where = f"the Dask scheduler at {target} (from {addr})"
    else:
        target = addr
        where = f"the Dask scheduler at {target}"
    # Check what can be checked before building a Client: one that fails on a malformed
    # address or missing TLS settings is not cleaned up and complains at interpreter exit.
    try:
        distributed.comm.get_address_host_port(target)
    except ValueError as exc:
        raise ConfigError(
            f"{target}: not a usable Dask scheduler address ({exc}); "
            "expected tcp://HOST:PORT, tls://HOST:PORT or a scheduler file"
        ) from None
    if distributed.comm.parse_address(target)[0] == "tls":
        sec = security if security is not None else distributed.Security()
        if sec.get_connection_args("client").get("ssl_context") is None:
            raise ConfigError(
                f"{target}: a tls:// scheduler needs this client's TLS certificate: set "
                "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key in the "
                "Dask configuration, or pass a distributed.Security (see docs/cluster.md)"
            )
    try:
        client = distributed.Client(
            target, timeout=timeout, set_as_default=False, security=security
        )
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach {where} within {timeout:g} s: {exc}") from None
    logger.info("connected to %s (%d workers)", client.scheduler.address,
                len(client.scheduler_info().get("workers", {})))
    return client


def _address_from_file(path: Path) -> str:
    """The scheduler address in a file written by ``dask scheduler --scheduler-file``."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: scheduler file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the scheduler file ({exc.strerror})") from None
    except ValueError:
        raise ConfigError(f"{path}: not a Dask scheduler file (not JSON)") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address:
        raise ConfigError(f"{path}: not a Dask scheduler file (no 'address' in it)")
    return address


def map_unordered(
    client: Client,
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    key_prefix: str = "ctmorph",
    retries: int = 0,
) -> Iterator[tuple[T, R | BaseException]]:
    """Run ``func(item)`` on the cluster for every item; yield ``(item, outcome)`` as each ends.

    Parameters
    ----------
    client : distributed.Client
        From :func:`connect` or :func:`local_cluster`.
    func : callable
        A top-level function of an importable module (workers unpickle it by reference), taking
        one item. Use :func:`functools.partial` for further arguments.
    items : iterable
        Picklable arguments; all are submitted at once.
    key_prefix : str
        Task name prefix shown on the dashboard. Keys are unique per call and item, so the same
        item submitted twice runs twice.
    retries : int
        Extra attempts for a task that raised (Dask's ``retries``).

    Yields
    ------
    item, outcome
        In completion order. ``outcome`` is ``func``'s return value, or the exception it raised
        (re-raised on the client from the worker's pickled exception, traceback attached), or a
        ``distributed`` error such as ``KilledWorker`` if the task's workers kept dying.
        Exceptions are yielded, never raised, so one failed item never loses the others.

    Notes
    -----
    On ``KeyboardInterrupt``, or when the caller stops iterating early, the futures not yet
    yielded are cancelled. Cancelling stops queued tasks; a task already running finishes on its
    worker (Python threads cannot be killed) and its result is dropped.
    """
    distributed = _import_distributed()
    run = uuid.uuid4().hex[:12]
    futures: dict[Any, T] = {}
    try:
        for i, item in enumerate(items):
            fut = client.submit(
                func, item, key=f"{key_prefix}-{run}-{i}", pure=False, retries=retries
            )
            futures[fut] = item
        logger.debug("submitted %d tasks %s-%s-*", len(futures), key_prefix, run)
        for fut in distributed.as_completed(list(futures), loop=client.loop):
            item = futures.pop(fut)
            outcome: R | BaseException
            try:
                outcome = fut.result()
            except Exception as exc:  # the task's own error, or KilledWorker / cancellation
                outcome = exc
            del fut  # let the scheduler forget the task while the caller holds this frame
            yield item, outcome
    finally:
        if futures:
            logger.info("cancelling %d unfinished tasks", len(futures))
            with contextlib.suppress(Exception):
                client.cancel(list(futures))


@contextlib.contextmanager
def local_cluster(
    n_workers: int = 2,
    threads_per_worker: int = 1,
    *,
    host: str = _LOOPBACK,
    **kwargs: Any,
) -> Iterator[tuple[LocalCluster, Client]]:
    """Start a throw-away Dask cluster of worker processes on this machine.

    Parameters
    ----------
    n_workers, threads_per_worker : int
        Worker processes and the task threads of each.
    host : str
        Interface every server listens on: the scheduler, the workers, their nannies and the
        HTTP (dashboard/health) endpoints. Loopback unless the caller asks otherwise.
    **kwargs
        Passed to ``distributed.LocalCluster`` (e.g. ``memory_limit``; ``protocol="tls://"``
        with ``security``). Its ``env`` reaches a worker only after the worker has re-imported
        the parent's main module, too late for ``NUMBA_CACHE_DIR`` if that module imports
        ctmorph at the top; set such variables in the parent's environment instead.

    Yields
    ------
    cluster, client
        ``distributed.LocalCluster`` and a client connected to it (not Dask's default client);
        both are closed on exit.
    """
    distributed = _import_distributed()
    http = f"{host}:0"
    options: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "host": host,
        "scheduler_port": 0,
        "dashboard_address": http,
        "worker_dashboard_address": http,
        "silence_logs": logging.WARNING,
    }
    options.update(kwargs)
    with distributed.LocalCluster(**options) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            logger.info("local Dask cluster at %s: %d workers x %d threads",
                        cluster.scheduler_address, n_workers, threads_per_worker)
            yield cluster, client


def _numba_thread_budget() -> int:
    """Threads numba may use in this process (respects CPU affinity and NUMBA_NUM_THREADS)."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def numba_threads_per_task(client: Client) -> int:
    """Numba threads each task may use without oversubscribing any worker's machine.

    For every worker: the threads numba may use on its machine (``NUMBA_NUM_THREADS``, which
    follows the CPU affinity, e.g. a SLURM allocation) divided by the task threads of all workers
    on that host; the smallest value over the workers, at least 1.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    int
        Threads per task, or 0 (leave numba's default) when no worker is connected yet.
    """
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        logger.warning("no Dask workers connected; numba threads left at numba's default")
        return 0
    budget = client.run(_numba_thread_budget)
    per_host: dict[str, int] = {}
    for info in workers.values():
        per_host[info["host"]] = per_host.get(info["host"], 0) + int(info["nthreads"])
    per_task = [
        max(1, budget[addr] // max(1, per_host[info["host"]]))
        for addr, info in workers.items()
        if addr in budget
    ]
    return min(per_task) if per_task else 0


def numba_compile_stats(prefix: str = "ctmorph") -> dict[str, dict[str, Any]]:
    """Numba disk-cache hits and compilations of the jitted functions loaded in this process.

    Meant for ``client.run(numba_compile_stats)``: a worker that recompiles kernels instead of
    loading them from numba's cache shows ``misses``.

    Parameters
    ----------
    prefix : str
        Only modules named ``prefix`` or ``prefix.*`` (already imported) are looked at.

    Returns
    -------
    dict
        ``{"module.function": {"hits": int, "misses": int, "cache_path": str | None}}`` for
        every numba dispatcher found at module level; ``hits`` counts signatures loaded from
        the cache, ``misses`` signatures compiled in this process.
    """
    import sys

    out: dict[str, dict[str, Any]] = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for obj in list(vars(mod).values()):
            stats = getattr(obj, "stats", None)
            py_func = getattr(obj, "py_func", None)
            if py_func is None or not hasattr(stats, "cache_hits"):
                continue
            out[f"{py_func.__module__}.{py_func.__qualname__}"] = {
                "hits": sum(stats.cache_hits.values()),
                "misses": sum(stats.cache_misses.values()),
                "cache_path": stats.cache_path,
            }
    return out


def _distribution_versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def check_versions(client: Client, packages: Sequence[str] = VERSION_PACKAGES) -> None:
    """Fail unless every worker has the same versions of ``packages`` as this process.

    Parameters
    ----------
    client : distributed.Client
    packages : sequence of str
        Distribution names.

    Raises
    ------
    ConfigError
        Naming the first workers and packages that differ.
    """
    mine = _distribution_versions(packages)
    theirs = client.run(_distribution_versions, list(packages))
    problems = [
        f"{addr}: {name} {ver} (here {mine[name]})"
        for addr, vers in sorted(theirs.items())
        for name, ver in vers.items()
        if ver != mine[name]
    ]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ConfigError(
            "Dask workers run other versions than this machine, so results would not be "
            f"comparable: {'; '.join(problems[:3])}{more}"
        )
