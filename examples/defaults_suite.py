"""The suite of small-image tasks the estimators' defaults were chosen on (docs/defaults.md).

    python examples/defaults_suite.py                      # the table; several minutes on 2 cores
    python examples/defaults_suite.py --write table.md     # also write the table to a file
    python examples/defaults_suite.py --quick              # tiny data, 2 epochs: the plumbing only
    python examples/defaults_suite.py --tasks digits,position --layers conv16k3p1-relu-max2
                                                          # try a candidate stack on some tasks

Seven tasks, each with a fixed training and held-out part (fixed seeds throughout):

* ``digits``: scikit-learn's ``load_digits`` (1x8x8, pixels / 16), stratified 25% held out;
* ``mnist-5k``: 5000 real MNIST digits (1x28x28, pixels / 255), its own split, 4000 / 1000;
* ``position``: a soft blob in 16x16 noise, the target its (row, col) centre (regression, R^2);
* ``count``: 0 to 5 small blobs in 16x16 noise, the target their number (regression, R^2);
* ``shapes``: tinycnn's four noisy 12x12 shapes (a square outline, a cross, a disk, a bar);
* ``shapes-size``: tinycnn's noisy disks, the target the radius (regression, R^2);
* ``photo-crops``: 3x12x12 colour crops (halved resolution) of scikit-learn's two sample
  photos, four classes: which photo, and its left or right half.

Three models see exactly the same arrays: ``CNNClassifier``/``CNNRegressor`` at their defaults
(``random_state=0``), scikit-learn's ``MLPClassifier``/``MLPRegressor`` at their defaults
(``random_state=0``) but ``max_iter=2000`` so that they stop by their own convergence rule and
not by the cap, and the estimators' former default network, one conv layer of 16 5x5 filters
(``n_filters=16``), otherwise at today's defaults. Prints a Markdown table: the held-out score
(accuracy, or R^2 averaged over the outputs) and the seconds ``fit`` took.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor

import tinycnn
from tinycnn.datasets import load_dataset, split_dataset

MLP_MAX_ITER = 2000


class Split(NamedTuple):
    """A task's arrays: images ``(N, C, H, W)`` scaled to about unit range, targets ``(N,)``
    (class labels) or ``(N, n_outputs)`` (regression)."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


class Task(NamedTuple):
    name: str
    kind: str  # "classification" or "regression"
    describe: str
    load: Callable[[bool], Split]  # quick -> the task's arrays


def _held_out(X: np.ndarray, y: np.ndarray, classify: bool) -> Split:
    """A 25% held-out part, stratified for classes, ``random_state=0``."""
    parts = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y if classify else None)
    return Split(*parts)


def _quick(split: Split, n_train: int = 60, n_test: int = 40) -> Split:
    """Evenly spaced samples of each part (mnist-5k's parts are sorted by digit)."""
    train = np.linspace(0, len(split.y_train) - 1, n_train).astype(int)
    test = np.linspace(0, len(split.y_test) - 1, n_test).astype(int)
    return Split(split.X_train[train], split.X_test[test],
                 split.y_train[train], split.y_test[test])  # fmt: skip


def _blob(rows: np.ndarray, cols: np.ndarray, r0: float, c0: float, sigma: float) -> np.ndarray:
    """A Gaussian bump of height 1 centred at ``(r0, c0)``, on the grid ``rows, cols``."""
    return np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * sigma**2))


def make_position(n: int = 2000, size: int = 16, noise: float = 0.2, seed: int = 1) -> tuple:
    """``X`` ``(n, 1, size, size)``: one blob (sigma 1.5 pixels) at a uniform random centre in
    the image, plus Gaussian noise of std ``noise``; ``y`` ``(n, 2)`` the centre's (row, col)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    y = rng.uniform(1.5, size - 2.5, (n, 2))
    X = np.stack([_blob(rows, cols, r, c, 1.5) for r, c in y])[:, None]
    return X + rng.normal(0.0, noise, X.shape), y


def make_count(n: int = 2000, size: int = 16, noise: float = 0.25, seed: int = 2) -> tuple:
    """``X`` ``(n, 1, size, size)``: 0 to 5 small blobs (sigma 0.8) at random centres at least
    3 pixels apart, plus Gaussian noise of std ``noise``; ``y`` ``(n,)`` their number."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    y = rng.integers(0, 6, n).astype(np.float64)
    X = np.zeros((n, 1, size, size))
    for i, count in enumerate(y.astype(int)):
        centres: list[np.ndarray] = []
        while len(centres) < count:
            c = rng.uniform(1, size - 2, 2)
            if all(np.hypot(*(c - o)) >= 3 for o in centres):
                centres.append(c)
        for r0, c0 in centres:
            X[i, 0] += _blob(rows, cols, r0, c0, 0.8)
    return X + rng.normal(0.0, noise, X.shape), y


def make_photo_crops(n: int = 2000, size: int = 12, seed: int = 3) -> tuple:
    """``X`` ``(n, 3, size, size)``: crops of scikit-learn's two sample photos (china, flower)
    at half resolution (2x2 means), pixels / 255; ``y`` ``(n,)``: 2 * photo + (1 if the crop's
    centre is in the photo's right half)."""
    from sklearn.datasets import load_sample_images

    photos = []
    for image in load_sample_images().images:  # (427, 640, 3) uint8 each
        h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        half = image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)) / 255
        photos.append(half.transpose(2, 0, 1))  # (3, H, W)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    rng.shuffle(y)
    X = np.empty((n, 3, size, size))
    for i, label in enumerate(y):
        photo = photos[label // 2]
        H, W = photo.shape[1:]
        r = rng.integers(0, H - size + 1)
        lo, hi = (0, W // 2 - size // 2) if label % 2 == 0 else (W // 2 - size // 2, W - size + 1)
        c = rng.integers(lo, hi)
        X[i] = photo[:, r : r + size, c : c + size]
    return X, y


def _digits(quick: bool) -> Split:
    X, y, _ = load_dataset("digits")
    split = _held_out(X.reshape(-1, 1, 8, 8) / 16, y, classify=True)
    return _quick(split) if quick else split


def _mnist(quick: bool) -> Split:
    X, y, info = load_dataset("mnist-5k")
    X_train, X_test, y_train, y_test, record = split_dataset(X / 255, y, info, seed=0)
    assert (record["n_train"], record["n_test"]) == (4000, 1000)
    split = Split(X_train, X_test, y_train, y_test)
    return _quick(split) if quick else split


def _synthetic(make: Callable[..., tuple], classify: bool) -> Callable[[bool], Split]:
    def load(quick: bool) -> Split:
        X, y = make(n=120) if quick else make()
        return _held_out(X, y, classify)

    return load


def _builtin(name: str, classify: bool) -> Callable[[bool], Split]:
    def load(quick: bool) -> Split:
        X, y, _ = load_dataset(name)
        split = _held_out(X, y, classify)
        return _quick(split) if quick else split

    return load


TASKS = (
    Task("digits", "classification", "load_digits, 1x8x8, 1347 / 450",  _digits),
    Task("mnist-5k", "classification", "real MNIST, 1x28x28, 4000 / 1000", _mnist),
    Task("position", "regression", "(row, col) of a blob in noise, 1x16x16, 1500 / 500",
         _synthetic(make_position, classify=False)),
    Task("count", "regression", "number of blobs (0-5) in noise, 1x16x16, 1500 / 500",
         _synthetic(make_count, classify=False)),
    Task("shapes", "classification", "4 noisy shapes, 1x12x12, 600 / 200",
         _builtin("shapes", classify=True)),
    Task("shapes-size", "regression", "a noisy disk's radius, 1x12x12, 600 / 200",
         _builtin("shapes-size", classify=False)),
    Task("photo-crops", "classification", "which sample photo and half, 3x12x12, 1500 / 500",
         _synthetic(make_photo_crops, classify=True)),
)  # fmt: skip


def models(kind: str, quick: bool, layers: str | None) -> dict[str, Callable[[], object]]:
    """The three models of a row, each a factory of a fresh unfitted estimator."""
    classify = kind == "classification"
    cnn = tinycnn.CNNClassifier if classify else tinycnn.CNNRegressor
    mlp = MLPClassifier if classify else MLPRegressor
    cap = {"max_iter": 2} if quick else {}
    new = {"layers": layers} if layers else {}
    return {
        "tinycnn default": lambda: cnn(random_state=0, **cap, **new),
        "MLP default": lambda: mlp(random_state=0, max_iter=2 if quick else MLP_MAX_ITER),
        "old default (n_filters=16)": lambda: cnn(n_filters=16, random_state=0, **cap),
    }


def run_task(task: Task, quick: bool, layers: str | None, skip_old: bool) -> list[tuple]:
    """``[(model, score, seconds, epochs)]`` for the three models on ``task``."""
    split = task.load(quick)
    results = []
    for name, make in models(task.kind, quick, layers).items():
        if skip_old and name.startswith("old"):
            continue
        est = make()
        X_train, X_test = split.X_train, split.X_test
        if name.startswith("MLP"):
            X_train, X_test = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning in --quick
            start = time.perf_counter()
            est.fit(X_train, split.y_train)
            seconds = time.perf_counter() - start
        results.append((name, est.score(X_test, split.y_test), seconds, est.n_iter_))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and 2 epochs")
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")
    parser.add_argument("--layers", help="a candidate stack to train instead of the default")
    parser.add_argument("--skip-old", action="store_true", help="leave out the old default")
    parser.add_argument("--write", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    names = [t.name for t in TASKS]
    chosen = names if args.tasks is None else args.tasks.split(",")
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(names)}")

    lines = [
        "| task | kind | metric | " + " | ".join(
            f"{m} | s" for m in models("regression", args.quick, None)
            if not (args.skip_old and m.startswith("old"))
        ) + " |",
    ]  # fmt: skip
    lines.append("|" + "---|" * (lines[0].count("|") - 1))
    print(lines[0], flush=True)
    print(lines[1], flush=True)
    for task in TASKS:
        if task.name not in chosen:
            continue
        metric = "accuracy" if task.kind == "classification" else "R^2"
        cells = [task.name, task.kind, metric]
        for _, score, seconds, epochs in run_task(task, args.quick, args.layers, args.skip_old):
            cells += [f"{score:.3f}", f"{seconds:.1f} ({epochs} ep)"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    footer = (
        f"\n{'candidate layers=' + args.layers if args.layers else 'defaults'}; "
        f"{date.today().isoformat()}, {platform.machine()}, {platform.python_version()}, "
        f"NumPy {np.__version__}, tinycnn {tinycnn.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print(footer)
    if args.write:
        from tinycnn._files import write_bytes

        write_bytes(args.write, ("\n".join(lines) + "\n" + footer + "\n").encode())


if __name__ == "__main__":
    main()
