"""What every data source shares: the error, the description of a data set, the task rule, the
test split.

A data set may carry its own test split (MNIST's ``t10k`` files, mnist-5k's fixed 1000): then
:attr:`DatasetInfo.n_test` says that the last ``n_test`` samples of ``X`` are that split, and
:func:`split_dataset` uses it. Otherwise ``tinycnn train`` holds out a stratified 25%.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TASKS = ("classification", "regression")
# A y of integer values with at most this many distinct values is taken as class labels.
MAX_INFERRED_CLASSES = 50
# The held-out share of the data that `tinycnn train` tests on (without a split of its own).
TEST_SIZE = 0.25


class DatasetError(ValueError):
    """A data set that cannot be used: unknown name, unreadable or malformed file."""


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`~tinycnn.datasets.load_dataset` knows about the data beyond the arrays.

    ``image_shape`` is ``(C, H, W)``: how one row of ``X`` is read as an image.
    ``source`` says where the data came from (a built-in generator or the file's path).
    ``class_names``: names of the classes where the source gives them (the subfolders of an
    image folder, Fashion-MNIST's "T-shirt/top", ...), in the order of the sorted labels.
    ``n_test`` and ``split``: the data set's own test split, the last ``n_test`` samples, and
    its name (``"t10k"``, ...); ``None`` when the data set has none.
    ``skipped``: files of an image folder that were not read (hidden, or not images).
    """

    name: str
    task: str
    image_shape: tuple[int, int, int]
    n_samples: int
    source: str
    class_names: tuple[str, ...] | None = None
    n_test: int | None = None
    split: str | None = None
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        if self.class_names is not None:
            d["class_names"] = list(self.class_names)
        return d


def infer_task(y: np.ndarray) -> str:
    """``"classification"`` for a 1-D ``y`` of integer values (or booleans, or strings) with at
    most ``MAX_INFERRED_CLASSES`` distinct values; ``"regression"`` otherwise (incl. every 2-D
    ``y``)."""
    if y.ndim != 1:
        return "regression"
    if y.dtype.kind in "bUS":
        return "classification"
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        return "regression"
    return "classification" if np.unique(y).size <= MAX_INFERRED_CLASSES else "regression"


def held_out_split(
    X: np.ndarray, y: np.ndarray, task: str, seed: int, test_size: float = TEST_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, X_test, y_train, y_test)``: ``test_size`` of the samples held out with
    scikit-learn's ``train_test_split(random_state=seed)``, stratified by class for a
    classification task. ``tinycnn train`` tests on this split; ``tinycnn evaluate --split
    test`` recreates it."""
    from sklearn.model_selection import train_test_split

    stratify = y if task == "classification" else None
    if stratify is not None:
        labels, counts = np.unique(y, return_counts=True)
        if counts.min() < 2:
            raise DatasetError(
                f"class {labels[counts.argmin()]!r} has only one sample; holding out a "
                "stratified test split needs at least two of every class"
            )
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=stratify)


def split_dataset(
    X: np.ndarray, y: np.ndarray, info: DatasetInfo, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The training and test parts of a data set: its own test split when it has one (the last
    ``info.n_test`` samples), else :func:`held_out_split` with ``seed``.

    Returns ``(X_train, X_test, y_train, y_test, record)``; ``record`` says which split was used,
    JSON-ready: ``{"split": "t10k" | ... | "held-out", "n_train", "n_test", ...}``.
    """
    if info.n_test is not None:
        n_train = len(y) - info.n_test
        record = {"split": info.split, "n_train": n_train, "n_test": info.n_test}
        return X[:n_train], X[n_train:], y[:n_train], y[n_train:], record
    X_train, X_test, y_train, y_test = held_out_split(X, y, info.task, seed)
    record = {
        "split": "held-out",
        "n_train": len(y_train),
        "n_test": len(y_test),
        "test_size": TEST_SIZE,
        "random_state": seed,
        "stratified": info.task == "classification",
    }
    return X_train, X_test, y_train, y_test, record
