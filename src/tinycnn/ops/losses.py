"""Losses, each returning ``(loss, dpred)`` so the value and its gradient cannot drift apart.

``n_total`` lets a chunk of a larger batch contribute its share: the mean is over ``n_total``
samples (MSE: ``n_total * O`` entries), not over the chunk. ``out``, if given, is an array of
``pred``'s shape that receives the gradient (a reused buffer) and is returned as ``dpred``.
"""

from __future__ import annotations

import numpy as np


def mse_loss(
    pred: np.ndarray,
    target: np.ndarray,
    n_total: int | None = None,
    out: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Mean squared error over all ``N*O`` entries of ``pred``/``target`` ``(N, O)``.

    ``loss = sum((pred - target)**2) / (N*O)``; ``dpred = 2 * (pred - target) / (N*O)``, where
    ``N`` is ``n_total`` if given (chunked evaluation) else ``pred.shape[0]``.
    """
    n = pred.shape[0] if n_total is None else n_total
    denom = n * pred.shape[1]
    diff = np.subtract(pred, target, out=out)
    loss = float(np.vdot(diff, diff)) / denom
    diff *= 2.0 / denom
    return loss, diff


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` ``(N, K)``, stable for any magnitude (max subtracted)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(logits))`` ``(N, K)`` computed without overflow or ``log(0)``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


def softmax_cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    n_total: int | None = None,
    out: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Cross-entropy of ``softmax(logits)`` against target distributions, averaged over samples.

    ``logits`` and ``target`` are ``(N, K)``; target rows are probability vectors (one-hot or soft).
    ``loss = -sum(target * log_softmax(logits)) / N``;
    ``dlogits = (softmax(logits) * target.sum(1) - target) / N`` (``softmax - target`` for rows
    that sum to 1).
    """
    n = logits.shape[0] if n_total is None else n_total
    logp = log_softmax(logits)
    loss = -float(np.vdot(target, logp)) / n
    grad = np.exp(logp, out=out)
    grad *= target.sum(axis=1, keepdims=True)
    grad -= target
    grad /= n
    return loss, grad
