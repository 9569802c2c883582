"""Data for the ``tinycnn`` command: built-in sets, deterministic synthetic images, a user's .npz.

``load_dataset(name_or_path)`` returns ``(X, y, info)``:

* ``"digits"``: scikit-learn's ``load_digits()`` exactly as it comes: ``X`` ``(1797, 64)`` of
  values 0-16, ``y`` ``(1797,)`` labels 0-9, ``info.image_shape == (1, 8, 8)``.
* ``"shapes"``: ``X`` ``(N, 1, 12, 12)`` noisy images of one of four shapes (a square outline, a
  cross, a disk, a bar), ``y`` ``(N,)`` the shape's index in :data:`SHAPE_NAMES`; a classification
  task generated from a fixed seed, so it is the same data on every machine.
* ``"shapes-size"``: ``X`` ``(N, 1, 12, 12)`` noisy soft-edged disks, ``y`` ``(N,)`` each disk's
  radius in pixels: a regression task, likewise deterministic.
* a path to a ``.npz`` file holding ``X`` (``(N, n_features)``, ``(N, H, W)`` or
  ``(N, C, H, W)``) and ``y`` (``(N,)`` or ``(N, n_outputs)``), and optionally ``image_shape``
  (three integers ``C, H, W``) for a 2-D ``X``.

Whether a task is classification or regression is inferred from ``y`` (see :func:`infer_task`)
unless ``task`` is given. A bad file raises :class:`DatasetError` (a ``ValueError``) naming it.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TASKS = ("classification", "regression")
BUILTIN_DATASETS = ("digits", "shapes", "shapes-size")
SHAPE_NAMES = ("square", "cross", "disk", "bar")

# A y of integer values with at most this many distinct values is taken as class labels.
MAX_INFERRED_CLASSES = 50
# Synthetic sets: fixed size and seed, so a name always means the same data.
SYNTHETIC_SIZE = 12
SYNTHETIC_SAMPLES = 800
SYNTHETIC_SEED = 0
SYNTHETIC_NOISE = 0.15
# The held-out share of the data that `tinycnn train` tests on.
TEST_SIZE = 0.25


class DatasetError(ValueError):
    """A data set that cannot be used: unknown name, unreadable or malformed file."""


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`load_dataset` knows about the data beyond the arrays.

    ``image_shape`` is ``(C, H, W)``: how one row of ``X`` is read as an image.
    ``source`` says where the data came from (a built-in generator or the file's path).
    """

    name: str
    task: str
    image_shape: tuple[int, int, int]
    n_samples: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d


def infer_task(y: np.ndarray) -> str:
    """``"classification"`` for a 1-D ``y`` of integer values (or booleans) with at most
    ``MAX_INFERRED_CLASSES`` distinct values; ``"regression"`` otherwise (incl. every 2-D ``y``)."""
    if y.ndim != 1:
        return "regression"
    if y.dtype.kind == "b":
        return "classification"
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        return "regression"
    return "classification" if np.unique(y).size <= MAX_INFERRED_CLASSES else "regression"


def load_dataset(
    name_or_path: str | os.PathLike, task: str | None = None
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Load a built-in data set by name or a user's ``.npz`` file; see the module docstring.

    Returns ``X`` (float64; ``(N, n_features)`` or ``(N, C, H, W)``), ``y`` ``(N,)`` or
    ``(N, n_outputs)``, and a :class:`DatasetInfo`. ``task`` (``"classification"`` or
    ``"regression"``) overrides the inferred task.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    name = os.fspath(name_or_path)
    if name == "digits":
        X, y, image_shape, source = _digits()
    elif name == "shapes":
        X, y = make_shapes()
        image_shape, source = (1, SYNTHETIC_SIZE, SYNTHETIC_SIZE), "tinycnn.datasets.make_shapes"
    elif name == "shapes-size":
        X, y = make_shape_sizes()
        image_shape = (1, SYNTHETIC_SIZE, SYNTHETIC_SIZE)
        source = "tinycnn.datasets.make_shape_sizes"
    elif name.endswith(".npz") or os.sep in name or os.path.exists(name):
        X, y, image_shape = read_npz_dataset(name)
        source = os.path.abspath(name)
    else:
        raise DatasetError(
            f"unknown data set {name!r}: use one of {', '.join(BUILTIN_DATASETS)} "
            f"or a path to a .npz file holding X and y"
        )
    chosen = task if task is not None else infer_task(y)
    if chosen == "classification" and y.ndim != 1:
        raise DatasetError(f"{name}: classification needs a 1-D y, got shape {y.shape}")
    if chosen == "regression":
        y = y.astype(np.float64)
    info = DatasetInfo(name, chosen, image_shape, int(X.shape[0]), source)
    return X, y, info


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[int, int, int], str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'tinycnn[sklearn]'"
        ) from None
    digits = load_digits()
    return digits.data, digits.target, (1, 8, 8), "sklearn.datasets.load_digits"


def held_out_split(
    X: np.ndarray, y: np.ndarray, task: str, seed: int, test_size: float = TEST_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, X_test, y_train, y_test)``: ``test_size`` of the samples held out with
    scikit-learn's ``train_test_split(random_state=seed)``, stratified by class for a
    classification task. ``tinycnn train`` tests on this split; ``tinycnn evaluate --split
    test`` recreates it."""
    from sklearn.model_selection import train_test_split

    stratify = y if task == "classification" else None
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=stratify)


# ---------------------------------------------------------------- synthetic images


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(rows, cols)``, each ``(size, size)``."""
    coords = np.arange(size, dtype=np.float64)
    return np.meshgrid(coords, coords, indexing="ij")


def _draw_shape(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """One clean ``(size, size)`` image in [0, 1] of shape ``SHAPE_NAMES[kind]``, at a random
    position and scale that keep it inside the image."""
    rows, cols = _grid(size)
    half = int(rng.integers(2, 5))  # half-extent in pixels: 2, 3 or 4
    r0 = int(rng.integers(half, size - half))
    c0 = int(rng.integers(half, size - half))
    dr, dc = np.abs(rows - r0), np.abs(cols - c0)
    if kind == 0:  # square outline
        image = (np.maximum(dr, dc) == half).astype(np.float64)
    elif kind == 1:  # cross
        image = (((dr == 0) & (dc <= half)) | ((dc == 0) & (dr <= half))).astype(np.float64)
    elif kind == 2:  # filled disk
        image = (np.hypot(dr, dc) <= half + 0.3).astype(np.float64)
    else:  # a bar two pixels thick and 2*half+1 long, horizontal or vertical
        along, across = (dc, rows - r0) if rng.integers(2) else (dr, cols - c0)
        image = ((along <= half) & (across >= 0) & (across <= 1)).astype(np.float64)
    return image


def make_shapes(
    n_samples: int = SYNTHETIC_SAMPLES,
    size: int = SYNTHETIC_SIZE,
    noise: float = SYNTHETIC_NOISE,
    seed: int = SYNTHETIC_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images of four shapes, balanced classes.

    Returns ``X`` ``(n_samples, 1, size, size)`` float64 (shape pixels 1 plus Gaussian noise of
    standard deviation ``noise``) and ``y`` ``(n_samples,)`` int64 indices into
    :data:`SHAPE_NAMES`. The same arguments always give the same arrays.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples, dtype=np.int64) % len(SHAPE_NAMES)
    rng.shuffle(y)
    X = np.empty((n_samples, 1, size, size))
    for i, kind in enumerate(y):
        X[i, 0] = _draw_shape(int(kind), rng, size)
    X += rng.normal(0.0, noise, X.shape)
    return X, y


def make_shape_sizes(
    n_samples: int = SYNTHETIC_SAMPLES,
    size: int = SYNTHETIC_SIZE,
    noise: float = SYNTHETIC_NOISE,
    seed: int = SYNTHETIC_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy soft-edged disks of random radius and position; the target is the radius.

    Returns ``X`` ``(n_samples, 1, size, size)`` float64 and ``y`` ``(n_samples,)`` float64 radii
    in pixels, uniform in ``[1, size/3]``. A pixel's value is its coverage by the disk,
    ``clip(radius - distance + 0.5, 0, 1)``, plus Gaussian noise of standard deviation ``noise``.
    """
    rng = np.random.default_rng(seed)
    rows, cols = _grid(size)
    radius = rng.uniform(1.0, size / 3, n_samples)
    X = np.empty((n_samples, 1, size, size))
    for i, r in enumerate(radius):
        r0, c0 = rng.uniform(r - 0.5, size - 0.5 - r, 2)
        distance = np.hypot(rows - r0, cols - c0)
        X[i, 0] = np.clip(r - distance + 0.5, 0.0, 1.0)
    X += rng.normal(0.0, noise, X.shape)
    return X, radius


# ---------------------------------------------------------------- a user's files


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
        from ._npy import check_array_file

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
