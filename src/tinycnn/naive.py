"""The ops as plain loops: slow, obvious, and the reference the fast ops are tested against.

Each function computes exactly what its counterpart in ``tinycnn.ops`` computes, one scalar at a
time, straight from the definition. Read these first to learn what an op does; read ``ops`` to
see how the same thing is made fast. Shapes follow PyTorch: ``(N, C, H, W)`` and ``(F, C, k, k)``.
"""

from __future__ import annotations

import math

import numpy as np


def conv2d_forward(x, kernel, bias, stride=1, pad=0):
    """``out[n, f, i, j] = bias[f] + sum_{c,a,b} kernel[f,c,a,b] * xpad[n, c, i*s + a, j*s + b]``.

    ``x`` ``(N, C, H, W)``, ``kernel`` ``(F, C, k, k)``, ``bias`` ``(F,)`` ->
    ``out`` ``(N, F, (H + 2*pad - k)//stride + 1, (W + 2*pad - k)//stride + 1)``.
    """
    N, C, H, W = x.shape
    F, _, k, _ = kernel.shape
    xpad = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=np.result_type(x, np.float64))
    xpad[:, :, pad : pad + H, pad : pad + W] = x
    out_h = (H + 2 * pad - k) // stride + 1
    out_w = (W + 2 * pad - k) // stride + 1
    out = np.zeros((N, F, out_h, out_w), dtype=xpad.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(out_h):
                for j in range(out_w):
                    total = bias[f]
                    for c in range(C):
                        for a in range(k):
                            for b in range(k):
                                total += (
                                    kernel[f, c, a, b] * xpad[n, c, i * stride + a, j * stride + b]
                                )
                    out[n, f, i, j] = total
    return out


def conv2d_backward(dout, x, kernel, stride=1, pad=0):
    """Gradients of :func:`conv2d_forward`: ``(dx (N,C,H,W), dkernel (F,C,k,k), dbias (F,))``.

    Each output ``out[n, f, i, j]`` touched ``kernel[f, c, a, b]`` and ``xpad[n, c, i*s+a, j*s+b]``
    once, multiplied together; so its gradient ``dout[n, f, i, j]`` flows to each of them times the
    other factor. Padding positions receive gradient too, and are then cut away.
    """
    N, C, H, W = x.shape
    F, _, k, _ = kernel.shape
    xpad = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=np.float64)
    xpad[:, :, pad : pad + H, pad : pad + W] = x
    dxpad = np.zeros_like(xpad)
    dkernel = np.zeros(kernel.shape, dtype=np.float64)
    dbias = np.zeros(F, dtype=np.float64)
    out_h, out_w = dout.shape[2], dout.shape[3]
    for n in range(N):
        for f in range(F):
            for i in range(out_h):
                for j in range(out_w):
                    g = dout[n, f, i, j]
                    dbias[f] += g
                    for c in range(C):
                        for a in range(k):
                            for b in range(k):
                                r, s = i * stride + a, j * stride + b
                                dkernel[f, c, a, b] += g * xpad[n, c, r, s]
                                dxpad[n, c, r, s] += g * kernel[f, c, a, b]
    return dxpad[:, :, pad : pad + H, pad : pad + W], dkernel, dbias


def relu(x):
    """``max(x, 0)`` one element at a time; any shape."""
    out = np.array(x, dtype=np.float64)
    flat = out.reshape(-1)
    for idx in range(flat.size):
        if flat[idx] < 0:
            flat[idx] = 0.0
    return out


def relu_backward(dout, x):
    """``dout`` where ``x > 0``, else 0 (including at exactly 0); any shape."""
    dx = np.zeros(np.shape(x), dtype=np.float64)
    xf, df, dxf = np.asarray(x).reshape(-1), np.asarray(dout).reshape(-1), dx.reshape(-1)
    for idx in range(xf.size):
        if xf[idx] > 0:
            dxf[idx] = df[idx]
    return dx


def dense_forward(x, W, b):
    """``out[n, o] = b[o] + sum_d x[n, d] * W[d, o]``; ``(N, D), (D, O), (O,) -> (N, O)``."""
    N, D = x.shape
    O = W.shape[1]
    out = np.zeros((N, O))
    for n in range(N):
        for o in range(O):
            total = b[o]
            for d in range(D):
                total += x[n, d] * W[d, o]
            out[n, o] = total
    return out


def dense_backward(dout, x, W):
    """``(dx (N, D), dW (D, O), db (O,))`` for :func:`dense_forward`, one product at a time."""
    N, D = x.shape
    O = W.shape[1]
    dx, dW, db = np.zeros((N, D)), np.zeros((D, O)), np.zeros(O)
    for n in range(N):
        for o in range(O):
            g = dout[n, o]
            db[o] += g
            for d in range(D):
                dx[n, d] += g * W[d, o]
                dW[d, o] += g * x[n, d]
    return dx, dW, db


def mse_loss(pred, target):
    """``(loss, dpred)``: mean of squared errors over all ``N*O`` entries, and its gradient."""
    N, O = pred.shape
    loss = 0.0
    dpred = np.zeros((N, O))
    for n in range(N):
        for o in range(O):
            err = pred[n, o] - target[n, o]
            loss += err * err / (N * O)
            dpred[n, o] = 2.0 * err / (N * O)
    return loss, dpred


def softmax_cross_entropy(logits, target):
    """``(loss, dlogits)``: mean over samples of ``-sum_k target[k] * log softmax(logits)[k]``."""
    N, K = logits.shape
    loss = 0.0
    dlogits = np.zeros((N, K))
    for n in range(N):
        top = max(logits[n, k] for k in range(K))
        norm = sum(math.exp(logits[n, k] - top) for k in range(K))
        mass = sum(target[n, k] for k in range(K))
        for k in range(K):
            log_p = logits[n, k] - top - math.log(norm)
            loss -= target[n, k] * log_p / N
            dlogits[n, k] = (math.exp(log_p) * mass - target[n, k]) / N
    return loss, dlogits


def train_cnn(X, y, epochs=100, lr=0.01, n_filters=1, kernel_size=3, stride=1, pad=0):
    """The seed's training loop written with the loops above: the plain reference for
    ``tinycnn.train_cnn`` (same draws from NumPy's global random state, same results)."""
    X = np.asarray(X, dtype=np.float64)
    N, C, H, W = X.shape
    O = y.shape[1] if np.ndim(y) > 1 else 1
    target = np.asarray(y, dtype=np.float64).reshape(N, O)
    kernel = np.random.randn(n_filters, C, kernel_size, kernel_size) * 0.1
    bias_conv = np.zeros(n_filters)
    out_h = (H + 2 * pad - kernel_size) // stride + 1
    out_w = (W + 2 * pad - kernel_size) // stride + 1
    W_fc = np.random.randn(n_filters * out_h * out_w, O) * 0.1
    b_fc = np.zeros(O)
    loss = None
    for _ in range(epochs):
        z = conv2d_forward(X, kernel, bias_conv, stride, pad)
        a = relu(z)
        flat = a.reshape(N, -1)
        logits = dense_forward(flat, W_fc, b_fc)
        loss, dlogits = mse_loss(logits, target)
        dflat, dW_fc, db_fc = dense_backward(dlogits, flat, W_fc)
        dz = relu_backward(dflat.reshape(z.shape), z)
        _, dkernel, dbias = conv2d_backward(dz, X, kernel, stride, pad)
        kernel -= lr * dkernel
        bias_conv -= lr * dbias
        W_fc -= lr * dW_fc
        b_fc -= lr * db_fc
    return kernel, bias_conv, W_fc, b_fc, loss


def max_pool2d_forward(x, size, stride=None):
    """``out[n, c, i, j] = max_{a,b < size} x[n, c, i*s + a, j*s + b]``, windows every
    ``stride`` (default ``size``) pixels; a partial window at the edge is dropped.

    ``x`` ``(N, C, H, W)`` -> ``(N, C, (H - size)//stride + 1, (W - size)//stride + 1)``.
    """
    stride = size if stride is None else stride
    N, C, H, W = x.shape
    out_h, out_w = (H - size) // stride + 1, (W - size) // stride + 1
    out = np.zeros((N, C, out_h, out_w), dtype=np.result_type(x, np.float64))
    for n in range(N):
        for c in range(C):
            for i in range(out_h):
                for j in range(out_w):
                    best = x[n, c, i * stride, j * stride]
                    for a in range(size):
                        for b in range(size):
                            value = x[n, c, i * stride + a, j * stride + b]
                            if value > best or math.isnan(value):
                                best = value
                    out[n, c, i, j] = best
    return out


def max_pool2d_backward(dout, x, size, stride=None):
    """Gradient of :func:`max_pool2d_forward`: each window's ``dout`` goes to the position of its
    maximum, the first one in row-major order when several tie. ``dx`` ``(N, C, H, W)``."""
    stride = size if stride is None else stride
    N, C, H, W = x.shape
    dx = np.zeros((N, C, H, W), dtype=np.float64)
    for n in range(N):
        for c in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    where = (i * stride, j * stride)
                    for a in range(size):
                        for b in range(size):
                            if x[n, c, i * stride + a, j * stride + b] > x[n, c][where]:
                                where = (i * stride + a, j * stride + b)
                    dx[n, c][where] += dout[n, c, i, j]
    return dx


def avg_pool2d_forward(x, size, stride=None):
    """``out[n, c, i, j] = mean_{a,b < size} x[n, c, i*s + a, j*s + b]``, shaped like
    :func:`max_pool2d_forward`'s output."""
    stride = size if stride is None else stride
    N, C, H, W = x.shape
    out_h, out_w = (H - size) // stride + 1, (W - size) // stride + 1
    out = np.zeros((N, C, out_h, out_w), dtype=np.result_type(x, np.float64))
    for n in range(N):
        for c in range(C):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0
                    for a in range(size):
                        for b in range(size):
                            total += x[n, c, i * stride + a, j * stride + b]
                    out[n, c, i, j] = total / (size * size)
    return out


def avg_pool2d_backward(dout, x, size, stride=None):
    """Gradient of :func:`avg_pool2d_forward`: every position of a window receives its
    ``dout / size**2`` (summed over the windows that hold it). ``dx`` ``(N, C, H, W)``."""
    stride = size if stride is None else stride
    dx = np.zeros(x.shape, dtype=np.float64)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    for a in range(size):
                        for b in range(size):
                            dx[n, c, i * stride + a, j * stride + b] += dout[n, c, i, j] / size**2
    return dx
