"""Pictures of a training run: the loss curves, the learned kernels, one sample's feature maps,
and of a model on held-out data: the confusion matrix, the misclassified images, predicted
against true values.

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


def plot_filters(path: str | os.PathLike, kernel: np.ndarray, title: str | None = None) -> None:
    """Draw the learned kernels ``(F, C, k, k)`` as a grid to a PNG at ``path``, under ``title``
    (default: "learned kxk kernels").

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
    fig.suptitle(title or f"learned {kernel.shape[2]}x{kernel.shape[3]} kernels")
    _save(fig, path)


# Feature maps shown per layer of feature_maps.png; a layer with more shows its first ones.
MAX_MAPS_PER_LAYER = 32


def plot_feature_maps(
    path: str | os.PathLike,
    image: np.ndarray,
    feature_maps: np.ndarray | Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
) -> None:
    """Draw one input ``image`` ``(C, H, W)`` and what the conv layers make of it to a PNG at
    ``path``: the input's channels in the first row, then one row per layer of
    ``feature_maps``, a sequence of ``(F, H', W')`` arrays (one per conv layer, each after its
    ReLU where one follows; a single ``(F, H', W')`` array is one layer), titled by ``titles``
    (one per layer; default ``conv layer 1``, ...).

    A row holds at most :data:`FILTERS_PER_ROW` maps side by side and wraps into further lines;
    a layer of more than :data:`MAX_MAPS_PER_LAYER` maps shows its first ones (its title says
    so). Every map is scaled to its own range. Each row is one image (a mosaic), so that many
    maps do not cost seconds of layout.
    """
    image = np.asarray(image, dtype=np.float64)
    if isinstance(feature_maps, np.ndarray) or (
        isinstance(feature_maps, Sequence) and feature_maps and np.ndim(feature_maps[0]) == 2
    ):
        feature_maps = [feature_maps]  # one layer
    layers = [np.asarray(maps, dtype=np.float64) for maps in feature_maps]
    if image.ndim != 3 or not layers or any(m.ndim != 3 or m.size == 0 for m in layers):
        raise ValueError(
            f"image must be (C, H, W) and feature_maps one or more non-empty (F, H', W') arrays, "
            f"got shapes {image.shape} and {[m.shape for m in layers]}"
        )
    titles = [f"conv layer {i + 1}" for i in range(len(layers))] if titles is None else titles
    if len(titles) != len(layers):
        raise ValueError(f"titles must give one title per layer ({len(layers)}), got {len(titles)}")
    shown = [m[:MAX_MAPS_PER_LAYER] for m in layers]
    n_cols = min(max(image.shape[0], *(m.shape[0] for m in shown)), FILTERS_PER_ROW)
    rows = [_mosaic(image, n_cols)] + [_mosaic(m, n_cols) for m in shown]
    names = ["input" + (f", {image.shape[0]} channels" if image.shape[0] > 1 else "")]
    for title, maps, all_maps in zip(titles, shown, layers):
        F, H, W = all_maps.shape
        more = f", the first {len(maps)}" if len(maps) < F else ""
        names.append(f"{title}: {F} maps {H}x{W}{more}")
    # Every row as wide as the figure: its height follows from its mosaic's proportions.
    ratios = [row.shape[0] / row.shape[1] for row in rows]
    width = 0.4 + 1.3 * n_cols
    fig = _figure(width, 0.5 + sum(0.35 + (width - 0.4) * r for r in ratios))
    axes = fig.subplots(len(rows), 1, squeeze=False, height_ratios=ratios)[:, 0]
    import matplotlib

    for k, (ax, row, name) in enumerate(zip(axes, rows, names)):
        cmap = matplotlib.colormaps["gray" if k == 0 else "viridis"].with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(row), cmap=cmap, vmin=0.0, vmax=1.0,
                  interpolation="nearest")  # fmt: skip
        ax.set_title(name, fontsize=8, loc="left")
        ax.axis("off")
    fig.suptitle("one test sample through the conv layers")
    _save(fig, path)


def _mosaic(maps: np.ndarray, n_cols: int) -> np.ndarray:
    """``(F, H, W)`` maps in lines of ``n_cols``, each scaled to [0, 1] by its own range, as one
    ``(lines * (H + gap) - gap, n_cols * (W + gap) - gap)`` image with NaN between them."""
    F, H, W = maps.shape
    gap = max(1, round(W / 8))
    lines = math.ceil(F / n_cols)
    mosaic = np.full((lines * (H + gap) - gap, n_cols * (W + gap) - gap), np.nan)
    for f in range(F):
        r, c = (f // n_cols) * (H + gap), (f % n_cols) * (W + gap)
        lo, hi = float(maps[f].min()), float(maps[f].max())
        mosaic[r : r + H, c : c + W] = (maps[f] - lo) / (hi - lo) if hi > lo else 0.0
    return mosaic


def plot_confusion(
    path: str | os.PathLike,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[Any],
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw the confusion matrix of ``y_true`` against ``y_pred`` (both ``(N,)``) to a PNG at
    ``path``: one row per true class, one column per predicted class, in the order of
    ``labels`` ``(K,)``, shown as ``names`` (default: the labels as text). Returns the counts
    ``(K, K)``."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    labels = np.asarray(labels)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty and of one length, got shapes "
            f"{y_true.shape} and {y_pred.shape}"
        )
    names = [str(v) for v in labels] if names is None else [str(v) for v in names]
    if len(names) != len(labels):
        raise ValueError(f"names must give one name per label ({len(labels)}), got {len(names)}")
    K = len(labels)
    index = {label: k for k, label in enumerate(labels.tolist())}
    counts = np.zeros((K, K), dtype=np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
    side = min(2.5 + 0.55 * K, 14.0)
    fig = _figure(side + 0.5, side)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    if K <= 30:  # numbers in cells are unreadable beyond that
        threshold = counts.max() / 2
        for i in range(K):
            for j in range(K):
                colour = "white" if counts[i, j] > threshold else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color=colour)  # fmt: skip
    else:  # the colours alone tell the counts: give their scale
        fig.colorbar(image, ax=ax, shrink=0.8)
    long_names = max(map(len, names)) > 3  # slanted, so that they do not overlap
    ax.set_xticks(range(K), names, fontsize=8, rotation=45 if long_names else 0,
                  ha="right" if long_names else "center")  # fmt: skip
    ax.set_yticks(range(K), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"confusion matrix\n{counts.sum()} samples, accuracy {accuracy:.3f}")
    _save(fig, path)
    return counts


def _scaled(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W, 3)`` in [0, 1], scaled to the image's own range (gray images
    repeated across the three channels)."""
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.repeat(scaled, 3 // scaled.shape[0], axis=0).transpose(1, 2, 0)


def plot_errors(
    path: str | os.PathLike,
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    names: dict[Any, str] | None = None,
    max_images: int = 36,
) -> int:
    """Draw a grid of the misclassified ``images`` ``(N, C, H, W)`` (``C`` 1 or 3; the first
    ``max_images`` where ``y_true != y_pred``, both ``(N,)``) with their true and predicted
    labels (shown as ``names[label]`` when given) to a PNG at ``path``. Each image is scaled
    to its own range. Returns how many images were misclassified (the file says so when none
    were)."""
    images = np.asarray(images, dtype=np.float64)
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if (
        images.ndim != 4
        or images.shape[1] not in (1, 3)
        or images.shape[0] != y_true.shape[0]
        or y_true.shape != y_pred.shape
    ):
        raise ValueError(
            f"images must be (N, C, H, W) with C 1 or 3 and one label each in y_true and "
            f"y_pred, got shapes {images.shape}, {y_true.shape} and {y_pred.shape}"
        )
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"max_images must be an integer >= 1, got {max_images!r}")
    wrong = np.flatnonzero(y_true != y_pred)
    shown = wrong[:max_images]
    name = (lambda v: str(v)) if names is None else (lambda v: str(names.get(v, v)))
    n_cols = min(max(len(shown), 1), 6)
    n_rows = max(1, -(-len(shown) // n_cols))
    # One mosaic in one axes: as many subplots would take seconds to lay out.
    H, W = images.shape[2:]
    gap, label = max(1, W // 8), max(2, round(0.4 * H))  # between columns; above each, for text
    mosaic = np.ones((n_rows * (H + label), n_cols * (W + gap) + gap, 3))
    for k, i in enumerate(shown):
        r, c = label + (k // n_cols) * (H + label), gap + (k % n_cols) * (W + gap)
        mosaic[r : r + H, c : c + W] = _scaled(images[i])
    fig = _figure(0.4 + 1.6 * n_cols, 0.6 + 1.6 * n_rows * (H + label) / (W + gap))
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    if len(shown) == 0:
        ax.text(mosaic.shape[1] / 2, mosaic.shape[0] / 2, "no misclassified images",
                ha="center", va="center")  # fmt: skip
    for k, i in enumerate(shown):
        r, c = label + (k // n_cols) * (H + label), gap + (k % n_cols) * (W + gap)
        ax.text(c + W / 2, r - 0.5, f"true {name(y_true[i].item())}\n"
                f"predicted {name(y_pred[i].item())}", ha="center", va="bottom",
                fontsize=7)  # fmt: skip
    more = f" (first {len(shown)})" if len(wrong) > len(shown) else ""
    fig.suptitle(f"{len(wrong)} of {len(y_true)} images misclassified{more}")
    _save(fig, path)
    return int(len(wrong))


def plot_predicted_vs_true(path: str | os.PathLike, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    """Draw predicted against true values (``(N,)`` or ``(N, n_outputs)``, one colour per
    output) with the line of perfect predictions, to a PNG at ``path``."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if (
        y_true.size == 0
        or y_true.reshape(len(y_true), -1).shape != y_pred.reshape(len(y_pred), -1).shape
    ):
        raise ValueError(
            f"y_true and y_pred must be non-empty and of one shape, got {y_true.shape} and "
            f"{y_pred.shape}"
        )
    true2, pred2 = y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1)
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot()
    for k in range(true2.shape[1]):
        label = f"output {k}" if true2.shape[1] > 1 else None
        ax.scatter(true2[:, k], pred2[:, k], s=10, alpha=0.6, label=label)
    lo = float(min(true2.min(), pred2.min()))
    hi = float(max(true2.max(), pred2.max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="predicted = true")
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    ax.set_title(f"predicted against true values, {len(true2)} samples")
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)
