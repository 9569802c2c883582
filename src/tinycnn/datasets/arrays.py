"""A user's NumPy files: a data set ``.npz`` (``X``, ``y``, optional ``image_shape``) and the
``.npy``/``.npz`` arrays that ``tinycnn predict`` reads. Never unpickles."""

from __future__ import annotations

import math
import os
import zipfile
from typing import Any

import numpy as np

from .core import DatasetError


def read_array_file(path: str | os.PathLike, member: str = "X") -> np.ndarray:
    """Read one numeric array from a ``.npy`` file, or member ``member`` of a ``.npz`` file.

    Never unpickles. Raises ``OSError`` when the file cannot be opened and :class:`DatasetError`
    naming the file when it is not a NumPy file, lacks ``member`` or holds non-numeric data.
    """
    path = os.fspath(path)
    with _opened(path) as loaded:
        if isinstance(loaded, np.ndarray):
            arr = loaded
        else:
            if member not in loaded.files:
                raise DatasetError(
                    f"{path}: no array named {member!r} in the file "
                    f"(it holds: {', '.join(loaded.files) or 'nothing'})"
                )
            arr = _member(path, loaded, member)
    return _numeric(path, member, arr)


def read_npz_dataset(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Read and check ``X``, ``y`` (and optional ``image_shape``) from a user's ``.npz``.

    Returns ``X`` float64, ``y`` (its own numeric dtype) and the image shape ``(C, H, W)``.
    For a 2-D ``X`` without ``image_shape``: ``n_features`` that is a perfect square ``s*s`` is
    read as ``(1, s, s)`` images, anything else as ``(1, 1, n_features)``.
    """
    path = os.fspath(path)
    with _opened(path) as loaded:
        if isinstance(loaded, np.ndarray):
            raise DatasetError(f"{path}: a .npy file holds one array; a data set needs X and y")
        missing = [m for m in ("X", "y") if m not in loaded.files]
        if missing:
            raise DatasetError(
                f"{path}: missing {' and '.join(missing)} (a data set .npz holds X and y; "
                f"this one holds: {', '.join(loaded.files) or 'nothing'})"
            )
        X = _numeric(path, "X", _member(path, loaded, "X"))
        y = _numeric(path, "y", _member(path, loaded, "y"))
        raw_shape = _member(path, loaded, "image_shape") if "image_shape" in loaded.files else None
    if X.ndim not in (2, 3, 4):
        raise DatasetError(
            f"{path}: X must be (N, n_features), (N, H, W) or (N, C, H, W), got shape {X.shape}"
        )
    if y.ndim not in (1, 2):
        raise DatasetError(f"{path}: y must be (N,) or (N, n_outputs), got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DatasetError(
            f"{path}: X and y hold different numbers of samples: {X.shape[0]} and {y.shape[0]}"
        )
    if X.shape[0] < 2 or X[0].size == 0 or (y.ndim == 2 and y.shape[1] == 0):
        raise DatasetError(f"{path}: too little data: X has shape {X.shape}, y {y.shape}")
    for name, arr in (("X", X), ("y", y)):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DatasetError(f"{path}: {name} contains NaN or infinity")
    image_shape = _image_shape(path, X, raw_shape)
    return X.astype(np.float64, copy=False), y, image_shape


def _image_shape(path: str, X: np.ndarray, raw: np.ndarray | None) -> tuple[int, int, int]:
    if X.ndim == 4:
        shape = X.shape[1:]
    elif X.ndim == 3:
        shape = (1, *X.shape[1:])
    elif raw is not None:
        values = np.asarray(raw).ravel()
        if values.size != 3 or values.dtype.kind not in "iu" or (values < 1).any():
            raise DatasetError(
                f"{path}: image_shape must be three positive integers C, H, W, got {values!r}"
            )
        shape = tuple(int(v) for v in values)
        if math.prod(shape) != X.shape[1]:
            raise DatasetError(
                f"{path}: image_shape {shape} holds {math.prod(shape)} values but X has "
                f"{X.shape[1]} features per sample"
            )
    else:
        side = math.isqrt(X.shape[1])
        shape = (1, side, side) if side * side == X.shape[1] else (1, 1, X.shape[1])
    return tuple(int(s) for s in shape)


class _opened:
    """``np.load`` a file safely (``allow_pickle=False``), turning format errors into
    :class:`DatasetError` naming the file; usable as a context manager for ``.npz`` files."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loaded: Any = None

    def __enter__(self) -> Any:
        from .._npy import check_array_file

        if os.path.isfile(self.path):
            try:  # before np.load, which allocates whatever a header claims
                check_array_file(self.path)
            except ValueError as exc:
                raise DatasetError(f"{self.path}: {exc}") from None
        try:
            self.loaded = np.load(self.path, allow_pickle=False)
        except (OSError, FileNotFoundError) as exc:
            if not os.path.exists(self.path):
                raise OSError(f"{self.path}: no such file") from None
            if os.path.isdir(self.path):
                raise OSError(f"{self.path}: is a directory, not a .npy/.npz file") from None
            raise DatasetError(f"{self.path}: not a NumPy .npy/.npz file ({exc})") from None
        except (ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{self.path}: damaged or unsupported file ({exc})") from None
        return self.loaded

    def __exit__(self, *exc_info: Any) -> None:
        if isinstance(self.loaded, np.lib.npyio.NpzFile):
            self.loaded.close()


def _member(path: str, loaded: Any, member: str) -> np.ndarray:
    try:
        return loaded[member]
    except ValueError as exc:  # object arrays need pickle: refused
        raise DatasetError(f"{path}: {member} cannot be read without pickle ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(f"{path}: {member} is damaged ({exc})") from None


def _numeric(path: str, member: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: {member} must hold real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise DatasetError(f"{path}: {member} is empty (shape {arr.shape})")
    return arr
