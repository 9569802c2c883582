"""The conv -> ReLU -> flatten -> dense network: its shape, parameters, forward and backward.

The flatten is in C order of ``(F, out_h, out_w)`` (the seed's), so ``W_fc`` ``(F*P, O)`` with
``P = out_h*out_w`` is, without any copy, the stack ``W3 = W_fc.reshape(F, P, O)`` of one
``(P, O)`` block per filter. The conv output is kept in the ``(F, N, P)`` layout its matrix
product yields (see ``ops/conv.py``), and the dense layer reads it per filter:
``logits = sum_f a[f] @ W3[f]``. No activation is ever transposed.

The batch is processed in chunks of a size fixed by the shapes alone (never tuned by timing, so
results are reproducible), and each chunk goes forward and backward while its unfolded windows
are still in cache. A sample's loss gradient depends on that sample alone for both losses, so
chunking changes only the order of the sums, not the result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

from .ops.conv import conv_output_size, unfold
from .ops.losses import mse_loss, softmax_cross_entropy

if TYPE_CHECKING:  # workspace.py imports this module
    from .workspace import Workspace

# How many samples a chunk holds: one policy for the plain path here and for the workspace.
# As many as fit this many numbers of windows (plus a row of ones) and activations, so that a
# chunk's intermediates stay in cache between its forward and its backward pass...
CHUNK_ELEMENTS = 1 << 17
# ...but at least this many: the dense layer's products read all of W_fc once per chunk, which
# only pays off over enough rows...
MIN_CHUNK_SAMPLES = 64
# ...unless that many samples of very large images would take more than this many numbers: then
# as many as fit, and at least one.
MAX_CHUNK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class ConvNetSpec:
    """The network's shape. Input ``(N, in_channels, height, width)``, output ``(N, n_outputs)``."""

    in_channels: int
    height: int
    width: int
    n_filters: int
    kernel_size: int
    stride: int
    pad: int
    n_outputs: int

    @property
    def out_h(self) -> int:
        return conv_output_size(self.height, self.kernel_size, self.stride, self.pad)

    @property
    def out_w(self) -> int:
        return conv_output_size(self.width, self.kernel_size, self.stride, self.pad)

    @property
    def n_hidden(self) -> int:
        """Length of the flattened conv output: ``n_filters * out_h * out_w``."""
        return self.n_filters * self.out_h * self.out_w

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        F, C, k = self.n_filters, self.in_channels, self.kernel_size
        return {
            "kernel": (F, C, k, k),
            "bias_conv": (F,),
            "W_fc": (self.n_hidden, self.n_outputs),
            "b_fc": (self.n_outputs,),
        }

    @property
    def numbers_per_sample(self) -> int:
        """What one sample takes in a chunk: its windows ``C*k*k * P``, a row of ones ``P`` and
        its activations ``F * P`` (``P = out_h * out_w``)."""
        P = self.out_h * self.out_w
        return (self.in_channels * self.kernel_size**2 + 1 + self.n_filters) * P

    def chunk_size(self) -> int:
        """Samples per chunk: a fixed function of the shapes, never of timings, so that results
        are reproducible (see :data:`CHUNK_ELEMENTS`)."""
        per_sample = max(1, self.numbers_per_sample)
        n = CHUNK_ELEMENTS // per_sample
        if n >= MIN_CHUNK_SAMPLES:
            return n
        return max(1, min(MIN_CHUNK_SAMPLES, MAX_CHUNK_ELEMENTS // per_sample))


class ConvNetParams(NamedTuple):
    """The learned arrays (also used for their gradients, and for optimizer state)."""

    kernel: np.ndarray  # (F, C, k, k)
    bias_conv: np.ndarray  # (F,)
    W_fc: np.ndarray  # (F*out_h*out_w, O)
    b_fc: np.ndarray  # (O,)

    def copy(self) -> ConvNetParams:
        return ConvNetParams(*(p.copy() for p in self))

    def zeros_like(self) -> ConvNetParams:
        # C-contiguous whatever the parameters' layout: backward_chunk writes through reshapes.
        return ConvNetParams(*(np.zeros(p.shape, dtype=p.dtype) for p in self))


def _memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(
    spec: ConvNetSpec, dtype: npt.DTypeLike, filters_name: str = "n_filters"
) -> None:
    """Refuse, with a ValueError naming the sizes, a network whose parameters plus one sample's
    windows and activations (the least any forward pass holds) exceed this machine's memory:
    such a run could only end in a MemoryError or in swapping. ``filters_name`` is what the
    caller's users call the number of filters."""
    n_params = sum(math.prod(shape) for shape in spec.param_shapes.values())
    need = (n_params + spec.numbers_per_sample) * np.dtype(dtype).itemsize
    have = _memory_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"the network is too large for this machine: {filters_name}={spec.n_filters}, "
            f"kernel_size={spec.kernel_size}, stride={spec.stride}, pad={spec.pad} on "
            f"{spec.in_channels}x{spec.height}x{spec.width} inputs give a "
            f"{spec.n_filters}x{spec.out_h}x{spec.out_w} conv output and {n_params:,} "
            f"parameters: {_human_bytes(need)} in {np.dtype(dtype)}, more than its "
            f"{_human_bytes(have)} of memory"
        )


def _human_bytes(n_bytes: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``3 * 2**40`` -> ``"3.0 TiB"``."""
    size, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:,.1f} {unit}"


def init_params_seed(spec: ConvNetSpec, dtype=np.float64) -> ConvNetParams:
    """The seed's initialisation, from NumPy's *global* random state, in this order only:
    ``kernel = randn(F, C, k, k) * 0.1``, then ``W_fc = randn(F*out_h*out_w, O) * 0.1``;
    biases 0. A network too large for the machine is refused before anything is drawn."""
    check_fits_in_memory(spec, dtype)
    shapes = spec.param_shapes
    kernel = np.random.randn(*shapes["kernel"]) * 0.1
    W_fc = np.random.randn(*shapes["W_fc"]) * 0.1
    return ConvNetParams(
        kernel.astype(dtype, copy=False),
        np.zeros(shapes["bias_conv"], dtype=dtype),
        W_fc.astype(dtype, copy=False),
        np.zeros(shapes["b_fc"], dtype=dtype),
    )


def init_params_he(spec: ConvNetSpec, rng: np.random.Generator, dtype=np.float64) -> ConvNetParams:
    """He (Kaiming) normal initialisation from ``rng``: weights ``N(0, 2/fan_in)``, biases 0.

    Suited to ReLU; the dense layer's fan-in is ``n_hidden``, the conv's ``C*k*k``. A network
    too large for the machine is refused before anything is drawn.
    """
    check_fits_in_memory(spec, dtype)
    shapes = spec.param_shapes
    fan_conv = spec.in_channels * spec.kernel_size**2
    kernel = rng.standard_normal(shapes["kernel"]) * np.sqrt(2.0 / fan_conv)
    W_fc = rng.standard_normal(shapes["W_fc"]) * np.sqrt(1.0 / spec.n_hidden)
    return ConvNetParams(
        kernel.astype(dtype),
        np.zeros(shapes["bias_conv"], dtype=dtype),
        W_fc.astype(dtype),
        np.zeros(shapes["b_fc"], dtype=dtype),
    )


class ChunkCache(NamedTuple):
    cols: np.ndarray  # (C*k*k, n*P) unfolded windows of the chunk
    z: np.ndarray  # (F, n*P) conv pre-activations
    a: np.ndarray  # (F, n, P) ReLU output


def forward_chunk(
    params: ConvNetParams, spec: ConvNetSpec, x: np.ndarray, cols: np.ndarray | None = None
) -> tuple[np.ndarray, ChunkCache]:
    """Forward ``x`` ``(n, C, H, W)`` to ``logits`` ``(n, O)``; ``cols`` may be precomputed."""
    F, n = spec.n_filters, x.shape[0]
    if cols is None:
        cols = unfold(x, spec.kernel_size, spec.stride, spec.pad)  # (C*k*k, n*P)
    z = params.kernel.reshape(F, -1) @ cols  # (F, n*P)
    z += params.bias_conv[:, None]
    a = np.maximum(z, 0).reshape(F, n, -1)  # (F, n, P)
    W3 = params.W_fc.reshape(F, -1, spec.n_outputs)  # (F, P, O), a view
    logits = np.matmul(a, W3).sum(axis=0)  # (F, n, O) -> (n, O)
    logits += params.b_fc
    return logits, ChunkCache(cols, z, a)


def backward_chunk(
    dlogits: np.ndarray,
    cache: ChunkCache,
    params: ConvNetParams,
    spec: ConvNetSpec,
    grads: ConvNetParams,
) -> None:
    """Accumulate this chunk's gradients into ``grads`` given ``dlogits`` ``(n, O)``.

    dense: ``dW3[f] = a[f].T @ dlogits``, ``da[f] = dlogits @ W3[f].T``;
    ReLU: ``dz = da * (z > 0)``;
    conv: ``dkernel = dz @ cols.T``, ``dbias = dz.sum(1)``. The conv's ``dx`` is never formed:
    the input layer's gradient is not needed.
    """
    F, O = spec.n_filters, spec.n_outputs
    W3 = params.W_fc.reshape(F, -1, O)
    # Reshape the fresh products, never the accumulators: reshaping a non-contiguous array
    # returns a copy, and an in-place add into that copy would be silently lost.
    grads.W_fc[...] += np.matmul(cache.a.transpose(0, 2, 1), dlogits).reshape(grads.W_fc.shape)
    grads.b_fc[...] += dlogits.sum(axis=0)
    dz = np.matmul(dlogits, W3.transpose(0, 2, 1)).reshape(F, -1)  # (F, n*P)
    dz *= cache.z > 0
    grads.kernel[...] += (dz @ cache.cols.T).reshape(grads.kernel.shape)
    grads.bias_conv[...] += dz.sum(axis=1)


# (pred, target, n_total, out=None) -> (loss, dpred)
LossFn = Callable[..., tuple[float, np.ndarray]]
LOSSES: dict[str, LossFn] = {"mse": mse_loss, "cross_entropy": softmax_cross_entropy}


def loss_and_grads(
    params: ConvNetParams,
    spec: ConvNetSpec,
    X: np.ndarray,
    T: np.ndarray,
    loss: str = "mse",
    *,
    workspace: Workspace | None = None,
    chunk_size: int | None = None,
) -> tuple[float, ConvNetParams]:
    """The loss of ``params`` on ``X`` ``(N, C, H, W)`` with targets ``T`` ``(N, O)`` and its
    gradient with respect to every parameter (a :class:`ConvNetParams` of the same shapes).

    ``loss`` is ``"mse"`` (mean over all ``N*O`` entries) or ``"cross_entropy"`` (softmax, mean
    over samples).

    Without ``workspace`` this is the plain version, fresh arrays at every step. With a
    :class:`tinycnn.workspace.Workspace` built for ``spec`` the same numbers come from its reused
    buffers (faster; equal up to the order of floating-point sums), and the returned gradients
    are views of the workspace, overwritten by its next use. ``chunk_size`` overrides the
    plain path's samples per chunk (tests use it to put chunk boundaries anywhere).
    """
    if workspace is not None:
        if workspace.spec != spec:
            raise ValueError(f"workspace was built for {workspace.spec}, not for {spec}")
        return workspace.loss_and_grads(params, X, T, loss)
    loss_fn = LOSSES[loss]
    N = X.shape[0]
    grads = params.zeros_like()
    total = 0.0
    step = spec.chunk_size() if chunk_size is None else chunk_size
    for start in range(0, N, step):
        stop = min(start + step, N)
        logits, cache = forward_chunk(params, spec, X[start:stop])
        part, dlogits = loss_fn(logits, T[start:stop], N)
        total += part
        backward_chunk(dlogits, cache, params, spec, grads)
    return total, grads


def predict(
    params: ConvNetParams, spec: ConvNetSpec, X: np.ndarray, *, chunk_size: int | None = None
) -> np.ndarray:
    """The network's outputs (logits for a classifier) ``(N, O)`` for ``X`` ``(N, C, H, W)``,
    ``chunk_size`` samples at a time (default: :meth:`ConvNetSpec.chunk_size`)."""
    N = X.shape[0]
    out = np.empty((N, spec.n_outputs), dtype=params.W_fc.dtype)
    step = spec.chunk_size() if chunk_size is None else chunk_size
    for start in range(0, N, step):
        stop = min(start + step, N)
        out[start:stop], _ = forward_chunk(params, spec, X[start:stop])
    return out
