"""The layers a :class:`tinycnn.Sequential` stack is made of, and how each runs its op pair.

A layer is a small immutable value (``Conv2d(6, 5, pad=2)``): comparable, hashable, with a
``repr`` that evaluates back to an equal layer. It knows the shape it makes of its input and the
shapes of its parameters; ``Sequential`` checks a whole stack with them before anything runs.

Shapes are per sample: ``(C, H, W)`` for images, ``(D,)`` for flat features. Parameters follow
PyTorch's layout: ``Conv2d`` has ``kernel`` ``(F, C, k, k)`` and ``bias`` ``(F,)``; ``Dense`` has
``W`` ``(n_in, units)`` (the seed's ``x @ W``) and ``b`` ``(units,)``. ``Flatten`` is C order of
``(C, H, W)``.

How a layer runs inside the engine is its *runner* (made by ``layer.runner(...)``, used by
``tinycnn.engine``): it computes the layer's forward and backward pass on a chunk of samples
with the ops of ``tinycnn.ops``, in buffers planned once. Inside the engine, images are kept
channels-last, ``(m, H, W, C)``, so that unfolding a conv's windows copies runs of ``C``
channels and a pooling tap is a strided view; the one exception is the network's input, which
a first ``Conv2d`` unfolds straight from the user's ``(N, C, H, W)`` array. Flattening a
channels-last image gives features in ``(H, W, C)`` order; the ``Dense`` layer that reads them
permutes its weight rows once per call to match, so nothing is ever transposed per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._validation import check_int
from .ops.activations import relu_into
from .ops.conv import conv_output_size, fold_cl, unfold
from .ops.pool import (
    avg_pool_backward_cl,
    avg_pool_forward_cl,
    max_pool_backward_cl,
    max_pool_backward_scratch,
    max_pool_forward_cl,
    pool_output_size,
)

Shape = tuple[int, ...]

# The dense forward product runs on W with its columns padded by zeros to a multiple of this:
# BLAS kernels work on column blocks of 8 or 16, and a width like 10 takes a slow path.
OUTPUT_BLOCK = 8


# A Dense layer of at least this many units adds up its weight gradient as dW = x.T @ dout,
# (n_in, units), the public orientation; a narrower one as dW.T = dout.T @ x. Measured on
# batches of 64 float32 (us, dW.T vs dW): 4096 -> 128 units 567 vs 374, and turning dW.T back
# took another 1470 (a (128, 4096) matrix read down its columns, rows 16 KiB apart, is slow
# however it is tiled); 400 -> 120 91 vs 42; 120 -> 84 13 vs 13; but 12544 -> 10 162 vs 197,
# and a narrow dW.T is turned back in 60.
WIDE_UNITS = 32

# A transposed copy of a matrix with at least this many columns goes in blocks of this many
# rows: a whole-matrix copy of (4096, 128) float32 writes one strided number at a time and
# took 2.2 ms, in blocks of 64 rows (each fitting in cache) 0.44 ms; narrower matrices (a
# dense output of 10 units) copy fastest whole.
TRANSPOSE_BLOCK = 64


def copy_transposed(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``dst[...] = src.T`` for ``src`` ``(n, d)`` and ``dst`` ``(d, n)`` (any strides); exact,
    so the blocking changes no number. Returns ``dst``."""
    if src.shape[1] < TRANSPOSE_BLOCK:
        np.copyto(dst, src.T)
        return dst
    for start in range(0, src.shape[0], TRANSPOSE_BLOCK):
        stop = start + TRANSPOSE_BLOCK
        np.copyto(dst[:, start:stop], src[start:stop].T)
    return dst


def hwc_order(shape: Shape | None) -> np.ndarray | None:
    """For images ``(C, H, W)`` flattened channels-last, the public (C order of ``(C, H, W)``)
    index of each feature: ``order[(h*W + w)*C + c] = (c*H + h)*W + w``. None stays None."""
    if shape is None:
        return None
    C, H, W = shape
    return np.arange(C * H * W).reshape(C, H, W).transpose(1, 2, 0).ravel()


class LayerError(ValueError):
    """A layer does not fit the shape it is given (``Sequential`` adds the layer's position)."""


def _describe(shape: Shape) -> str:
    if len(shape) == 3:
        return f"images {shape[0]}x{shape[1]}x{shape[2]} (C x H x W)"
    return f"flat features ({shape[0]},)"


def _spatial(layer: Any, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise LayerError(
            f"{layer!r} needs images (C, H, W) but gets {_describe(shape)}; "
            "put it before the Flatten()"
        )
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Conv2d:
    """Convolution (cross-correlation) of ``filters`` kernels ``kernel_size`` square, every
    ``stride`` pixels, over the input zero-padded by ``pad``: ``(C, H, W) -> (filters, H', W')``
    with ``H' = (H + 2*pad - kernel_size)//stride + 1``."""

    filters: int
    kernel_size: int
    stride: int = 1
    pad: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("filters", 1), ("kernel_size", 1), ("stride", 1), ("pad", 0)):
            value = check_int(f"Conv2d {name}", getattr(self, name), minimum)
            object.__setattr__(self, name, value)

    def output_shape(self, shape: Shape) -> Shape:
        C, H, W = _spatial(self, shape)
        k, p = self.kernel_size, self.pad
        if k > H + 2 * p or k > W + 2 * p:
            raise LayerError(
                f"{self!r}: kernel_size {k} is larger than its padded input, {_describe(shape)} "
                f"with pad={p} ({H + 2 * p}x{W + 2 * p})"
            )
        s = self.stride
        return (self.filters, conv_output_size(H, k, s, p), conv_output_size(W, k, s, p))

    def param_shapes(self, shape: Shape) -> list[Shape]:
        return [(self.filters, shape[0], self.kernel_size, self.kernel_size), (self.filters,)]

    def fan_in(self, shape: Shape) -> int:
        return shape[0] * self.kernel_size**2

    def runner(self, shape: Shape, dtype: np.dtype, first: bool, protected: bool) -> _Runner:
        return _ConvRunner(self, shape, dtype, first, protected)


@dataclass(frozen=True)
class ReLU:
    """``max(x, 0)`` elementwise; its gradient is 0 where the input is exactly 0."""

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_shapes(self, shape: Shape) -> list[Shape]:
        return []

    def runner(self, shape: Shape, dtype: np.dtype, first: bool, protected: bool) -> _Runner:
        return _ReLURunner(self, shape, dtype, first, protected)


@dataclass(frozen=True)
class _Pool2d:
    """What max and average pooling share: a ``size x size`` window every ``stride`` (default
    ``size``) pixels, per channel, no parameters."""

    size: int
    stride: int | None = None

    def __post_init__(self) -> None:
        kind = type(self).__name__
        object.__setattr__(self, "size", check_int(f"{kind} size", self.size, 1))
        if self.stride is not None:
            object.__setattr__(self, "stride", check_int(f"{kind} stride", self.stride, 1))

    def output_shape(self, shape: Shape) -> Shape:
        return _pool_output_shape(self, shape)

    def param_shapes(self, shape: Shape) -> list[Shape]:
        return []

    def runner(self, shape: Shape, dtype: np.dtype, first: bool, protected: bool) -> _Runner:
        return _PoolRunner(self, shape, dtype, first, protected)


@dataclass(frozen=True)
class MaxPool2d(_Pool2d):
    """Maximum over ``size x size`` windows every ``stride`` (default ``size``) pixels, per
    channel: ``(C, H, W) -> (C, (H - size)//stride + 1, (W - size)//stride + 1)``; a partial
    window at the edge is dropped. A tie sends the gradient to the window's first maximum in
    row-major order."""


@dataclass(frozen=True)
class AvgPool2d(_Pool2d):
    """Mean over ``size x size`` windows every ``stride`` (default ``size``) pixels, per channel;
    shapes as :class:`MaxPool2d`. Its gradient spreads ``dout / size**2`` over each window."""


def _pool_output_shape(layer: _Pool2d, shape: Shape) -> Shape:
    C, H, W = _spatial(layer, shape)
    size, stride = layer.size, layer.size if layer.stride is None else layer.stride
    if size > H or size > W:
        raise LayerError(f"{layer!r}: a {size}x{size} window does not fit {_describe(shape)}")
    return (C, pool_output_size(H, size, stride), pool_output_size(W, size, stride))


@dataclass(frozen=True)
class Flatten:
    """Images ``(C, H, W)`` to features ``(C*H*W,)`` in C order; flat input passes unchanged."""

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def param_shapes(self, shape: Shape) -> list[Shape]:
        return []

    def runner(self, shape: Shape, dtype: np.dtype, first: bool, protected: bool) -> _Runner:
        return _FlattenRunner(self, shape, dtype, first, protected)


@dataclass(frozen=True)
class Dense:
    """Fully connected: ``(n_in,) -> (units,)``, ``out = x @ W + b``; needs flat input."""

    units: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", check_int("Dense units", self.units, 1))

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise LayerError(
                f"{self!r} needs flat features but gets {_describe(shape)}; "
                "put a Flatten() before it"
            )
        return (self.units,)

    def param_shapes(self, shape: Shape) -> list[Shape]:
        return [(shape[0], self.units), (self.units,)]

    def fan_in(self, shape: Shape) -> int:
        return shape[0]

    def runner(self, shape: Shape, dtype: np.dtype, first: bool, protected: bool) -> _Runner:
        return _DenseRunner(self, shape, dtype, first, protected)


LAYER_TYPES = (Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dense)
Layer = Conv2d | ReLU | MaxPool2d | AvgPool2d | Flatten | Dense


# ---------------------------------------------------------------------------------------------
# Runners: one layer of one engine. The engine calls, in this order:
#   plan(chunk)                      once: allocate the buffers for chunks of up to `chunk`
#   prepare(params)                  once per call: the parameters in the layouts products want
#   forward(x, m, ctx) -> y          per chunk (ctx: chunk index, whether X is fixed)
#   backward(dy, m, first) -> dx     per chunk, in reverse layer order; `first` = first chunk
#                                    of this process's share (gradients are written, then added)
#   grads(slots) -> [arrays]         once per call: the summed parameter gradients, public layout
#
# The activation passed between runners is, for images, an array (m, H, W, C) (channels last)
# or, into a first layer, the user's (m, C, H, W) slice; for flat features (m, D). `perm` says
# in which order flat features are: None is C order of (C, H, W) (the public order); a shape
# (C, H, W) says they are the (H, W, C) order of such images: feature q is public feature
# hwc_order(perm)[q]. `protected` says the runner must not write over its
# input (the user's data, or an output the previous layer's backward still needs).
# ---------------------------------------------------------------------------------------------


class _Runner:
    n_params = 0
    needs_output = False  # does backward read this layer's own output?
    need_dx = True  # set by the engine: False when no earlier layer has parameters
    training = True  # set by the engine: False for inference (no backward will follow)

    def __init__(self, layer, shape: Shape, dtype: np.dtype, first: bool, protected: bool) -> None:
        self.layer, self.in_shape, self.dtype = layer, shape, dtype
        self.out_shape = layer.output_shape(shape)
        self.first, self.protected = first, protected
        self.in_perm: np.ndarray | None = None
        self.out_perm: np.ndarray | None = None

    def per_sample(self) -> int:
        """Numbers one sample takes in this runner's buffers (for the engine's chunk size)."""
        return 0

    def shared_layout(self, slots: int) -> dict[str, tuple[Shape, Any]]:
        """Arrays that every process of a call reads or writes (see ``tinycnn.engine``)."""
        return {}

    def bind(self, shared: dict[str, np.ndarray]) -> None:
        self.shared = shared

    def plan(self, chunk: int) -> None:
        pass

    def prepare(self, params: list[np.ndarray]) -> None:
        pass

    def grads(self, slots: int) -> list[np.ndarray]:
        return []

    def _images(self, x: np.ndarray) -> np.ndarray:
        """The input as channels-last ``(m, H, W, C)``: a transposed view of a first layer's
        ``(m, C, H, W)`` input, which the first layer always gets (the elementwise ops and
        pooling taps accept any strides)."""
        return x.transpose(0, 2, 3, 1) if self.first else x


class _ConvRunner(_Runner):
    """Conv2d by unfolding windows into a matrix with an extra ones column (or row), so one
    product gives the convolution plus its bias and one gives ``dkernel`` and ``dbias``.

    A first layer unfolds the user's ``(m, C, H, W)`` images channel-major, ``cols`` ``(R, m*P)``
    (rows ``(c, a, b)`` then a row of ones; ``R = C*k*k + 1``, ``P = H'*W'``), whose copies run
    along whole output rows; its windows of a fixed ``X`` (full-batch training) are kept from
    the first call on, as many chunks as fit ``cache_bytes``. Later layers unfold channels-last
    images into ``cols`` ``(m*P, R)`` (columns ``(a, b, c)`` then ones), copying runs of ``C``.
    Either way the output is ``(m*P, F)``: channels-last ``(m, H', W', F)``.
    """

    n_params = 2

    def __init__(self, layer, shape, dtype, first, protected):
        super().__init__(layer, shape, dtype, first, protected)
        k = layer.kernel_size
        self.P = self.out_shape[1] * self.out_shape[2]
        self.R = shape[0] * k * k + 1
        self.kept: dict[int, np.ndarray] = {}  # chunk index -> its windows (first layer)
        self.n_kept_chunks = 0

    def per_sample(self) -> int:
        C, H, W = self.in_shape
        p = self.layer.pad
        padded = (H + 2 * p) * (W + 2 * p) * C if p else 0
        return (self.R + self.layer.filters) * self.P + padded * (1 if self.first else 2)

    def shared_layout(self, slots):
        F, R = self.layer.filters, self.R
        return {"K": ((R, F), self.dtype), "K_t": ((F, R - 1), self.dtype),
                "dK": ((slots, R, F), self.dtype)}  # fmt: skip

    def plan(self, chunk):
        C, H, W = self.in_shape
        F, p, dt = self.layer.filters, self.layer.pad, self.dtype
        n, P, R = chunk, self.P, self.R
        self.cols = np.zeros(R * n * P, dtype=dt)
        self.out = np.zeros((n * P, F), dtype=dt)
        self.part = np.zeros((R, F), dtype=dt)
        self.padded = self.dpadded = None
        if p:  # only the interior is ever written: the border stays zero
            shape = (n, C, H + 2 * p, W + 2 * p) if self.first else (n, H + 2 * p, W + 2 * p, C)
            self.padded = np.zeros(shape, dtype=dt)
            if not self.first:
                self.dpadded = np.zeros((n, H + 2 * p, W + 2 * p, C), dtype=dt)
        self.dx = None
        if not self.first and self.protected:
            self.dx = np.zeros((n, H, W, C), dtype=dt)
        self._ones_for = 0  # the chunk size whose ones row/column self.cols holds

    def keep_windows(self, n_samples: int, chunk: int, cache_bytes: int) -> None:
        """Keep the windows of a fixed input's first chunks (as many whole ones as fit
        ``cache_bytes``) from the first call on. First layer only."""
        per_chunk = self.R * self.P * chunk * self.dtype.itemsize
        n_chunks = -(-n_samples // chunk)
        self.n_kept_chunks = min(n_chunks, cache_bytes // max(1, per_chunk))
        if self.n_kept_chunks == n_chunks - 1 and n_samples % chunk:
            last = self.R * self.P * (n_samples % chunk) * self.dtype.itemsize
            if per_chunk * self.n_kept_chunks + last <= cache_bytes:
                self.n_kept_chunks = n_chunks

    def prepare(self, params):
        kernel, bias = params
        F, R = self.layer.filters, self.R
        K = self.shared["K"]
        if self.first:  # rows (c, a, b): the kernel's own order
            np.copyto(K[: R - 1], kernel.reshape(F, R - 1).T)
        else:  # rows (a, b, c), the order of channels-last windows
            np.copyto(K[: R - 1].reshape(*kernel.shape[2:], kernel.shape[1], F),
                      kernel.transpose(2, 3, 1, 0))  # fmt: skip
            np.copyto(self.shared["K_t"], K[: R - 1].T)
        K[R - 1] = bias

    def _first_cols(self, x: np.ndarray, m: int, chunk_index: int, fixed: bool) -> np.ndarray:
        """The windows plus the row of ones ``(R, m*P)`` of a first layer's chunk."""
        kept = self.kept.get(chunk_index) if fixed else None
        if kept is not None:
            return kept
        R, P, p = self.R, self.P, self.layer.pad
        keep = fixed and chunk_index < self.n_kept_chunks
        # np.empty, then each byte written once (np.ones would fill it first, slowly)
        cols = np.empty((R, m * P), dtype=self.dtype) if keep else self.cols[: R * m * P]
        cols = cols.reshape(R, m * P)
        if p:
            self.padded[:m, :, p:-p, p:-p] = x
            x = self.padded[:m]
        unfold(x, self.layer.kernel_size, self.layer.stride, 0, out=cols[: R - 1])
        if keep:
            cols[R - 1] = 1
            self.kept[chunk_index] = cols
        elif self._ones_for != m:
            # A shorter chunk's ones row lies inside a full chunk's windows: set it again
            # whenever the size changes.
            cols[R - 1] = 1
            self._ones_for = m
        return cols

    def _later_cols(self, x: np.ndarray, m: int) -> np.ndarray:
        """The windows plus a column of ones ``(m*P, R)`` of channels-last ``x``."""
        R, P, p, k, s = self.R, self.P, self.layer.pad, self.layer.kernel_size, self.layer.stride
        _, oh, ow = self.out_shape
        if p:
            self.padded[:m, p:-p, p:-p] = x
            x = self.padded[:m]
        cols = self.cols[: m * P * R].reshape(m * P, R)
        windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s][:, :oh, :ow]
        target = cols[:, : R - 1].reshape(m, oh, ow, k, k, -1)
        assert np.may_share_memory(target, cols)  # a view (a bounds check: cheap per chunk)
        np.copyto(target, windows.transpose(0, 1, 2, 4, 5, 3))  # (m, H', W', k, k, C)
        cols[:, R - 1] = 1  # every time: the backward pass reuses this buffer for dcols
        return cols

    def forward(self, x, m, chunk_index, fixed):
        out = self.out[: m * self.P]
        K = self.shared["K"]
        if self.first:
            self._cols = self._first_cols(x, m, chunk_index, fixed)
            np.matmul(self._cols.T, K, out=out)
        else:
            self._cols = self._later_cols(x, m)
            np.matmul(self._cols, K, out=out)
        self._x = x
        _, oh, ow = self.out_shape
        return out.reshape(m, oh, ow, self.layer.filters)

    def backward(self, dy, m, slot, first_in_share):
        F, R, P = self.layer.filters, self.R, self.P
        dz = dy.reshape(m * P, F)  # a copy only if the next layer handed a strided view
        target = self.shared["dK"][slot] if first_in_share else self.part
        if self.first:
            np.matmul(self._cols, dz, out=target)  # [dkernel | dbias] with the ones row
        else:
            np.matmul(self._cols.T, dz, out=target)
        if not first_in_share:
            self.shared["dK"][slot] += self.part
        if self.first or not self.need_dx:
            return None
        # dx: the windows' gradient (over the windows' own buffer, no longer needed) folded
        # back onto the pixels they came from.
        dcols = self.cols[: m * P * (R - 1)].reshape(m * P, R - 1)
        np.matmul(dz, self.shared["K_t"], out=dcols)
        C, H, W = self.in_shape
        k, s, p = self.layer.kernel_size, self.layer.stride, self.layer.pad
        _, oh, ow = self.out_shape
        if p:
            dx_full = self.dpadded[:m]
        elif self.dx is not None:
            dx_full = self.dx[:m]
        else:
            dx_full = self._x  # the input's buffer is ours to reuse
        fold_cl(dcols.reshape(m, oh, ow, k, k, C), dx_full, s)
        return dx_full[:, p:-p, p:-p] if p else dx_full

    def grads(self, slots):
        dK = self.shared["dK"]
        total = dK[0].copy()
        for j in range(1, slots):  # in a fixed order: the result does not depend on who ran
            total += dK[j]
        F, R = self.layer.filters, self.R
        C, k = self.in_shape[0], self.layer.kernel_size
        if self.first:
            dkernel = total[: R - 1].T.reshape(F, C, k, k)
        else:
            dkernel = total[: R - 1].reshape(k, k, C, F).transpose(3, 2, 0, 1)
        return [np.ascontiguousarray(dkernel), total[R - 1].copy()]


class _ReLURunner(_Runner):
    """``max(x, 0)`` over the input's own buffer when the previous layer's backward does not
    need it (a conv's or dense's output), with its derivative as a bool mask; the backward
    multiplies the incoming gradient by the mask in place."""

    def __init__(self, layer, shape, dtype, first, protected):
        super().__init__(layer, shape, dtype, first, protected)
        self.in_place = not protected

    def per_sample(self):
        return 0 if self.in_place else math.prod(self.in_shape)

    def plan(self, chunk):
        self.mask = np.zeros((chunk, *self._layout()), dtype=bool)
        self.out = None if self.in_place else np.zeros((chunk, *self._layout()), dtype=self.dtype)
        # only ever read (see ops/activations.py): not counted in per_sample
        self.zeros = np.zeros((chunk, *self._layout()), dtype=self.dtype)

    def _layout(self) -> Shape:
        if len(self.in_shape) == 3:
            C, H, W = self.in_shape
            return (H, W, C)
        return self.in_shape

    def forward(self, x, m, chunk_index, fixed):
        x = self._images(x) if len(self.in_shape) == 3 else x
        y = x if self.in_place else self.out[:m]
        relu_into(x, y, self.zeros[:m])
        if self.training:
            np.greater(y, 0, out=self.mask[:m])  # while the activations are in cache
        return y

    def backward(self, dy, m, slot, first_in_share):
        np.multiply(dy, self.mask[:m], out=dy)
        return dy


class _PoolRunner(_Runner):
    """Max or average pooling over channels-last images (``ops/pool.py``'s cores)."""

    def __init__(self, layer, shape, dtype, first, protected):
        super().__init__(layer, shape, dtype, first, protected)
        self.is_max = isinstance(layer, MaxPool2d)
        self.needs_output = self.is_max
        self.size = layer.size
        self.stride = layer.size if layer.stride is None else layer.stride
        # max backward reads its input while writing dx: a buffer of its own
        self.dx_in_place = not self.is_max and not protected and not first

    def per_sample(self):
        C, H, W = self.in_shape
        rows = self.out_shape[1] * W * C
        return math.prod(self.out_shape) + rows + (0 if self.dx_in_place else C * H * W)

    def plan(self, chunk):
        C, H, W = self.in_shape
        _, oh, ow = self.out_shape
        self.out = np.zeros((chunk, oh, ow, C), dtype=self.dtype)
        self.rows = np.zeros((chunk, oh, W, C), dtype=self.dtype)  # the forward's first step
        self.dx = None if self.dx_in_place or self.first else np.zeros((chunk, H, W, C), self.dtype)
        # The max backward's scratch (one block of window rows, not per sample), where it runs.
        self.scratch = None
        if self.is_max and not self.first and self.need_dx:
            self.scratch = max_pool_backward_scratch((chunk, H, W, C), self.size, self.stride,
                                                     self.dtype)  # fmt: skip

    def forward(self, x, m, chunk_index, fixed):
        x = self._images(x)
        self._x = x
        out = self.out[:m]
        pool = max_pool_forward_cl if self.is_max else avg_pool_forward_cl
        return pool(x, self.size, self.stride, out, self.rows[:m])

    def backward(self, dy, m, slot, first_in_share):
        if self.first or not self.need_dx:
            return None
        dx = self._x if self.dx_in_place else self.dx[:m]
        if self.is_max:
            return max_pool_backward_cl(
                dy, self._x, self.out[:m], self.size, self.stride, dx, self.scratch
            )
        return avg_pool_backward_cl(dy, self.size, self.stride, dx)


class _FlattenRunner(_Runner):
    """A reshape (no copy) of channels-last images to ``(m, H*W*C)``, features in ``(H, W, C)``
    order (``out_perm`` maps them to the public ``(C, H, W)`` order); of a first layer's
    ``(m, C, H, W)`` input, or of flat input, features already in the public order."""

    def __init__(self, layer, shape, dtype, first, protected):
        super().__init__(layer, shape, dtype, first, protected)
        if len(shape) == 3 and not first:
            self.out_perm = shape  # features in (H, W, C) order of these (C, H, W) images

    def forward(self, x, m, chunk_index, fixed):
        self._shape = x.shape
        return x.reshape(m, -1)

    def backward(self, dy, m, slot, first_in_share):
        return None if self.first else dy.reshape(self._shape)


class _DenseRunner(_Runner):
    """``out = x @ W + b``. ``W`` is prepared once per call: its rows put in the order of the
    incoming features, and its columns padded to :data:`OUTPUT_BLOCK`; its transpose is kept
    too, for ``dx = dout @ W.T``. Each chunk's weight gradient is added up per process, as
    ``dW = x.T @ dout`` ``(n_in, units)`` for a layer of at least :data:`WIDE_UNITS` units and
    as ``dW.T = dout.T @ x`` ``(units, n_in)`` for a narrower one (the faster orientation of
    each, see :data:`WIDE_UNITS`); ``db`` likewise."""

    n_params = 2

    def __init__(self, layer, shape, dtype, first, protected):
        super().__init__(layer, shape, dtype, first, protected)
        self.units_pad = -(-layer.units // OUTPUT_BLOCK) * OUTPUT_BLOCK
        self.wide = layer.units >= WIDE_UNITS
        D, O = shape[0], layer.units
        # each process's weight gradient: dW (D, O) if wide, else dW.T (O, D)
        self.grad_shape = (D, O) if self.wide else (O, D)

    def per_sample(self):
        return self.units_pad + (self.in_shape[0] if self.protected and not self.first else 0)

    def shared_layout(self, slots):
        D, O, dt = self.in_shape[0], self.layer.units, self.dtype
        return {"W": ((D, self.units_pad), dt), "W_t": ((O, D), dt), "b": ((O,), dt),
                "dW": ((slots, *self.grad_shape), dt), "db": ((slots, O), dt)}  # fmt: skip

    def plan(self, chunk):
        D, dt = self.in_shape[0], self.dtype
        self.out = np.zeros((chunk, self.units_pad), dtype=dt)
        self.part = np.zeros(self.grad_shape, dtype=dt)
        # a narrow dW in the (H, W, C) row order of the incoming features, before its rows are
        # reordered
        self.dW_hwc = None
        if self.in_perm is not None and not self.wide:
            self.dW_hwc = np.zeros((D, self.layer.units), dtype=dt)
        self.dx = None
        if self.protected and not self.first:
            self.dx = np.zeros((chunk, D), dtype=dt)

    def prepare(self, params):
        W, b = params
        O = self.layer.units
        Wp = self.shared["W"][:, :O]  # the padding columns stay 0
        if self.in_perm is None:
            np.copyto(Wp, W)
        else:  # rows from (C, H, W) order to the (H, W, C) order of the features: a strided copy
            C, H, Wd = self.in_perm
            np.copyto(Wp.reshape(H, Wd, C, O), W.reshape(C, H, Wd, O).transpose(1, 2, 0, 3))
        copy_transposed(self.shared["W_t"], Wp)
        np.copyto(self.shared["b"], b)

    def forward(self, x, m, chunk_index, fixed):
        self._x = x
        out = self.out[:m]
        np.matmul(x, self.shared["W"], out=out)
        y = out[:, : self.layer.units]
        y += self.shared["b"]
        return y

    def backward(self, dy, m, slot, first_in_share):
        dW, db = self.shared["dW"][slot], self.shared["db"][slot]
        target = dW if first_in_share else self.part
        if self.wide:
            np.matmul(self._x.T, dy, out=target)
        else:
            np.matmul(dy.T, self._x, out=target)
        if first_in_share:
            np.sum(dy, axis=0, out=db)
        else:
            dW += self.part
            db += dy.sum(axis=0)
        if self.first or not self.need_dx:
            return None
        dx = self.dx[:m] if self.dx is not None else self._x  # the input's buffer, if ours
        np.matmul(dy, self.shared["W_t"], out=dx)
        return dx

    def grads(self, slots):
        parts, db = self.shared["dW"], self.shared["db"]
        total_b = db[0].copy()
        for j in range(1, slots):  # in a fixed order: the result does not depend on who ran
            total_b += db[j]
        D, O = self.in_shape[0], self.layer.units
        if slots == 1:
            total = parts[0]  # read once below, into a new array
        else:
            total = parts[0].copy()
            for j in range(1, slots):
                total += parts[j]
        if not self.wide:  # dW.T (O, D) -> rows of dW (D, O), still in the features' order
            rows = np.empty((D, O), self.dtype) if self.in_perm is None else self.dW_hwc
            total = copy_transposed(rows, total)
        if self.in_perm is None:
            return [total if total.base is None else total.copy(), total_b]
        # rows back from (H, W, C) to (C, H, W) order: copies of whole rows
        C, H, Wd = self.in_perm
        dW = np.empty((D, O), dtype=self.dtype)
        np.copyto(dW.reshape(C, H, Wd, O), total.reshape(H, Wd, C, O).transpose(2, 0, 1, 3))
        return [dW, total_b]
