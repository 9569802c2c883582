"""Atomic file writes: a reader (or a process killed mid-write) never sees half a file.

The content goes to a temporary file in the destination's folder, is flushed to disk, and only
then replaces the destination with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

# Temporary files start with this, so leftovers of a killed process can be recognised and removed.
TEMP_PREFIX = ".tinycnn-tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same suffix) for a writer to fill; on success it is
    flushed to disk and renamed onto ``path`` (keeping an existing file's permissions), on error
    removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            # mkstemp creates the file private (0600); give it what a plain open() would.
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable; not every platform can open a folder, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file to write; on success it replaces ``path``, on error it is removed."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path``, atomically."""
    with atomic_write(path) as handle:
        handle.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array in ``.npy`` format to exactly ``path`` (no suffix added), atomically."""
    with atomic_write(path) as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files that a killed writer left in ``folder``."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file():
                with contextlib.suppress(OSError):
                    os.remove(entry.path)
