"""Max and average pooling over ``size x size`` windows taken every ``stride`` pixels.

Output size along each spatial axis: ``out = (size_in - size) // stride + 1`` (a partial window
at the edge is dropped, PyTorch's floor mode). ``stride`` defaults to ``size``.

Forward, a window's max (or sum) is taken in two steps, rows then columns: first over the
``size`` rows of every window, ``rows[:, i] = max_a x[:, i*stride + a]`` (each operand whole
image rows, long contiguous runs), then over the ``size`` columns of those,
``out[:, :, j] = max_b rows[:, :, j*stride + b]``: ``2*(size - 1)`` whole-array NumPy calls,
never a loop over samples or pixels. (One reduction over both window axes of a reshaped view,
the obvious alternative, walks runs of ``C`` numbers and measured 4-8x slower.) Backward goes
tap by tap: for each of the ``size*size`` positions ``(a, b)`` inside a window, the view
``x[:, a::stride, b::stride]`` (cut to the output size) holds that tap of every window at once.

The cores below work on channels-last arrays ``(N, H, W, C)`` (the engine's layout, in which
a tap's view has contiguous runs of ``C``); the public functions take PyTorch's ``(N, C, H, W)``
and hand the cores a transposed view, so both layouts run the same code.

Gradients:

* max: each window's ``dout`` goes to the position of the window's maximum, and to the first one
  in row-major order when several positions tie (as PyTorch's CPU kernel does). A window whose
  maximum is NaN sends its gradient nowhere.
* avg: each window's ``dout / size**2`` goes to every position of the window; where windows
  overlap (``stride < size``) a pixel receives the sum over the windows that hold it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._validation import check_int, check_real_array


def pool_output_size(size_in: int, size: int, stride: int) -> int:
    """``(size_in - size) // stride + 1``: the output length along one axis (floor mode)."""
    return (size_in - size) // stride + 1


def _taps(x: np.ndarray, size: int, stride: int, out_h: int, out_w: int):
    """Yield ``(a, b, view)`` for each tap of the windows of channels-last ``x`` ``(N, H, W, C)``
    in row-major order; ``view`` ``(N, out_h, out_w, C)`` is tap ``(a, b)`` of every window."""
    for a in range(size):
        rows = slice(a, a + stride * (out_h - 1) + 1, stride)
        for b in range(size):
            yield a, b, x[:, rows, b : b + stride * (out_w - 1) + 1 : stride]


def _tiles(x: np.ndarray, size: int, out_h: int, out_w: int) -> np.ndarray:
    """A view ``(N, out_h, size, out_w, size, C)`` of channels-last ``x`` ``(N, H, W, C)`` for
    windows that tile it (``stride == size``): window ``(i, j)``'s tap ``(a, b)`` is
    ``[:, i, a, j, b]``. Rows and columns past the last whole window are left out."""
    sN, sH, sW, sC = x.strides
    shape = (x.shape[0], out_h, size, out_w, size, x.shape[3])
    return as_strided(x, shape, (sN, sH * size, sH, sW * size, sW, sC), writeable=x.flags.writeable)


def _window_reduce(
    x: np.ndarray,
    size: int,
    stride: int,
    out: np.ndarray,
    rows: np.ndarray | None,
    combine: np.ufunc,
) -> np.ndarray:
    """``out[:, i, j] = combine`` over window ``(i, j)`` of channels-last ``x`` ``(N, H, W, C)``,
    rows first into ``rows`` ``(N, out_h, W, C)`` (a scratch buffer; allocated if None), then
    columns into ``out`` ``(N, out_h, out_w, C)``. ``combine`` is ``np.maximum`` or ``np.add``."""
    out_h, out_w = out.shape[1], out.shape[2]
    if rows is None:
        rows = np.empty((x.shape[0], out_h, x.shape[2], x.shape[3]), dtype=out.dtype)
    row_taps = [x[:, a : a + stride * (out_h - 1) + 1 : stride] for a in range(size)]
    col_taps = [rows[:, :, b : b + stride * (out_w - 1) + 1 : stride] for b in range(size)]
    for taps, target in ((row_taps, rows), (col_taps, out)):
        if size == 1:
            np.copyto(target, taps[0])
        else:
            combine(taps[0], taps[1], out=target)
        for tap in taps[2:]:
            combine(target, tap, out=target)
    return out


def max_pool_forward_cl(
    x: np.ndarray, size: int, stride: int, out: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Max of each window of channels-last ``x`` ``(N, H, W, C)`` into ``out``
    ``(N, out_h, out_w, C)``; NaN propagates. ``rows`` ``(N, out_h, W, C)`` is an optional
    scratch buffer (see :func:`_window_reduce`). Returns ``out``."""
    return _window_reduce(x, size, stride, out, rows, np.maximum)


def max_pool_backward_cl(
    dout: np.ndarray,
    x: np.ndarray,
    out: np.ndarray,
    size: int,
    stride: int,
    dx: np.ndarray,
    claimed: np.ndarray | None = None,
    hit: np.ndarray | None = None,
) -> np.ndarray:
    """Route ``dout`` ``(N, out_h, out_w, C)`` to the first maximum of each window of ``x``
    ``(N, H, W, C)`` (``out`` is the forward's result), writing ``dx`` ``(N, H, W, C)``.

    Taps are visited in row-major order; a tap equal to its window's maximum takes the window's
    gradient unless an earlier tap already did (``claimed``). ``claimed`` and ``hit`` are
    optional bool buffers shaped like ``out`` (reused across calls). Returns ``dx``.
    """
    out_h, out_w = out.shape[1], out.shape[2]
    if claimed is None:
        claimed = np.empty(out.shape, dtype=bool)
    if hit is None:
        hit = np.empty(out.shape, dtype=bool)
    # Windows that tile the image write every pixel they hold; otherwise some pixels belong to
    # no window (or to several) and dx starts from zero.
    disjoint = stride >= size
    covers_all = stride == size and out_h * size == x.shape[1] and out_w * size == x.shape[2]
    if not covers_all:
        dx.fill(0)
    for a, b, tap in _taps(x, size, stride, out_h, out_w):
        np.equal(tap, out, out=hit)
        if a == 0 and b == 0:
            np.copyto(claimed, hit)
        else:
            np.greater(hit, claimed, out=hit)  # equal to the max and not claimed before
            np.logical_or(claimed, hit, out=claimed)
        dx_tap = dx[:, a : a + stride * (out_h - 1) + 1 : stride,
                    b : b + stride * (out_w - 1) + 1 : stride]  # fmt: skip
        if disjoint:
            np.multiply(dout, hit, out=dx_tap)
        else:
            dx_tap += dout * hit
    return dx


def avg_pool_forward_cl(
    x: np.ndarray, size: int, stride: int, out: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Mean of each window of channels-last ``x`` ``(N, H, W, C)`` into ``out``
    ``(N, out_h, out_w, C)``; ``rows`` as in :func:`max_pool_forward_cl`. Returns ``out``."""
    _window_reduce(x, size, stride, out, rows, np.add)
    out *= 1.0 / (size * size)
    return out


def avg_pool_backward_cl(dout: np.ndarray, size: int, stride: int, dx: np.ndarray) -> np.ndarray:
    """Spread ``dout`` ``(N, out_h, out_w, C)`` as ``dout / size**2`` over every position of its
    window, writing ``dx`` ``(N, H, W, C)``. Returns ``dx``."""
    out_h, out_w = dout.shape[1], dout.shape[2]
    scale = 1.0 / (size * size)
    covers_all = stride == size and out_h * size == dx.shape[1] and out_w * size == dx.shape[2]
    if covers_all:
        np.multiply(dout[:, :, None, :, None, :], scale, out=_tiles(dx, size, out_h, out_w))
        return dx
    if stride < size or not covers_all:
        dx.fill(0)
    for _, _, dx_tap in _taps(dx, size, stride, out_h, out_w):
        if stride >= size:
            np.multiply(dout, scale, out=dx_tap)
        else:
            dx_tap += dout * scale
    return dx


def _check_pool_args(x, size, stride, name="x"):
    x = check_real_array(name, x, ndim=4, dtype=None, finite=False)
    if x.dtype != np.float32:
        x = x.astype(np.float64, copy=False)
    size = check_int("size", size, minimum=1)
    stride = size if stride is None else check_int("stride", stride, minimum=1)
    H, W = x.shape[2], x.shape[3]
    if size > H or size > W:
        raise ValueError(
            f"size={size} is larger than the {H}x{W} images of {name} (shape {x.shape}): "
            "a pooling window must fit the image"
        )
    return x, size, stride, pool_output_size(H, size, stride), pool_output_size(W, size, stride)


def _check_dout(dout, x, out_h, out_w, dtype):
    dout = check_real_array("dout", dout, ndim=4, dtype=dtype, finite=False)
    want = (x.shape[0], x.shape[1], out_h, out_w)
    if dout.shape != want:
        raise ValueError(f"dout must have shape {want} (N, C, out_h, out_w) for x {x.shape}, "
                         f"got {dout.shape}")  # fmt: skip
    return dout


def _nhwc(a: np.ndarray) -> np.ndarray:
    """A channels-last view ``(N, H, W, C)`` of ``a`` ``(N, C, H, W)`` (no copy)."""
    return a.transpose(0, 2, 3, 1)


def _empty_nchw(N: int, C: int, H: int, W: int, dtype) -> np.ndarray:
    """A new ``(N, C, H, W)`` array (C-contiguous), for the cores to fill through its
    channels-last view."""
    return np.empty((N, C, H, W), dtype=dtype)


def max_pool2d_forward(x: np.ndarray, size: int, stride: int | None = None) -> np.ndarray:
    """Max pooling of ``x`` ``(N, C, H, W)`` over ``size x size`` windows every ``stride``
    (default ``size``) pixels: ``out[n, c, i, j] = max_{a,b < size} x[n, c, i*s + a, j*s + b]``,
    shaped ``(N, C, (H - size)//stride + 1, (W - size)//stride + 1)``. Computed in float64
    unless ``x`` is float32."""
    x, size, stride, out_h, out_w = _check_pool_args(x, size, stride)
    out = _empty_nchw(x.shape[0], x.shape[1], out_h, out_w, x.dtype)
    max_pool_forward_cl(_nhwc(x), size, stride, _nhwc(out))
    return out


def max_pool2d_backward(
    dout: np.ndarray, x: np.ndarray, size: int, stride: int | None = None
) -> np.ndarray:
    """Gradient ``dx`` ``(N, C, H, W)`` of :func:`max_pool2d_forward` given ``dout``
    ``(N, C, out_h, out_w)``: each window's gradient goes to its maximum (the first in row-major
    order on ties); pixels that are no window's maximum get 0."""
    x, size, stride, out_h, out_w = _check_pool_args(x, size, stride)
    dout = _check_dout(dout, x, out_h, out_w, x.dtype)
    out = _empty_nchw(x.shape[0], x.shape[1], out_h, out_w, x.dtype)
    max_pool_forward_cl(_nhwc(x), size, stride, _nhwc(out))
    dx = _empty_nchw(*x.shape, x.dtype)
    max_pool_backward_cl(_nhwc(dout), _nhwc(x), _nhwc(out), size, stride, _nhwc(dx))
    return dx


def avg_pool2d_forward(x: np.ndarray, size: int, stride: int | None = None) -> np.ndarray:
    """Average pooling of ``x`` ``(N, C, H, W)``:
    ``out[n, c, i, j] = mean_{a,b < size} x[n, c, i*s + a, j*s + b]``, shaped like
    :func:`max_pool2d_forward`'s output."""
    x, size, stride, out_h, out_w = _check_pool_args(x, size, stride)
    out = _empty_nchw(x.shape[0], x.shape[1], out_h, out_w, x.dtype)
    avg_pool_forward_cl(_nhwc(x), size, stride, _nhwc(out))
    return out


def avg_pool2d_backward(
    dout: np.ndarray, x: np.ndarray, size: int, stride: int | None = None
) -> np.ndarray:
    """Gradient ``dx`` ``(N, C, H, W)`` of :func:`avg_pool2d_forward` given ``dout``
    ``(N, C, out_h, out_w)``: ``dout / size**2`` to every pixel of each window (summed where
    windows overlap; 0 for pixels no window holds). ``x`` gives the input's shape."""
    x, size, stride, out_h, out_w = _check_pool_args(x, size, stride)
    dout = _check_dout(dout, x, out_h, out_w, x.dtype)
    dx = _empty_nchw(*x.shape, x.dtype)
    avg_pool_backward_cl(_nhwc(dout), size, stride, _nhwc(dx))
    return dx
