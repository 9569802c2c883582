"""``train_cnn`` and ``predict_cnn``: the seed problem's contract, as a thin builder of its stack.

The seed's network is the stack ``[Conv2d(n_filters, kernel_size, stride, pad), ReLU(),
Flatten(), Dense(O)]`` (:meth:`tinycnn.network.ConvNetSpec.sequential`), trained by
``training.train`` like any other.

``train_cnn(X, y, epochs, lr)`` returns what the seed's reference returns (see SEED.md): the same
draws from NumPy's global random state in the same order, full-batch gradient descent on the mean
squared error, and ``(kernel, bias_conv, W_fc, b_fc, loss)`` with ``loss`` from the last forward
pass, before the last update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import (
    check_conv_geometry,
    check_float_dtype,
    check_int,
    check_positive_float,
    check_real_array,
)
from .errors import DivergenceError
from .network import ConvNetParams, ConvNetSpec, init_params_seed, predict
from .optim import SGD
from .training import all_finite, train


def _targets(y: Any, n: int, dtype) -> np.ndarray:
    y = check_real_array("y", y, ndim=(1, 2), dtype=dtype)
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} rows but X has {n} samples; they must match")
    if y.ndim == 2 and y.shape[1] == 0:
        raise ValueError(f"y must have at least one output column, got shape {y.shape}")
    return y.reshape(n, -1)


def train_cnn(
    X: np.ndarray,
    y: np.ndarray,
    epochs: int = 100,
    lr: float = 0.01,
    *,
    n_filters: int = 1,
    kernel_size: int = 3,
    stride: int = 1,
    pad: int = 0,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Train conv(``n_filters`` of ``kernel_size``) -> ReLU -> dense on ``X``, ``y`` with MSE.

    Parameters
    ----------
    X : (N, C, H, W) real array.
    y : (N,) or (N, O) real array; ``O = y.shape[1]`` if 2-D else 1.
    epochs : full-batch gradient-descent steps (integer >= 1).
    lr : learning rate (finite, > 0).
    n_filters, kernel_size, stride, pad : the conv layer; ``out_h = (H + 2*pad - k)//stride + 1``.
    dtype : np.float64 (default, the seed's) or np.float32.

    Returns
    -------
    kernel (F, C, k, k), bias_conv (F,), W_fc (F*out_h*out_w, O), b_fc (O,), and ``loss``: the
    mean squared error of the last forward pass (before the last update).

    Raises
    ------
    tinycnn.DivergenceError
        if the loss becomes non-finite, naming the epoch.
    """
    dt = check_float_dtype("dtype", dtype)
    X = check_real_array("X", X, ndim=4, dtype=dt)
    N, C, H, W = X.shape
    T = _targets(y, N, dt)
    epochs = check_int("epochs", epochs, minimum=1)
    lr = check_positive_float("lr", lr)
    n_filters = check_int("n_filters", n_filters, minimum=1)
    kernel_size = check_int("kernel_size", kernel_size, minimum=1)
    stride, pad, _, _ = check_conv_geometry((H, W), kernel_size, stride, pad, what="X")
    spec = ConvNetSpec(C, H, W, n_filters, kernel_size, stride, pad, T.shape[1])
    params = init_params_seed(spec, dt)
    history = train(spec.sequential(), params, X, T, SGD(lr), epochs, loss="mse")
    if not all_finite(params):
        # The loss of the last forward pass was finite, but its update overflowed: the seed would
        # return these weights silently; we refuse to.
        raise DivergenceError(
            epochs, history.loss_curve[-1], lr, reason="the last update made the weights non-finite"
        )
    return (*params, history.loss_curve[-1])


def predict_cnn(
    X: np.ndarray,
    kernel: np.ndarray,
    bias_conv: np.ndarray,
    W_fc: np.ndarray,
    b_fc: np.ndarray,
    stride: int = 1,
    pad: int = 0,
) -> np.ndarray:
    """Outputs ``(N, O)`` of the trained network for ``X`` ``(N, C, H, W)``, given the weights
    :func:`train_cnn` returned (``kernel`` (F, C, k, k), ``bias_conv`` (F,), ``W_fc``
    (F*out_h*out_w, O), ``b_fc`` (O,)). Computed in ``W_fc``'s float dtype."""
    W_fc = check_real_array("W_fc", W_fc, ndim=2, dtype=None)
    dt = W_fc.dtype if W_fc.dtype == np.float32 else np.dtype(np.float64)
    W_fc = W_fc.astype(dt, copy=False)
    X = check_real_array("X", X, ndim=4, dtype=dt)
    kernel = check_real_array("kernel", kernel, ndim=4, dtype=dt)
    F, C, k, k2 = kernel.shape
    if k != k2:
        raise ValueError(f"kernel must be square (F, C, k, k), got shape {kernel.shape}")
    if C != X.shape[1]:
        raise ValueError(f"kernel has {C} input channels but X has {X.shape[1]} (shape {X.shape})")
    bias_conv = check_real_array("bias_conv", bias_conv, ndim=1, dtype=dt)
    b_fc = check_real_array("b_fc", b_fc, ndim=1, dtype=dt)
    stride, pad, out_h, out_w = check_conv_geometry(X.shape[2:], k, stride, pad, what="X")
    if bias_conv.shape != (F,):
        raise ValueError(f"bias_conv must have shape ({F},) to match kernel, got {bias_conv.shape}")
    if W_fc.shape[0] != F * out_h * out_w:
        raise ValueError(
            f"W_fc has {W_fc.shape[0]} rows but the conv output has {F}*{out_h}*{out_w} = "
            f"{F * out_h * out_w} features for X {X.shape} with stride={stride}, pad={pad}"
        )
    if b_fc.shape != (W_fc.shape[1],):
        raise ValueError(f"b_fc must have shape ({W_fc.shape[1]},) to match W_fc, got {b_fc.shape}")
    spec = ConvNetSpec(C, X.shape[2], X.shape[3], F, k, stride, pad, W_fc.shape[1])
    return predict(ConvNetParams(kernel, bias_conv, W_fc, b_fc), spec, X)
