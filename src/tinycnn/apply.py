"""``tinycnn predict`` and ``tinycnn evaluate``: a trained model applied to data from files.

What the user gives is checked first (the model file, the inputs against the model, the output
path); a refusal there is a :class:`~tinycnn.datasets.DatasetError`, ``ModelFileError``,
``OSError`` or :class:`~tinycnn.errors.InputError`, printed as one line. Past those checks, any
other error is a bug and the command shows its traceback.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write, check_output, write_npy
from .datasets import (
    DatasetError,
    DatasetInfo,
    load_dataset,
    read_array_file,
    source_kind,
    split_dataset,
)
from .datasets.images import IMAGE_EXTENSIONS, is_image_file, list_images, read_images
from .errors import InputError

ARRAY_SUFFIXES = (".npy", ".npz")
# The pictures of a model on held-out data, by task.
CLASSIFICATION_PICTURES = ("confusion.png", "errors.png")
REGRESSION_PICTURES = ("predicted_vs_true.png",)


def load_model(path: str | os.PathLike) -> Any:
    """The fitted estimator stored in ``path`` (a model or checkpoint file)."""
    from .io import load_model as _load

    return _load(path)


def checked_samples(est: Any, X: np.ndarray, source: str) -> np.ndarray:
    """Check that ``X`` is in a form the model takes, with the image size it was trained on;
    return ``X`` unchanged. Raises :class:`DatasetError` naming ``source`` otherwise."""
    C, H, W = (int(s) for s in est.image_shape_)
    forms = f"(N, {C * H * W})" + (f", (N, {H}, {W})" if C == 1 else "") + f" or (N, {C}, {H}, {W})"
    if X.ndim not in (2, 3, 4) or X.shape[0] == 0:
        raise DatasetError(f"{source}: X has shape {X.shape}; this model takes {forms}")
    try:
        images = est.as_images(X)
    except (ValueError, TypeError) as exc:
        raise DatasetError(
            f"{source}: X has shape {X.shape}: {exc} (this model takes {forms})"
        ) from None
    if tuple(images.shape[1:]) != (C, H, W):
        raise DatasetError(
            f"{source}: X has shape {X.shape}, read as {tuple(images.shape[1:])} images; "
            f"this model was trained on {C}x{H}x{W} images and takes {forms}"
        )
    return X


def _is_array_input(inputs: Sequence[str]) -> bool:
    return (
        len(inputs) == 1
        and inputs[0].lower().endswith(ARRAY_SUFFIXES)
        and not os.path.isdir(inputs[0])
    )


def predict_command(model: str, inputs: str | Sequence[str], output: str) -> int:
    """Write ``model``'s predictions for ``inputs`` to ``output``.

    ``inputs``: one ``.npy``/``.npz`` (predictions written as ``.npy``), or image files and
    folders of them (predictions written as CSV: ``path``, ``label``, then for a classifier one
    probability column ``p_<class>`` per class).
    """
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    inputs = [os.fspath(i) for i in inputs]
    # Before any work: an output that cannot be written, or that is the model or an input.
    sources = {"--model": model, **{f"--input {i}": i for i in inputs}}
    try:
        check_output(output, sources, name="--output")
    except ValueError as exc:  # the output is one of the inputs (OSErrors: it cannot be written)
        raise InputError(str(exc)) from None
    if not _is_array_input(inputs):
        return _predict_images(model, inputs, output)
    est = load_model(model)
    X = checked_samples(est, read_array_file(inputs[0], member="X"), inputs[0])
    predictions = est.predict(X)
    write_npy(output, predictions)
    print(f"wrote {len(predictions)} predictions of shape {predictions.shape} to {output}")
    return 0


def image_inputs(inputs: Sequence[str]) -> tuple[list[str], int]:
    """The image files named by ``inputs`` (files as given, folders searched recursively) as
    paths spelt from what was given, and how many files in the folders were skipped."""
    paths: list[str] = []
    skipped = 0
    for given in inputs:
        if os.path.isdir(given):
            found, skipped_here = list_images(given)
            skipped += skipped_here
            paths += [os.path.join(given, os.path.relpath(p, given)) for p in found]
        elif not os.path.exists(given):
            raise OSError(f"--input {given}: no such file or folder")
        elif given.lower().endswith(ARRAY_SUFFIXES):
            raise DatasetError(
                f"--input {given}: a .npy/.npz file is read alone, not together with images"
            )
        elif not is_image_file(given):
            raise DatasetError(
                f"--input {given}: not an image file (images are {', '.join(IMAGE_EXTENSIONS)})"
            )
        else:
            paths.append(given)
    if not paths:
        raise DatasetError(
            f"--input {' '.join(inputs)}: no image files found ({skipped} other files skipped)"
        )
    return paths, skipped


def _predict_images(model: str, inputs: Sequence[str], output: str) -> int:
    if not output.lower().endswith(".csv"):
        raise InputError(
            f"--output {output}: predictions on image files are written as CSV; name a .csv file"
        )
    est = load_model(model)
    C, H, W = (int(s) for s in est.image_shape_)
    if C not in (1, 3):
        raise DatasetError(
            f"{model}: the model takes {C}-channel images; image files give 1 (grayscale) or 3 "
            "(RGB)"
        )
    paths, skipped = image_inputs(inputs)
    # The reading of training: the model's channels and size (every file converted, resized).
    X = read_images([Path(p) for p in paths], C, (H, W))
    classifier = hasattr(est, "classes_")
    if classifier:
        proba = est.predict_proba(X)
        labels = est.classes_[proba.argmax(axis=1)]
        header = ["path", "label", *(f"p_{c}" for c in est.classes_.tolist())]
        rows = [
            [p, str(label), *(repr(float(v)) for v in row)]
            for p, label, row in zip(paths, labels.tolist(), proba)
        ]
    else:
        values = np.asarray(est.predict(X), dtype=np.float64).reshape(len(paths), -1)
        n_outputs = values.shape[1]
        names = ["value"] if n_outputs == 1 else [f"value_{k}" for k in range(n_outputs)]
        header = ["path", *names]
        rows = [[p, *(repr(float(v)) for v in row)] for p, row in zip(paths, values)]
    with atomic_write(output, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    if skipped:
        print(f"skipped {skipped} files that are hidden or not images")
    print(f"wrote {len(rows)} predictions for image files to {output}")
    return 0


def display_names(est: Any, info: DatasetInfo | None) -> dict[Any, str] | None:
    """How to show the model's classes: the data set's class names where it has one per class
    label ``0..K-1`` (Fashion-MNIST's "Trouser", ...), else ``None`` (the labels themselves)."""
    classes = getattr(est, "classes_", None)
    if classes is None or info is None or info.class_names is None:
        return None
    names = info.class_names
    if classes.dtype.kind in "iu" and classes.min() >= 0 and classes.max() < len(names):
        return {int(c): names[int(c)] for c in classes}
    return None


def draw_evaluation(
    folder: str | os.PathLike, est: Any, X: np.ndarray, y: np.ndarray, info: DatasetInfo | None
) -> tuple[str, ...]:
    """Draw the pictures of ``est`` on ``X``, ``y`` into ``folder``: for a classifier
    ``confusion.png`` and ``errors.png`` (the misclassified images), for a regressor
    ``predicted_vs_true.png``. Returns the file names written."""
    from . import plots

    folder = Path(folder)
    predicted = est.predict(X)
    if hasattr(est, "classes_"):
        names = display_names(est, info)
        shown = None if names is None else [names[int(c)] for c in est.classes_]
        plots.plot_confusion(folder / "confusion.png", y, predicted, est.classes_, shown)
        plots.plot_errors(folder / "errors.png", est.as_images(X), y, predicted, names)
        return CLASSIFICATION_PICTURES
    plots.plot_predicted_vs_true(folder / "predicted_vs_true.png", y, predicted)
    return REGRESSION_PICTURES


def split_seed(est: Any, seed: int | None, model: str) -> tuple[int, str]:
    """The seed of train's held-out split for ``--split test``, and where it came from: the
    given ``seed``, else the one stored in the model (its ``random_state``). A seed other than
    the model's gives a split that overlaps its training data: warned about."""
    import warnings

    stored = est.random_state if isinstance(est.random_state, (int, np.integer)) else None
    if seed is None:
        if stored is None:
            raise DatasetError(
                f"--split test: {model} stores no seed (it was trained with random_state="
                f"{est.random_state!r}); give the --seed its training split used"
            )
        return int(stored), "model"
    if stored is not None and int(stored) != seed:
        warnings.warn(
            f"{model} was trained with seed {int(stored)}: the test split of --seed {seed} "
            "overlaps its training data, so the scores are too good",
            stacklevel=2,
        )
    return seed, "--seed"


def checked_targets(est: Any, y: np.ndarray, source: str) -> None:
    """A classifier scores only labels it was trained on; anything else is a one-line error."""
    if not hasattr(est, "classes_"):
        return
    classes = est.classes_
    shown = ", ".join(str(v) for v in classes[:10]) + (", ..." if len(classes) > 10 else "")
    if y.ndim != 1 or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        raise DatasetError(
            f"{source}: y holds regression targets (shape {y.shape}, non-integer values), but "
            f"the model is a classifier of the labels {shown}"
        )
    unseen = np.setdiff1d(np.unique(y), classes)
    if unseen.size:
        some = ", ".join(str(v) for v in unseen[:10]) + (", ..." if unseen.size > 10 else "")
        raise DatasetError(
            f"{source}: y holds labels the model never saw ({some}); it knows {shown}"
        )


def evaluate_command(
    model: str, data: str, split: str, seed: int | None, plots_folder: str | None = None
) -> dict[str, Any]:
    """Metrics of ``model`` on data set ``data`` (all of it, or the test split train used: the
    data set's own, or the held-out 25% for ``seed``, by default the seed stored in the model);
    with ``plots_folder``, also the pictures of :func:`draw_evaluation` there."""
    if plots_folder is not None and not os.path.isdir(plots_folder):
        raise OSError(f"--plots {plots_folder}: no such folder")
    est = load_model(model)
    classifier = hasattr(est, "classes_")
    task = "classification" if classifier else "regression"
    reading: dict[str, Any] = {}
    if source_kind(data) == "images":  # read as training read them: the model's size, channels
        C, H, W = (int(s) for s in est.image_shape_)
        reading = {"image_size": (H, W), "channels": C if C in (1, 3) else None}
    X, y, info = load_dataset(data, task=task, **reading)
    checked_targets(est, y, info.source)
    metrics: dict[str, Any] = {"data": info.name, "split": split}
    if split == "test":
        if info.n_test is None:  # a held-out split: the seed decides which samples
            seed, metrics["seed_from"] = split_seed(est, seed, model)
            metrics["seed"] = seed
        try:
            _, X, _, y, _ = split_dataset(X, y, info, 0 if seed is None else seed)
        except DatasetError:
            raise
        except ValueError as exc:  # scikit-learn's train_test_split refusing a tiny data set
            raise InputError(
                f"--data {data}: cannot hold out a test split of its {len(y)} samples: {exc}"
            ) from exc
    X = checked_samples(est, X, info.source)
    metrics["n_samples"] = int(len(y))
    if classifier:
        from sklearn.metrics import accuracy_score, f1_score, log_loss

        predicted = est.predict(X)
        metrics["accuracy"] = float(accuracy_score(y, predicted))
        metrics["f1_macro"] = float(f1_score(y, predicted, average="macro", zero_division=0))
        if np.isin(y, est.classes_).all():
            proba = est.predict_proba(X)
            metrics["log_loss"] = float(log_loss(y, proba, labels=est.classes_))
    else:
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        predicted = est.predict(X)
        y = y.reshape(predicted.shape)
        metrics["r2"] = float(r2_score(y, predicted))
        metrics["mse"] = float(mean_squared_error(y, predicted))
        metrics["mae"] = float(mean_absolute_error(y, predicted))
    if plots_folder is not None:
        draw_evaluation(plots_folder, est, X, y, info)
    return metrics
