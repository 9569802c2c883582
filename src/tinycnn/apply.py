"""``tinycnn predict`` and ``tinycnn evaluate``: a trained model applied to data from files."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._files import write_npy
from .datasets import DatasetError, held_out_split, load_dataset, read_array_file


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
        images = est._images(X)
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


def predict_command(model: str, source: str, output: str) -> int:
    """Write ``model``'s predictions for the samples in ``source`` to ``output`` (.npy)."""
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise OSError(f"--output {output}: the folder {folder} does not exist")
    est = load_model(model)
    X = checked_samples(est, read_array_file(source, member="X"), source)
    predictions = est.predict(X)
    write_npy(output, predictions)
    print(f"wrote {len(predictions)} predictions of shape {predictions.shape} to {output}")
    return 0


def evaluate_command(model: str, data: str, split: str, seed: int) -> dict[str, Any]:
    """Metrics of ``model`` on data set ``data`` (all of it, or train's held-out test split)."""
    est = load_model(model)
    classifier = hasattr(est, "classes_")
    task = "classification" if classifier else "regression"
    X, y, info = load_dataset(data, task=task)
    if split == "test":
        _, X, _, y = held_out_split(X, y, task, seed)
    X = checked_samples(est, X, info.source)
    metrics: dict[str, Any] = {"data": info.name, "split": split, "n_samples": int(len(y))}
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
    return metrics
