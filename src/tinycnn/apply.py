"""``tinycnn predict`` and ``tinycnn evaluate``: a trained model applied to data from files."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._files import check_output, write_npy
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
    # Before any work: an output that cannot be written, or that is the model or the input.
    check_output(output, {"--model": model, "--input": source}, name="--output")
    est = load_model(model)
    X = checked_samples(est, read_array_file(source, member="X"), source)
    predictions = est.predict(X)
    write_npy(output, predictions)
    print(f"wrote {len(predictions)} predictions of shape {predictions.shape} to {output}")
    return 0


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


def evaluate_command(model: str, data: str, split: str, seed: int | None) -> dict[str, Any]:
    """Metrics of ``model`` on data set ``data`` (all of it, or train's held-out test split)."""
    est = load_model(model)
    classifier = hasattr(est, "classes_")
    task = "classification" if classifier else "regression"
    X, y, info = load_dataset(data, task=task)
    checked_targets(est, y, info.source)
    metrics: dict[str, Any] = {"data": info.name, "split": split}
    if split == "test":
        seed, source = split_seed(est, seed, model)
        _, X, _, y = held_out_split(X, y, task, seed)
        metrics["seed"] = seed
        metrics["seed_from"] = source
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
    return metrics
