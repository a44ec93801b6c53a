"""Atomic file output: write to a temporary file beside the target, then rename.

A failure of the file system (disk full, read-only, a file where a folder should be) becomes
one :class:`~ctmorph.errors.OutputError` naming the target and the problem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

__all__ = ["atomic_path", "atomic_write_text", "output_error", "ensure_output_dir"]


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """One line for a failed write: ``'<path>: cannot write: No space left on device'``."""
    why = exc.strerror or str(exc)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and not Path(path).is_dir():
        bad = next((p for p in [Path(path), *Path(path).parents] if p.is_file()), None)
        if bad is not None:
            return OutputError(f"{bad}: is a file, not a folder; cannot write {path}")
    return OutputError(f"{path}: cannot write: {why}")


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) and check that files can be written in it.

    Raises
    ------
    OutputError
        ``folder`` (or a parent) is a file, or the folder cannot be created or written
        (read-only file system, permissions, disk full).
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ctmorph-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise output_error(path, exc) from None
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left as it was, so a
    reader never sees a half-written file. An ``OSError`` (raised by the file system while
    creating, writing or renaming) becomes an :class:`~ctmorph.errors.OutputError` naming
    ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=suffix or target.suffix + ".tmp", dir=target.parent
        )
    except OSError as exc:
        raise output_error(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates 0600 files; outputs in shared study folders must follow the umask
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        raise output_error(target, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def atomic_write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)
