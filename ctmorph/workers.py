"""A pool of worker processes in which a dying worker costs only the task it was running.

``concurrent.futures.ProcessPoolExecutor`` marks the whole pool broken when one worker dies
(killed by the out-of-memory killer, a segfault in a compiled library): every queued task
fails, also those that never started. :class:`WorkerPool` gives each worker one task at a time
over its own pipe and watches the process, so it knows which task a dead worker held; that
task's outcome is a :class:`WorkerDied`, a fresh worker takes the worker's place, and the
other workers and the queued tasks are not touched.

Generic: it knows nothing of scans (tests/test_layering.py keeps it so).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["WorkerDied", "WorkerPool", "describe_exit"]

logger = logging.getLogger(__name__)


class WorkerDied(RuntimeError):
    """The worker process running a task died before returning its result.

    Attributes
    ----------
    exitcode : int or None
        The process's exit code; ``-N`` when it was killed by signal ``N``.
    """

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"the worker process {describe_exit(exitcode)}")
        self.exitcode = exitcode


def describe_exit(exitcode: int | None) -> str:
    """``'was killed (SIGKILL)'``, ``'crashed (SIGSEGV)'`` or ``'exited with code 3'``."""
    if exitcode is None:
        return "stopped"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        verb = "crashed" if name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT") \
            else "was killed"
        return f"{verb} ({name})"
    return f"exited with code {exitcode}"


class _RemoteError(RuntimeError):
    """An exception raised in a worker that could not be sent back as itself."""


def _worker_main(conn: Connection, slot: int, initializer: Callable[..., None] | None,
                 initargs: Sequence[Any]) -> None:
    """A worker's life: set up, then run the tasks the parent sends until it sends None."""
    # Ctrl-C reaches the whole process group: the parent decides, and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(slot, *initargs)
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent is gone
            return
        if task is None:
            return
        fn, args = task
        try:
            reply = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            reply = ("error", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # the result or the exception does not pickle
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            conn.send(("error", _RemoteError(f"cannot send the task's outcome back: {detail}")))


@dataclass
class _Worker:
    slot: int
    process: Any
    conn: Connection
    task: Any = None
    busy: bool = False


class WorkerPool:
    """``n`` worker processes (spawned) that run tasks one at a time each.

    Parameters
    ----------
    n : int
        Number of workers.
    initializer : callable, optional
        Called in each new worker as ``initializer(slot, *initargs)``; ``slot`` in ``0..n-1``
        is the worker's place in the pool, kept by the worker that replaces a dead one.
    initargs : sequence
        Further arguments of ``initializer`` (picklable).
    on_death : callable, optional
        Called in the parent as ``on_death(slot)`` when a worker died, before its
        replacement starts (e.g. to reset what the worker had registered in shared memory).

    Notes
    -----
    Use as a context manager: leaving it normally lets the workers finish and exit; leaving it
    through an exception (Ctrl-C included) terminates them. Workers ignore SIGINT.
    """

    def __init__(self, n: int, *, initializer: Callable[..., None] | None = None,
                 initargs: Sequence[Any] = (), on_death: Callable[[int], None] | None = None):
        if n < 1:
            raise ValueError(f"a pool needs at least one worker, got {n}")
        self._ctx = multiprocessing.get_context("spawn")
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._on_death = on_death
        self._workers = [self._start(slot) for slot in range(n)]

    def _start(self, slot: int) -> _Worker:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, daemon=True,
                                 args=(child, slot, self._initializer, self._initargs))
        proc.start()
        child.close()
        return _Worker(slot, proc, parent)

    def map_unordered(self, fn: Callable[..., Any], tasks: Iterable[tuple[Any, Sequence[Any]]]
                      ) -> Iterator[tuple[Any, Any]]:
        """Run ``fn(*args)`` for each ``(key, args)`` of ``tasks``; yield ``(key, outcome)``.

        ``outcome`` is the return value, or the exception the task raised, or a
        :class:`WorkerDied` when its worker process died; in the order tasks finish. ``fn``
        must be picklable (a module-level function).
        """
        queue = deque(tasks)
        while queue or any(w.busy for w in self._workers):
            for w in self._workers:
                if queue and not w.busy:
                    key, args = queue.popleft()
                    w.task, w.busy = key, True
                    w.conn.send((fn, tuple(args)))
            busy = [w for w in self._workers if w.busy]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.conn in ready or w.conn.poll():
                    try:
                        status, value = w.conn.recv()
                    except (EOFError, OSError):  # died while sending
                        yield w.task, self._replace(w)
                        continue
                    w.busy = False
                    yield w.task, value
                elif w.process.sentinel in ready:
                    yield w.task, self._replace(w)

    def _replace(self, w: _Worker) -> WorkerDied:
        """Note a dead worker's exit, start its replacement; the exception for its task."""
        w.process.join()
        died = WorkerDied(w.process.exitcode)
        logger.debug("worker %d %s", w.slot, describe_exit(w.process.exitcode))
        w.conn.close()
        if self._on_death is not None:
            self._on_death(w.slot)
        self._workers[self._workers.index(w)] = self._start(w.slot)
        return died

    def close(self, *, terminate: bool = False) -> None:
        """Stop the workers: ask them to exit (or terminate them), then wait for them."""
        for w in self._workers:
            if terminate:
                w.process.terminate()
            else:
                try:
                    w.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for w in self._workers:
            w.process.join()
            w.conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(terminate=exc_type is not None)
