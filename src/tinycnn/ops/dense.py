"""The fully connected layer ``out = x @ W + b``."""

from __future__ import annotations

import numpy as np


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` ``(N, D)``, ``W`` ``(D, O)``, ``b`` ``(O,)`` -> ``out`` ``(N, O)``;
    the cache is ``x``."""
    return x @ W + b, x


def dense_backward(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Given ``dout`` ``(N, O)``: ``dx = dout @ W.T`` ``(N, D)``, ``dW = x.T @ dout`` ``(D, O)``,
    ``db = dout.sum(0)`` ``(O,)``."""
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)
