"""Max and average pooling over ``size x size`` windows taken every ``stride`` pixels.

Output size along each spatial axis: ``out = (size_in - size) // stride + 1`` (a partial window
at the edge is dropped, PyTorch's floor mode). ``stride`` defaults to ``size``.

Forward, a window's max (or sum) is taken in two steps, rows then columns: first over the
``size`` rows of every window, ``rows[:, i] = max_a x[:, i*stride + a]`` (each operand whole
image rows, long contiguous runs), then over the ``size`` columns of those,
``out[:, :, j] = max_b rows[:, :, j*stride + b]``: ``2*(size - 1)`` whole-array NumPy calls,
never a loop over samples or pixels. (One reduction over both window axes of a reshaped view,
the obvious alternative, walks runs of ``C`` numbers and measured 4-8x slower.)

Max-pool backward (:func:`max_pool_backward_cl`) works on blocks of window rows (about
:data:`_BLOCK_BYTES` of taps, so that a block stays in cache from one step to the next). The
view ``x[:, a::stride, b::stride]`` (cut to the output size) holds tap ``(a, b)`` of every
window, but walks runs of only ``C`` numbers, and NumPy's cost is per run: ``==`` over it
measured 0.72 ns a number with LeNet's 6 channels and 0.22 with 32, against 0.08 over a
contiguous array (in cache). So for windows that do not overlap (``stride >= size``, the
common case) one copy gathers every tap of a block into a tap-major array
``(size*size, m, r, out_w, C)``, moving each pixel (its ``C`` numbers) as one element; from
there each step is one call over contiguous arrays: hits ``taps == out``, the first hit of each
window in row-major tap order, its gradient ``dout * mask``; and one copy (or one per tap, for
pixels under :data:`_LONG_PIXEL_BYTES`) scatters those into ``dx``. Where the tap views are
cheap already (one channel; long pixels in an input that fits in cache: :func:`_gathers`) the
backward goes tap by tap over them instead, 4 calls per tap: hits, less the windows an earlier
tap claimed, and ``dx`` tap ``= dout * hit``. Overlapping windows go tap by tap too, adding into
``dx`` in tap order, in blocks of whole samples. Every path gives the same bits. Measured per
batch of 64 float32 (ms, min of repeats; the tap-by-tap loop it replaced -> now): LeNet's first
pool (64x28x28x6) 0.53 -> 0.40, cifar's first (64x32x32x32) 2.5 -> 1.7, cifar's second
(64x16x16x64) 1.2 -> 0.83; in the engine's fit, caches cold: 0.72 -> 0.52, 4.3 -> 3.0,
1.46 -> 1.27.

The cores below work on channels-last arrays ``(N, H, W, C)`` (the engine's layout, in which
a tap's view has contiguous runs of ``C``); the public functions take PyTorch's ``(N, C, H, W)``
and hand the cores a transposed view, so both layouts run the same code (a transposed view's
pixels are not contiguous: its taps are gathered number by number).

Gradients:

* max: each window's ``dout`` goes to the position of the window's maximum, and to the first one
  in row-major order when several positions tie (as PyTorch's CPU kernel does). A window whose
  maximum is NaN sends its gradient nowhere.
* avg: each window's ``dout / size**2`` goes to every position of the window; where windows
  overlap (``stride < size``) a pixel receives the sum over the windows that hold it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# Max-pool backward (see the module docstring). Its blocks are window rows whose taps take about
# this many bytes: small enough that a block's taps, hits and gradients stay in the L2 cache
# (2 MiB a core here) from one step to the next. Measured (ms per batch of 64 float32, hot /
# cold cache) for 256 KiB, 512 KiB, 1 MiB: LeNet's first pool 0.43 / 0.54, 0.42 / 0.55,
# 0.42 / 0.55; cifar's first 1.90 / 2.63, 1.84 / 2.52, 1.98 / 2.64; cifar's second
# 0.90 / 1.12, 0.92 / 1.15, 0.96 / 1.16.
_BLOCK_BYTES = 512 * 1024

# A pixel (its C numbers) of at least this many bytes is a run long enough that NumPy's cost
# per run matters less. Such pixels are scattered into dx in one copy, in dx's memory order;
# shorter ones one copy per tap (which walks out_w pixels apart instead of the tap axis's size
# pixels). Measured (ms, 64x28x28xC float32, gathered, per tap vs one copy): 12-byte pixels
# 0.29 vs 0.37, 24 (LeNet's) 0.42 vs 0.49, 48 0.67 vs 0.69, 64 0.83 vs 0.82, 128 1.66 vs 1.46.
# And inputs of such pixels are gathered only when larger than _GATHER_FROM_BYTES.
_LONG_PIXEL_BYTES = 64

# Inputs of long pixels up to this size fit in cache, and there going tap by tap over strided
# views beats gathering (the gathered copy, written then read back, costs more than it saves).
# Measured with a cold cache (us, float32, tap by tap vs gathered): 64x10x10x16 (LeNet's second
# pool) 182 vs 195, 64x8x8x32 200 vs 231, 64x6x6x64 207 vs 244; larger: 64x14x14x16 339 vs
# 315, 64x16x16x16 468 vs 378, 64x12x12x32 458 vs 386, 64x16x16x64 1338 vs 1172.
_GATHER_FROM_BYTES = 768 * 1024


def _gathers(x: np.ndarray) -> bool:
    """Whether :func:`max_pool_backward_cl` gathers the taps of disjoint windows of ``x``
    ``(N, H, W, C)``: unless it has one channel (a tap's view is then one strided run per row
    of windows, not runs of ``C``; 64x28x28x1 measured 130 us tap by tap, 173 gathered, cold;
    64x56x56x1 353 vs 371) or long pixels in an input of at most :data:`_GATHER_FROM_BYTES`.
    Fewer channels than that gather at any size (64x28x28x2, 392 KiB: 480 vs 214)."""
    C = x.shape[3]
    return C > 1 and (C * x.itemsize < _LONG_PIXEL_BYTES or x.nbytes > _GATHER_FROM_BYTES)


def _pixel_dtype(*arrays: np.ndarray) -> np.dtype | None:
    """A dtype of one whole pixel (``C`` numbers: an unsigned integer of that size, or raw
    bytes) for viewing ``(..., C)`` arrays as pixels ``(...)``, so that a copy moves each pixel
    as one element instead of a run of ``C``; None unless every array's pixels are contiguous."""
    a = arrays[0]
    if any(b.strides[-1] != b.itemsize for b in arrays):
        return None
    nbytes = a.shape[-1] * a.itemsize
    return np.dtype(f"u{nbytes}") if nbytes in (1, 2, 4, 8) else np.dtype((np.void, nbytes))


def _as_pixels(a: np.ndarray, pixel: np.dtype | None) -> np.ndarray:
    """``a`` ``(..., C)`` viewed as pixels ``(...)`` of ``pixel`` (unchanged if None)."""
    return a if pixel is None else a.view(pixel)[..., 0]


def _tap_grid(a: np.ndarray, size: int, stride: int, out_h: int, out_w: int) -> np.ndarray:
    """A view ``(size, size, N, out_h, out_w, ...)`` of channels-last ``a`` ``(N, H, W, ...)``
    (numbers ``(..., C)`` or pixels) for windows that do not overlap (``stride >= size``):
    ``[a, b]`` is tap ``(a, b)`` of every window, the view :func:`_taps` yields."""
    N, H, W = a.shape[:3]
    rest = a.shape[3:]
    if H >= out_h * stride and W >= out_w * stride:
        # slices and a reshape (splitting an axis is always a view): no slow as_strided call
        cut = a[:, : out_h * stride, : out_w * stride]
        grid = cut.reshape(N, out_h, stride, out_w, stride, *rest)[:, :, :size, :, :size]
        return grid.transpose(2, 4, 0, 1, 3, *range(5, 5 + len(rest)))
    sN, sH, sW = a.strides[:3]
    shape = (size, size, N, out_h, out_w, *rest)
    strides = (sH, sW, sN, stride * sH, stride * sW, *a.strides[3:])
    return as_strided(a, shape, strides, writeable=a.flags.writeable)


def _blocks(n: int, out_h: int, rows: int):
    """Yield ``(n0, n1, r0, r1)``: samples ``n0:n1``, window rows ``r0:r1``; a block is at
    most ``rows`` window rows, whole samples when ``rows`` holds one."""
    if rows >= out_h:
        per = rows // out_h
        for n0 in range(0, n, per):
            yield n0, min(n, n0 + per), 0, out_h
    else:
        for n0 in range(n):
            for r0 in range(0, out_h, rows):
                yield n0, n0 + 1, r0, min(out_h, r0 + rows)


@dataclass(frozen=True)
class MaxPoolScratch:
    """Scratch for :func:`max_pool_backward_cl`, for one block of ``rows`` window rows (see
    :func:`max_pool_backward_scratch`): 1-D arrays cut to each block's shape per call."""

    rows: int
    numbers: np.ndarray  # taps gathered from x, then their masks, then their gradients
    hits: np.ndarray  # bool: taps equal to their window's maximum
    seen: np.ndarray  # bool: disjoint windows, hits of the earlier taps; overlapping, claimed


def max_pool_backward_scratch(x_shape, size: int, stride: int, dtype) -> MaxPoolScratch:
    """The scratch :func:`max_pool_backward_cl` needs for channels-last inputs of at most
    ``x_shape`` ``(N, H, W, C)`` and ``dtype``; allocate once, pass it to every call.

    Blocks are window rows whose taps take about :data:`_BLOCK_BYTES` (at least one window row;
    for overlapping windows a whole number of samples, at least one). Disjoint windows hold
    every tap of a block: ``size**2 * rows * out_w * C`` numbers, as many bools, and
    ``size**2 - 2`` times ``rows * out_w * C`` bools; overlapping windows one tap at a time:
    ``rows * out_w * C`` numbers and twice that in bools. Not per sample: the engine's chunk
    size does not count it (it replaced two chunk-sized bool buffers).
    """
    N, H, W, C = x_shape
    out_h, out_w = pool_output_size(H, size, stride), pool_output_size(W, size, stride)
    itemsize = np.dtype(dtype).itemsize
    taps = size * size if stride >= size else 1
    rows = max(1, _BLOCK_BYTES // (taps * out_w * C * itemsize))
    if stride < size:
        rows = max(1, rows // out_h) * out_h  # whole samples: see _backward_overlapping
    rows = min(rows, N * out_h)
    n = rows * out_w * C
    seen = max(taps - 2, 0) * n if stride >= size else n
    return MaxPoolScratch(rows, np.empty(taps * n, dtype), np.empty(taps * n, bool),
                          np.empty(seen, bool))  # fmt: skip


def max_pool_backward_cl(
    dout: np.ndarray,
    x: np.ndarray,
    out: np.ndarray,
    size: int,
    stride: int,
    dx: np.ndarray,
    scratch: MaxPoolScratch | None = None,
) -> np.ndarray:
    """Route ``dout`` ``(N, out_h, out_w, C)`` to the first maximum of each window of ``x``
    ``(N, H, W, C)`` (``out`` is the forward's result), writing ``dx`` ``(N, H, W, C)``.

    A tap equal to its window's maximum takes the window's gradient unless an earlier tap in
    row-major order does; ``dx`` is ``dout * mask`` there (0 or -0 elsewhere, as the product
    gives), summed over the windows that hold a pixel, 0 for pixels in no window. ``scratch``
    is from :func:`max_pool_backward_scratch` for this shape or a larger ``N`` (made here if
    None). Returns ``dx``.
    """
    if scratch is None:
        scratch = max_pool_backward_scratch(x.shape, size, stride, x.dtype)
    rows = min(scratch.rows, x.shape[0] * out.shape[1])
    if stride < size:
        _backward_overlapping(dout, x, out, size, stride, dx, rows, scratch)
    elif _gathers(x):
        _backward_gathered(dout, x, out, size, stride, dx, rows, scratch)
    else:
        _backward_by_tap(dout, x, out, size, stride, dx, scratch)
    return dx


def _zero_outside_windows(dx: np.ndarray, size: int, stride: int, out_h: int, out_w: int):
    """Set the pixels of ``dx`` ``(N, H, W, C)`` that no window holds to 0 (disjoint windows):
    the rows and columns past the last window, and with stride > size the gaps between."""
    if stride > size:
        dx.fill(0)
        return
    if out_h * size < dx.shape[1]:
        dx[:, out_h * size :] = 0
    if out_w * size < dx.shape[2]:
        dx[:, : out_h * size, out_w * size :] = 0


def _backward_gathered(dout, x, out, size, stride, dx, rows, scratch) -> None:
    """:func:`max_pool_backward_cl` for windows that do not overlap (``stride >= size``).

    Per block of window rows, every tap at once, tap-major: one copy gathers the taps of
    ``x`` into ``taps`` ``(size*size, m, r, out_w, C)`` (pixel by pixel: one element per run
    of ``C``), and from there every step is one call over contiguous arrays: the hits
    ``taps == out``, the first hit of each window, its gradient ``dout * mask``; one copy (or
    one per tap, for small pixels) scatters those into ``dx``, whose pixels each belong to at
    most one window.
    """
    N, H, W, C = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    T = size * size
    _zero_outside_windows(dx, size, stride, out_h, out_w)
    pixel = _pixel_dtype(x, dx)
    # Every tap of every window, as pixels when they are contiguous: blocks are slices of these.
    x_grid = _tap_grid(_as_pixels(x, pixel), size, stride, out_h, out_w)
    dx_grid = _tap_grid(_as_pixels(dx, pixel), size, stride, out_h, out_w)
    in_one = C * x.itemsize >= _LONG_PIXEL_BYTES
    for n0, n1, r0, r1 in _blocks(N, out_h, rows):
        block = (n1 - n0, r1 - r0, out_w, C)
        n = math.prod(block)
        taps = scratch.numbers[: T * n].reshape(T, *block)
        hits = scratch.hits[: T * n].reshape(T, *block)
        seen = scratch.seen[: max(T - 2, 0) * n].reshape(max(T - 2, 0), *block)
        taps_px = _as_pixels(taps, pixel).reshape(size, size, *_as_pixels(taps[0], pixel).shape)
        np.copyto(taps_px, x_grid[:, :, n0:n1, r0:r1])
        np.equal(taps, out[n0:n1, r0:r1], out=hits)
        _first_hits(hits, seen, taps)
        np.multiply(taps, dout[n0:n1, r0:r1], out=taps)
        dx_block = dx_grid[:, :, n0:n1, r0:r1]
        if in_one:
            np.copyto(dx_block, taps_px)
        else:
            for a in range(size):
                for b in range(size):
                    np.copyto(dx_block[a, b], taps_px[a, b])


def _first_hits(hits: np.ndarray, seen: np.ndarray, mask: np.ndarray) -> None:
    """``mask[t] = hits[t] and not hits[k] for any k < t``, as numbers 1 and 0: the first tap
    in row-major order that holds its window's maximum. ``hits`` ``(T, ...)`` bool; ``seen``
    ``(T - 2, ...)`` bool scratch, ``seen[t - 2] = hits[0] | ... | hits[t - 1]``."""
    T = hits.shape[0]
    np.copyto(mask[0], hits[0])
    if T > 1:
        np.greater(hits[1], hits[0], out=mask[1])
    before = hits[0]
    for t in range(2, T):
        np.logical_or(before, hits[t - 1], out=seen[t - 2])
        before = seen[t - 2]
    if T > 2:
        np.greater(hits[2:], seen, out=mask[2:])


def _claim_taps(x, dx, out, size, stride, hit, claimed):
    """Yield tap ``(a, b)``'s view of ``dx`` for each tap of the windows of channels-last ``x``
    in row-major order (both ``(N, H, W, C)``, windows ``out.shape[1:3]``), after setting the
    bool ``hit`` (shaped like ``out``) to the windows whose maximum that tap holds and no
    earlier tap did; ``claimed`` (the same shape; may be ``hit`` itself when ``size`` is 1)
    gathers the windows taken so far."""
    out_h, out_w = out.shape[1], out.shape[2]
    dx_taps = _taps(dx, size, stride, out_h, out_w)
    for (a, b, tap), (_, _, dx_tap) in zip(_taps(x, size, stride, out_h, out_w), dx_taps):
        np.equal(tap, out, out=hit)
        if a == 0 and b == 0:
            np.copyto(claimed, hit)
        else:
            np.greater(hit, claimed, out=hit)  # equal to the max and not claimed before
            np.logical_or(claimed, hit, out=claimed)
        yield dx_tap


def _backward_by_tap(dout, x, out, size, stride, dx, scratch) -> None:
    """:func:`max_pool_backward_cl` for windows that do not overlap, tap by tap over strided
    views (no gathered copy): per block of window rows, for each tap in row-major order,
    ``hit = tap == out``, less the windows an earlier tap ``claimed``, and ``dx`` tap
    ``= dout * hit``. ``hit`` and ``claimed`` share ``scratch.hits``, in blocks of as many
    window rows as that holds (one block for the cache-sized inputs this runs on)."""
    N, out_h, out_w, C = out.shape
    _zero_outside_windows(dx, size, stride, out_h, out_w)
    rows = max(1, scratch.hits.size // ((2 if size > 1 else 1) * out_w * C))
    for n0, n1, r0, r1 in _blocks(N, out_h, rows):
        shape = (n1 - n0, r1 - r0, out_w, C)
        n = math.prod(shape)
        hit = scratch.hits[:n].reshape(shape)
        claimed = scratch.hits[n : 2 * n].reshape(shape) if size > 1 else hit  # one tap: unused
        if n1 - n0 == N and r1 - r0 == out_h:  # one block: the arrays themselves
            o, d, xs, dxs = out, dout, x, dx
        else:
            o, d = out[n0:n1, r0:r1], dout[n0:n1, r0:r1]
            xs, dxs = x[n0:n1, r0 * stride :], dx[n0:n1, r0 * stride :]
        for dx_tap in _claim_taps(xs, dxs, o, size, stride, hit, claimed):
            np.multiply(d, hit, out=dx_tap)


def _backward_overlapping(dout, x, out, size, stride, dx, rows, scratch) -> None:
    """:func:`max_pool_backward_cl` for overlapping windows (``stride < size``): tap by tap in
    row-major order over blocks of whole samples, ``dx`` tap ``+= dout * mask``, so a pixel
    held by several windows sums their gradients in tap order (the same sums, in the same
    order, whatever the block)."""
    N = x.shape[0]
    out_h, out_w = out.shape[1], out.shape[2]
    dx.fill(0)
    for n0, n1, _, _ in _blocks(N, out_h, rows):  # whole samples: rows is a multiple of out_h
        shape = (n1 - n0, out_h, out_w, x.shape[3])
        n = math.prod(shape)
        mask, hit, claimed = (a[:n].reshape(shape) for a in (scratch.numbers, scratch.hits,
                                                              scratch.seen))  # fmt: skip
        d = dout[n0:n1]
        for dx_tap in _claim_taps(x[n0:n1], dx[n0:n1], out[n0:n1], size, stride, hit, claimed):
            np.copyto(mask, hit)
            np.multiply(mask, d, out=mask)
            np.add(dx_tap, mask, out=dx_tap)


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
