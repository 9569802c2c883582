"""Deterministic synthetic images: ``shapes`` (4 classes) and ``shapes-size`` (a regression).

Both are generated from a fixed seed, so a name always means the same data on every machine.
"""

from __future__ import annotations

import numpy as np

SHAPE_NAMES = ("square", "cross", "disk", "bar")
# Synthetic sets: fixed size and seed, so a name always means the same data.
SYNTHETIC_SIZE = 12
SYNTHETIC_SAMPLES = 800
SYNTHETIC_SEED = 0
SYNTHETIC_NOISE = 0.15


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
