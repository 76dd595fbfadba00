"""Atomic file writes: every file the suite writes goes to a temporary name beside it and is renamed
into place, so a process killed at any moment leaves the old file or the new one, never half of one;
the file gets the mode an ordinary new file would (0666 & ~umask), so colleagues on a shared filesystem
can read the tables and reports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Dict

import pandas as pd


def current_umask() -> int:
    """This process's umask, read without changing it (``/proc/self/status`` on Linux; elsewhere
    the set-and-restore dance, which another thread could race with)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic_target(path: Path):
    """The one atomic-write helper: yields a temporary path next to ``path`` (same folder, so
    the final ``os.replace`` is atomic), fsyncs it, gives it the mode an ordinary new file
    would get (0666 & ~umask: ``mkstemp`` makes 0600, which would survive the rename and hide
    every table from the rest of a shared filesystem) and renames it into place. On any
    error the temporary file is removed and the old file, if any, is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        fd = -1
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def small_tables_allocator() -> None:
    """Let pyarrow allocate with the system allocator in a run's process, unless the user chose
    one (``ARROW_DEFAULT_MEMORY_POOL``). A run's tables are kilobytes to a few megabytes, while
    pyarrow's default pool (mimalloc) reserves tens of megabytes of resident memory at the first
    table written, which the benchmark's peak-memory target counts against the measurements."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def atomic_write_table(path: Path, df: pd.DataFrame) -> None:
    """Parquet via a temporary file + rename (pyarrow engine)."""
    with _atomic_target(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")


def atomic_write_tables(tables: Dict[Path, pd.DataFrame]) -> None:
    """Several parquet files as one set: every one is written to its temporary file first,
    then all are renamed into place, so a full disk or an error in any of them leaves all
    the previous files as they were (a kill between the renames, a window of microseconds,
    can still mix old and new)."""
    with contextlib.ExitStack() as stack:
        for path, df in tables.items():
            tmp = stack.enter_context(_atomic_target(path))
            df.to_parquet(tmp, index=False, engine="pyarrow")


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for status.json and reports; a full disk says so in words."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (f"disk full (ENOSPC){where}: the files written before are intact; free space and relaunch "
                f"({type(exc).__name__}: {exc})")
    return f"{type(exc).__name__}: {exc}"
