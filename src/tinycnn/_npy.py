"""Checks of a user's ``.npy``/``.npz`` file BEFORE NumPy reads it: no header may make it allocate.

``np.load`` allocates the array its header describes before it reads a byte of data, so a
1.5 KB file whose header claims shape ``(10**12, 64)`` asks for 466 TiB. :func:`check_array_file`
reads only the headers (of the file, or of every member of an archive) and compares each one's
shape and dtype with the bytes that really hold the data.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import IO

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
# DEFLATE cannot expand data by more than about 1032:1; a member claiming more is a lie.
MAX_DEFLATE_RATIO = 1032


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def read_header_fields(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at ``stream``'s position (the
    stream is left at the data); ``ValueError`` if it is not a valid header."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0 (UTF-8 field names) has no public reader
            shape, fortran, dtype = np.lib.format._read_array_header(stream, version)
    except (ValueError, TypeError, SyntaxError, EOFError, OSError) as exc:
        raise ValueError(f"its .npy header is damaged ({exc})") from None
    return tuple(shape), bool(fortran), dtype


def read_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data bytes)`` from the ``.npy`` header at ``stream``'s position (the
    stream is left at the data); ``ValueError`` if it is not a valid header."""
    shape, _, dtype = read_header_fields(stream)
    if dtype.hasobject:
        return tuple(shape), dtype, 0  # refused by np.load (pickle) anyway: nothing to size
    return tuple(shape), dtype, math.prod(shape) * dtype.itemsize


def _mismatch(what: str, shape: tuple, dtype: np.dtype, claimed: int, held: int) -> ValueError:
    return ValueError(
        f"{what}header claims shape {shape} of {dtype} ({_size(claimed)}), but the file holds "
        f"{_size(max(held, 0))} of data: it is damaged or not what it says"
    )


def check_array_file(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` (saying what is wrong; the caller names the file) if a ``.npy``
    header, or that of any ``.npy`` member of a ``.npz``, claims more or less data than the
    file holds. Anything that is neither is left for ``np.load`` to judge."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        magic = handle.read(len(NPY_MAGIC))
        handle.seek(0)
        if magic == NPY_MAGIC:
            shape, dtype, claimed = read_header(handle)
            if not dtype.hasobject and claimed != size - handle.tell():
                raise _mismatch("its ", shape, dtype, claimed, size - handle.tell())
            return
    if magic.startswith(ZIP_MAGIC):
        _check_archive(path, size)


def _check_archive(path: str, size: int) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not an archive np.load can open either: it says so
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(
                    f"member {name!r} uses ZIP compression method {info.compress_type}; NumPy "
                    "writes only stored or deflated members"
                )
            if info.header_offset + info.compress_size > size:
                raise ValueError(
                    f"member {name!r} claims {_size(info.compress_size)} of the archive, which "
                    f"holds {_size(size)} in all: it is truncated or damaged"
                )
            stored = info.compress_type == zipfile.ZIP_STORED
            if (stored and info.file_size != info.compress_size) or (
                not stored and info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024
            ):
                raise ValueError(
                    f"member {name!r} claims to unpack {_size(info.compress_size)} into "
                    f"{_size(info.file_size)}, which is impossible: it is damaged or crafted"
                )
            try:
                with archive.open(info) as member:
                    shape, dtype, claimed = read_header(member)
                    offset = member.tell()
            except ValueError as exc:
                raise ValueError(f"member {name!r}: {exc}") from None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ValueError(f"member {name!r} is damaged ({exc})") from None
            if not dtype.hasobject and claimed != info.file_size - offset:
                raise _mismatch(f"member {name!r}: its ", shape, dtype, claimed,
                                info.file_size - offset)  # fmt: skip
