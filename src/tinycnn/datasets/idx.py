"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian 32-bit size per dimension, then the values in C order, big-endian. Images are
``(N, H, W)`` of unsigned bytes (type 0x08, ``idx3``), labels ``(N,)`` (``idx1``).

:func:`read_idx` reads one file; :func:`read_idx_folder` reads a folder holding the four files of
an MNIST-style data set, ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ``.gz``. A damaged
file (truncated, trailing bytes, a bad gzip stream, the wrong kind of content for its name)
raises :class:`DatasetError` naming it; the sizes in the header are checked against the bytes
actually there before any array of that size is made.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from pathlib import Path

import numpy as np

from .core import DatasetError

# type code -> big-endian dtype
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# The canonical file names of an MNIST-style data set, in the order they are read.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_NAME = re.compile(r"-idx\d-ubyte(\.gz)?$")
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not; told apart by its first bytes, not its name).

    Returns the array in native byte order, shape as the header says (``(N, H, W)`` for images,
    ``(N,)`` for labels), dtype as its type code (``uint8`` for MNIST). Raises ``OSError`` when
    the file cannot be opened and :class:`DatasetError` naming it when it is not a complete IDX
    file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            try:
                return _read_idx_stream(path, stream)
            except (OSError, EOFError, zlib.error) as exc:
                if not gzipped:
                    raise
                raise DatasetError(f"{path}: damaged gzip stream ({exc})") from None
    except FileNotFoundError:
        raise OSError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise OSError(f"{path}: is a directory, not an IDX file") from None


def _read_idx_stream(path: str, stream) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in IDX_TYPES or magic[3] == 0:
        raise DatasetError(
            f"{path}: not an IDX file (its first bytes are {magic.hex() or 'missing'}; an IDX "
            "file starts with 00 00, a type code and the number of dimensions)"
        )
    dtype, ndim = IDX_TYPES[magic[2]], magic[3]
    header = stream.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
    shape = tuple(int(v) for v in np.frombuffer(header, dtype=">u4"))
    expected = math.prod(shape) * dtype.itemsize
    # Read what is there, at most one byte more than announced: a header claiming 10^12 values
    # costs nothing before the bytes are seen to be missing.
    data = bytearray()
    while len(data) <= expected:
        chunk = stream.read(min(_CHUNK, expected + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) < expected:
        raise DatasetError(
            f"{path}: truncated: the header announces shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data)}"
        )
    if len(data) > expected:
        raise DatasetError(
            f"{path}: more data than the header's shape {shape} announces ({expected} bytes): "
            "not a well-formed IDX file"
        )
    return np.frombuffer(bytes(data), dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def is_idx_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds at least one file named like an IDX file (``*-idx3-ubyte``...)."""
    try:
        return any(_IDX_NAME.search(entry.name) for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return False


def idx_file(folder: str | os.PathLike, name: str) -> Path | None:
    """The file for canonical ``name`` in ``folder``: ``name`` itself if present (someone
    unpacked it), else ``name.gz``, else ``None``."""
    for candidate in (Path(folder) / name, Path(folder) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_folder(
    folder: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four files of an MNIST-style data set in ``folder``.

    Returns ``(X_train, y_train, X_test, y_test)``: images ``(N, 1, H, W)`` as stored (``uint8``
    for MNIST), labels ``(N,)`` int64. Raises :class:`DatasetError` naming the file that is
    missing, damaged, of the wrong kind (images where labels belong, or labels that are not
    small integers), or whose length differs from its partner's.
    """
    paths = {name: idx_file(folder, name) for name in IDX_FILES}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DatasetError(
            f"{folder}: an IDX folder needs {', '.join(IDX_FILES)} (each may be .gz); missing: "
            f"{', '.join(f'{m}[.gz]' for m in missing)}"
        )
    parts = []
    for images_name, labels_name in (IDX_FILES[:2], IDX_FILES[2:]):
        images_path, labels_path = paths[images_name], paths[labels_name]
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.shape[0] == 0 or 0 in images.shape:
            raise DatasetError(
                f"{images_path}: an images file holds (N, H, W) with N, H, W >= 1, this one "
                f"holds shape {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetError(
                f"{labels_path}: a labels file holds (N,) integers, this one holds shape "
                f"{labels.shape} of {labels.dtype}"
            )
        if len(labels) != len(images):
            raise DatasetError(
                f"{images_path} holds {len(images)} images but {labels_path} holds "
                f"{len(labels)} labels"
            )
        parts.append((images[:, None], labels.astype(np.int64)))
    (X_train, y_train), (X_test, y_test) = parts
    if X_train.shape[1:] != X_test.shape[1:]:
        raise DatasetError(
            f"{paths[IDX_FILES[2]]}: test images are {X_test.shape[2]}x{X_test.shape[3]} but the "
            f"training images in {paths[IDX_FILES[0]]} are {X_train.shape[2]}x{X_train.shape[3]}"
        )
    return X_train, y_train, X_test, y_test
