"""2-D convolution (cross-correlation, as in PyTorch) by unfolding windows into a matrix.

Output size along each spatial axis: ``out = (size + 2*pad - k) // stride + 1``.

The unfolded matrix ("cols") is laid out channel-major, ``(C*k*k, N*out_h*out_w)``: row
``(c, a, b)`` holds, for every sample and output pixel, the input value the kernel tap
``(c, a, b)`` sees. With that layout

* forward is one well-shaped matrix product, ``(F, C*k*k) @ (C*k*k, N*P)`` with ``P = out_h*out_w``,
  whose result ``(F, N, P)`` is already the layout the dense layer reads without a transpose;
* ``dkernel = dz @ cols.T`` and ``dcols = kernel.T @ dz`` are single products too;
* unfolding copies ``k*k`` shifted slices whose contiguous runs are whole output rows, rather than
  the ``k``-element runs of the sample-major ``(N*P, C*k*k)`` layout.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from .._validation import check_conv_geometry, check_real_array


def conv_output_size(size: int, kernel_size: int, stride: int, pad: int) -> int:
    """``(size + 2*pad - kernel_size) // stride + 1``: the output length along one axis."""
    return (size + 2 * pad - kernel_size) // stride + 1


def pad_images(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad the two spatial axes of ``x`` ``(N, C, H, W)`` -> ``(N, C, H+2p, W+2p)``."""
    if pad == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def unfold(
    x: np.ndarray, kernel_size: int, stride: int, pad: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Unfold the windows of ``x`` ``(N, C, H, W)`` into ``cols`` ``(C*k*k, N*out_h*out_w)``.

    ``cols[(c, a, b), (n, i, j)] = xpad[n, c, i*stride + a, j*stride + b]``. ``out``, if given, is
    a buffer of at least that many elements of ``x``'s dtype to write into (reused across calls).
    """
    N, C, H, W = x.shape
    k = kernel_size
    xp = pad_images(x, pad)
    out_h = conv_output_size(H, k, stride, pad)
    out_w = conv_output_size(W, k, stride, pad)
    # (N, C, H'', W'', k, k) view -> every stride-th window -> (C, k, k, N, out_h, out_w) view.
    windows = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    windows = windows[:, :, :out_h, :out_w].transpose(1, 4, 5, 0, 2, 3)
    size = C * k * k * N * out_h * out_w
    if out is None:
        cols = np.empty(windows.shape, dtype=x.dtype)
    else:
        cols = out.reshape(-1)[:size].reshape(windows.shape)
    np.copyto(cols, windows)
    return cols.reshape(C * k * k, N * out_h * out_w)


def fold(
    dcols: np.ndarray, x_shape: tuple[int, int, int, int], kernel_size: int, stride: int, pad: int
) -> np.ndarray:
    """The adjoint of :func:`unfold`: scatter-add ``dcols`` ``(C*k*k, N*P)`` back to
    ``(N, C, H, W)``.

    Every input pixel receives the sum of the gradients of all the windows that saw it; pixels no
    window reaches (the remainder when the stride does not divide evenly) receive 0.
    """
    N, C, H, W = x_shape
    k = kernel_size
    out_h = conv_output_size(H, k, stride, pad)
    out_w = conv_output_size(W, k, stride, pad)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype)
    d6 = dcols.reshape(C, k, k, N, out_h, out_w)
    # One shifted, strided add per kernel tap (k*k of them), each vectorised over N, C and pixels.
    for a in range(k):
        rows = slice(a, a + stride * (out_h - 1) + 1, stride)
        for b in range(k):
            cols_ = slice(b, b + stride * (out_w - 1) + 1, stride)
            dxp[:, :, rows, cols_] += d6[:, a, b].transpose(1, 0, 2, 3)
    return dxp[:, :, pad : pad + H, pad : pad + W] if pad else dxp


def fold_cl(dcols: np.ndarray, dx: np.ndarray, stride: int) -> np.ndarray:
    """The channels-last :func:`fold`: scatter-add ``dcols`` ``(N, out_h, out_w, k, k, C)``
    (window ``(i, j)``'s tap ``(a, b)``) onto ``dx`` ``(N, H, W, C)`` (already padded, any
    strides), which is zeroed first: ``dx[n, i*s + a, j*s + b, c] += dcols[n, i, j, a, b, c]``.
    Returns ``dx``.

    A tap's row ``a`` of window ``(i, j)`` covers ``k*C`` numbers that are contiguous in ``dx``
    and in ``dcols`` alike, and the windows ``j, j + g, j + 2g, ...`` with ``g = ceil(k/s)`` never
    overlap. So the scatter is ``k*g`` strided adds, one per row ``a`` and column residue
    ``j mod g``, each over runs of ``k*C`` numbers (adding tap by tap, ``k*k`` adds over runs of
    ``C``, measured 2-3x slower for the channel counts of small CNNs).
    """
    N, out_h, out_w, k, _, C = dcols.shape
    s = stride
    g = -(-k // s)
    sN, sH, sW, sC = dx.strides
    dx.fill(0)
    for a in range(k):
        for r in range(min(g, out_w)):
            n_j = len(range(r, out_w, g))
            start = dx[:, a:, r * s :]
            target = as_strided(start, (N, out_h, n_j, k, C), (sN, s * sH, g * s * sW, sW, sC))
            target += dcols[:, :, r::g, a]
    return dx


class ConvCache(NamedTuple):
    """What :func:`conv_backward` needs from the forward pass."""

    x_shape: tuple[int, int, int, int]
    cols: np.ndarray  # (C*k*k, N*P)
    kernel: np.ndarray  # (F, C, k, k)
    stride: int
    pad: int


def conv_forward(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, ConvCache]:
    """Convolve ``x`` ``(N, C, H, W)`` with ``kernel`` ``(F, C, k, k)`` plus ``bias`` ``(F,)``.

    Returns ``out`` ``(N, F, out_h, out_w)`` and the cache for :func:`conv_backward`. Inputs are
    assumed valid (the public :func:`conv2d_forward` checks them).
    """
    N = x.shape[0]
    F, _, k, _ = kernel.shape
    out_h = conv_output_size(x.shape[2], k, stride, pad)
    out_w = conv_output_size(x.shape[3], k, stride, pad)
    cols = unfold(x, k, stride, pad)  # (C*k*k, N*P)
    z = kernel.reshape(F, -1) @ cols  # (F, N*P)
    z += bias[:, None]
    out = z.reshape(F, N, out_h, out_w).transpose(1, 0, 2, 3)  # (N, F, out_h, out_w)
    return np.ascontiguousarray(out), ConvCache(x.shape, cols, kernel, stride, pad)


def conv_backward(
    dout: np.ndarray, cache: ConvCache, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of a convolution given ``dout`` ``(N, F, out_h, out_w)``.

    Returns ``(dx, dkernel, dbias)`` with shapes ``(N, C, H, W)``, ``(F, C, k, k)``, ``(F,)``:

    * ``dkernel[f, c, a, b] = sum_{n,i,j} dout[n, f, i, j] * xpad[n, c, i*s + a, j*s + b]``,
      a correlation of the input with ``dout``;
    * ``dx`` is ``dout`` dilated by the stride and fully convolved with the kernel (computed as
      ``kernel.T @ dout`` then :func:`fold`); ``None`` when ``need_dx`` is false (a first layer);
    * ``dbias[f] = sum_{n,i,j} dout[n, f, i, j]``.
    """
    kernel = cache.kernel
    F = kernel.shape[0]
    dz = dout.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*P)
    dkernel = (dz @ cache.cols.T).reshape(kernel.shape)
    dbias = dz.sum(axis=1)
    dx = None
    if need_dx:
        dcols = kernel.reshape(F, -1).T @ dz  # (C*k*k, N*P)
        dx = fold(dcols, cache.x_shape, kernel.shape[2], cache.stride, cache.pad)
    return dx, dkernel, dbias


def _check_conv_args(x, kernel, bias, stride, pad):
    # dtype=None: x is already float64 or float32 (see _as_float); the float32 path stays float32.
    x = check_real_array("x", x, ndim=4, dtype=None)
    kernel = check_real_array("kernel", kernel, ndim=4, dtype=x.dtype)
    F, C, kh, kw = kernel.shape
    if kh != kw:
        raise ValueError(f"kernel must be square (F, C, k, k), got shape {kernel.shape}")
    if C != x.shape[1]:
        raise ValueError(
            f"kernel has {C} input channels (shape {kernel.shape}) but x has {x.shape[1]} "
            f"(shape {x.shape})"
        )
    stride, pad, out_h, out_w = check_conv_geometry(x.shape[2:], kh, stride, pad)
    if bias is not None:
        bias = check_real_array("bias", bias, ndim=1, dtype=x.dtype)
        if bias.shape != (F,):
            raise ValueError(f"bias must have shape ({F},) to match kernel, got {bias.shape}")
    return x, kernel, bias, stride, pad, out_h, out_w


def conv2d_forward(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """The seed's convolution of ``x`` ``(N, C, H, W)`` with ``kernel`` ``(F, C, k, k)`` and
    ``bias`` ``(F,)``.

    Returns ``out`` ``(N, F, out_h, out_w)`` with ``out_h = (H + 2*pad - k) // stride + 1`` (and
    likewise ``out_w``): ``out[n, f, i, j] = bias[f] + sum_{c,a,b} kernel[f, c, a, b] *
    xpad[n, c, i*stride + a, j*stride + b]``. Computed in float64 unless ``x`` is float32.
    """
    if bias is None:  # _check_conv_args reads None as "no bias to check" (conv2d_backward's)
        raise TypeError("bias must be an array of shape (F,) (one per filter), got None")
    x = _as_float(x, "x")
    x, kernel, bias, stride, pad, _, _ = _check_conv_args(x, kernel, bias, stride, pad)
    out, _ = conv_forward(x, kernel, bias, stride, pad)
    return out


def conv2d_backward(
    dout: np.ndarray, x: np.ndarray, kernel: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d_forward` with respect to ``x``, ``kernel`` and ``bias``.

    ``dout`` is ``(N, F, out_h, out_w)``, ``x`` ``(N, C, H, W)``, ``kernel`` ``(F, C, k, k)``.
    Returns ``(dx, dkernel, dbias)`` shaped ``(N, C, H, W)``, ``(F, C, k, k)``, ``(F,)``.
    """
    x = _as_float(x, "x")
    x, kernel, _, stride, pad, out_h, out_w = _check_conv_args(x, kernel, None, stride, pad)
    dout = check_real_array("dout", dout, ndim=4, dtype=x.dtype)
    want = (x.shape[0], kernel.shape[0], out_h, out_w)
    if dout.shape != want:
        raise ValueError(
            f"dout must have shape {want} (N, F, out_h, out_w) for x {x.shape}, kernel "
            f"{kernel.shape}, stride={stride}, pad={pad}; got {dout.shape}"
        )
    cache = ConvCache(x.shape, unfold(x, kernel.shape[2], stride, pad), kernel, stride, pad)
    dx, dkernel, dbias = conv_backward(dout, cache, need_dx=True)
    return dx, dkernel, dbias


def _as_float(x, name):
    """float32 stays float32; everything else real becomes float64 (the seed's precision)."""
    arr = check_real_array(name, x, ndim=None, dtype=None)
    return arr if arr.dtype == np.float32 else arr.astype(np.float64, copy=False)
