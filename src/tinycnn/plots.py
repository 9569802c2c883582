"""Pictures of a training run: the loss curves, the learned kernels, one sample's feature maps.

Needs matplotlib (``pip install 'tinycnn[plot]'``), imported only when a picture is drawn. The
figures are built with matplotlib's object-oriented API and rendered by its Agg (PNG) canvas, so
no GUI backend is touched and the caller's pyplot state is left alone. Every file is written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._files import atomic_write

DPI = 100


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "drawing plots needs matplotlib: pip install 'tinycnn[plot]' (or 'tinycnn[cli]')"
        ) from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Any, path: str | os.PathLike) -> None:
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=DPI)


def plot_loss(
    path: str | os.PathLike,
    train_loss: Sequence[float],
    validation_loss: Sequence[float] | None = None,
    *,
    loss_name: str = "loss",
    validation_label: str = "validation",
) -> None:
    """Draw the training loss per epoch (and the validation loss, if given) to a PNG at ``path``.

    ``train_loss`` ``(epochs,)``; ``validation_loss`` ``(epochs,)`` or ``None``. Epochs are
    numbered from 1. A log scale is used when every value is positive.
    """
    train = np.asarray(train_loss, dtype=np.float64).ravel()
    if train.size == 0:
        raise ValueError("train_loss must hold at least one epoch's loss, got an empty sequence")
    fig = _figure(6.0, 4.0)
    from matplotlib.ticker import MaxNLocator

    ax = fig.add_subplot()
    epochs = np.arange(1, train.size + 1)
    ax.plot(epochs, train, marker="o" if train.size < 30 else None, ms=3, label="training")
    curves = [train]
    if validation_loss is not None:
        valid = np.asarray(validation_loss, dtype=np.float64).ravel()
        if valid.size != train.size:
            raise ValueError(
                f"validation_loss must have one value per epoch ({train.size}), got {valid.size}"
            )
        ax.plot(epochs, valid, marker="o" if valid.size < 30 else None, ms=3,
                label=validation_label)  # fmt: skip
        curves.append(valid)
    values = np.concatenate(curves)
    if np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss_name)
    ax.set_title("loss per epoch")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)


# Filters per row of filters.png: more wrap into further rows.
FILTERS_PER_ROW = 8


def plot_filters(path: str | os.PathLike, kernel: np.ndarray) -> None:
    """Draw the learned kernels ``(F, C, k, k)`` as a grid to a PNG at ``path``.

    One column per filter, at most :data:`FILTERS_PER_ROW` across (more filters wrap into
    further rows), and one row per input channel within each row of filters; a shared diverging
    colour scale centred on 0, so the sign and relative strength of every weight can be read off.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 4 or kernel.size == 0:
        raise ValueError(f"kernel must be a non-empty (F, C, k, k) array, got shape {kernel.shape}")
    F, C = kernel.shape[:2]
    n_cols = min(F, FILTERS_PER_ROW)
    filter_rows = math.ceil(F / n_cols)
    limit = float(np.abs(kernel).max()) or 1.0
    fig = _figure(1.0 + 1.1 * n_cols, 0.6 + 1.1 * C * filter_rows)
    axes = fig.subplots(C * filter_rows, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    image = None
    for f in range(F):
        for c in range(C):
            ax = axes[(f // n_cols) * C + c, f % n_cols]
            ax.axis("on")
            image = ax.imshow(kernel[f, c], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_title(f"filter {f}", fontsize=8)
            if f % n_cols == 0 and C > 1:
                ax.set_ylabel(f"channel {c}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(f"learned {kernel.shape[2]}x{kernel.shape[3]} kernels")
    _save(fig, path)


def plot_feature_maps(path: str | os.PathLike, image: np.ndarray, feature_maps: np.ndarray) -> None:
    """Draw one input ``image`` ``(C, H, W)`` and its ``feature_maps`` ``(F, H', W')`` (the conv
    layer's output after ReLU) to a PNG at ``path``; the input's channels come first."""
    image = np.asarray(image, dtype=np.float64)
    maps = np.asarray(feature_maps, dtype=np.float64)
    if image.ndim != 3 or maps.ndim != 3:
        raise ValueError(
            f"image must be (C, H, W) and feature_maps (F, H', W'), got shapes "
            f"{image.shape} and {maps.shape}"
        )
    C, F = image.shape[0], maps.shape[0]
    n_cols = min(max(C, F), 8)
    input_rows, map_rows = math.ceil(C / n_cols), math.ceil(F / n_cols)
    fig = _figure(0.4 + 1.3 * n_cols, 0.6 + 1.4 * (input_rows + map_rows))
    axes = fig.subplots(input_rows + map_rows, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    # The input's channels fill the first row(s), the feature maps the rows below.
    for c in range(C):
        ax = axes[c // n_cols, c % n_cols]
        ax.imshow(image[c], cmap="gray")
        ax.set_title(f"input, channel {c}" if C > 1 else "input", fontsize=8)
    for f in range(F):
        ax = axes[input_rows + f // n_cols, f % n_cols]
        ax.imshow(maps[f], cmap="viridis", vmin=0.0)
        ax.set_title(f"filter {f}", fontsize=8)
    fig.suptitle("one sample through the conv layer (after ReLU)")
    _save(fig, path)
