"""The public deep-ml #130 contract, ``train_simple_cnn_with_backprop``, over the same engine.

deep-ml's layout differs from the engine's; this module converts at its edge and nowhere else:

=============  ===========================  ==================================
array          deep-ml                      engine (PyTorch layout)
=============  ===========================  ==================================
images         ``(n, H, W)``                ``(n, 1, H, W)``
kernel         ``W_conv (k, k, F)``         ``kernel (F, 1, k, k)``
dense weights  ``W_dense (H'*W'*F, K)``     ``W_fc (F*H'*W', K)``: rows in
               rows in (H', W', F) order    (F, H', W') order
=============  ===========================  ==================================

Training is softmax cross-entropy with per-sample SGD in data order (batch size 1, no shuffle).
"""

from __future__ import annotations

import numpy as np

from ._validation import check_int, check_positive_float, check_real_array
from .network import ConvNetParams, ConvNetSpec, check_fits_in_memory
from .optim import SGD
from .training import train


def _to_engine(W_conv, b_conv, W_dense, b_dense, out_h, out_w):
    k, _, F = W_conv.shape
    kernel = W_conv.transpose(2, 0, 1).reshape(F, 1, k, k).copy()
    K = W_dense.shape[1]
    W_fc = W_dense.reshape(out_h, out_w, F, K).transpose(2, 0, 1, 3).reshape(-1, K).copy()
    return ConvNetParams(kernel, b_conv.copy(), W_fc, b_dense.copy())


def _from_engine(params: ConvNetParams, out_h, out_w):
    F, _, k, _ = params.kernel.shape
    W_conv = params.kernel.reshape(F, k, k).transpose(1, 2, 0).copy()
    K = params.W_fc.shape[1]
    W_dense = params.W_fc.reshape(F, out_h, out_w, K).transpose(1, 2, 0, 3).reshape(-1, K).copy()
    return W_conv, params.bias_conv.copy(), W_dense, params.b_fc.copy()


def train_simple_cnn_with_backprop(
    X: np.ndarray,
    y: np.ndarray,
    epochs: int,
    learning_rate: float,
    kernel_size: int = 3,
    num_filters: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train conv(``num_filters`` of ``kernel_size``, stride 1, no padding) -> ReLU -> dense ->
    softmax with cross-entropy, one sample at a time in data order.

    ``X`` is ``(n, H, W)``; ``y`` is ``(n, K)`` with rows that are probability vectors (one-hot or
    soft). Draws, from NumPy's global random state and in this order only:
    ``W_conv = randn(k, k, F) * 0.01``, ``W_dense = randn(H'*W'*F, K) * 0.01`` with
    ``H' = H - k + 1``, ``W' = W - k + 1``; biases start at 0.

    Returns ``(W_conv (k, k, F), b_conv (F,), W_dense (H'*W'*F, K), b_dense (K,))``, float64.
    """
    X = check_real_array("X", X, ndim=3)
    n, H, W = X.shape
    y = check_real_array("y", y, ndim=2)
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} rows but X has {n} samples; they must match")
    if (y < 0).any() or not np.allclose(y.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("y rows must be probability vectors (non-negative, summing to 1)")
    epochs = check_int("epochs", epochs, minimum=1)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    k = check_int("kernel_size", kernel_size, minimum=1)
    F = check_int("num_filters", num_filters, minimum=1)
    if k > H or k > W:
        raise ValueError(f"kernel_size {k} is larger than the {H}x{W} images in X")
    out_h, out_w = H - k + 1, W - k + 1
    K = y.shape[1]
    spec = ConvNetSpec(1, H, W, F, k, 1, 0, K)
    check_fits_in_memory(spec, np.float64, filters_name="num_filters")
    W_conv = np.random.randn(k, k, F) * 0.01
    b_conv = np.zeros(F)
    W_dense = np.random.randn(out_h * out_w * F, K) * 0.01
    b_dense = np.zeros(K)
    params = _to_engine(W_conv, b_conv, W_dense, b_dense, out_h, out_w)
    train(
        spec.sequential(),
        params,
        X.reshape(n, 1, H, W),
        y,
        SGD(learning_rate),
        epochs,
        loss="softmax_cross_entropy",
        batch_size=1,
    )
    return _from_engine(params, out_h, out_w)
