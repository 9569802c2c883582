"""``Sequential``: a stack of layers, checked whole at construction, with its parameters as a list.

    net = Sequential([Conv2d(6, 5, pad=2), ReLU(), MaxPool2d(2), Flatten(), Dense(10)],
                     input_shape=(1, 28, 28))
    params = net.init_params(0)                         # [kernel, bias, W, b]
    out = net.forward(params, X)                        # X (N, 1, 28, 28) -> (N, 10)
    loss, grads = net.loss_and_grads(params, X, T, loss="softmax_cross_entropy")

``params`` holds two arrays per layer with parameters, in layer order: ``Conv2d`` ->
``kernel (F, C, k, k)``, ``bias (F,)``; ``Dense`` -> ``W (n_in, units)``, ``b (units,)``.
The forward pass walks the layers in order; the backward pass walks them in reverse, each layer
turning the gradient of its output into the gradients of its parameters and of its input
(the first layer computes no input gradient: nobody needs it). Both run in a
:class:`tinycnn.engine.Engine`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._validation import check_float_dtype, check_int, check_real_array
from .engine import LOSSES, Engine, build_runners
from .inference import forward_pass
from .layers import (
    LAYER_TYPES,
    AvgPool2d,
    Conv2d,
    Dense,
    Layer,
    LayerError,
    MaxPool2d,
    ReLU,
    Shape,
)


class Sequential:
    """A stack of layers (``Conv2d``, ``ReLU``, ``MaxPool2d``, ``AvgPool2d``, ``Flatten``,
    ``Dense``) on inputs of ``input_shape`` ``(C, H, W)``.

    A stack that does not fit is refused here, before anything is drawn or computed: a layer
    that does not fit the shape it gets raises ``ValueError`` naming its position, the layer and
    that shape; the stack must end in flat features ``(D,)`` (a ``Flatten`` or ``Dense``).
    """

    def __init__(self, layers: Sequence[Layer], input_shape: Sequence[int]) -> None:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
            raise TypeError(f"layers must be a list of layers, got {_short(layers)}")
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers is empty: a stack needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, LAYER_TYPES):
                raise TypeError(
                    f"layers[{i}] is {_short(layer)}, not a layer (one of "
                    f"{', '.join(t.__name__ for t in LAYER_TYPES)})"
                )
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
            raise TypeError(f"input_shape must be (C, H, W), got {_short(input_shape)}")
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)!r}")
        shape = tuple(check_int(f"input_shape[{i}]", v, 1) for i, v in enumerate(input_shape))
        shapes: list[Shape] = [shape]
        for i, layer in enumerate(layers):
            try:
                shape = layer.output_shape(shape)
            except LayerError as exc:
                raise ValueError(f"layer {i} ({layer!r}) does not fit: {exc}") from None
            shapes.append(shape)
        if len(shape) != 1:
            raise ValueError(
                f"the stack ends in {shape[0]}x{shape[1]}x{shape[2]} images; it must end in flat "
                "features (N, D): add Flatten() (and usually Dense(n_outputs)) at the end"
            )
        self.layers: tuple[Layer, ...] = layers
        self.input_shape: tuple[int, int, int] = shapes[0]  # type: ignore[assignment]
        self.shapes: list[Shape] = shapes[:-1]  # the input shape of each layer
        self.output_shape: Shape = shapes[-1]

    def __repr__(self) -> str:
        return f"Sequential({list(self.layers)!r}, input_shape={self.input_shape!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Sequential)
            and self.layers == other.layers
            and self.input_shape == other.input_shape
        )

    def __hash__(self) -> int:
        return hash((self.layers, self.input_shape))

    @property
    def param_shapes(self) -> list[Shape]:
        """The shape of each array of ``params``, in order."""
        return [s for layer, shape in zip(self.layers, self.shapes)
                for s in layer.param_shapes(shape)]  # fmt: skip

    @property
    def n_outputs(self) -> int:
        return self.output_shape[0]

    def numbers_per_sample(self, dtype: npt.DTypeLike = np.float64) -> int:
        """How many numbers one sample takes in the engine's buffers (windows, activations)."""
        return sum(r.per_sample() for r in build_runners(self, np.dtype(dtype)))

    def check_fits_in_memory(self, dtype: npt.DTypeLike = np.float64) -> None:
        """Refuse, with a ValueError naming the sizes, a stack whose parameters plus one sample's
        activations exceed this machine's memory: training it could only end in a MemoryError
        or in swapping."""
        n_params = sum(math.prod(s) for s in self.param_shapes)
        need = (n_params + self.numbers_per_sample(dtype)) * np.dtype(dtype).itemsize
        have = _memory_bytes()
        if have is not None and need > have:
            raise ValueError(
                f"the network is too large for this machine: {self!r} has {n_params:,} "
                f"parameters: {_human_bytes(need)} in {np.dtype(dtype)}, more than its "
                f"{_human_bytes(have)} of memory"
            )

    def init_params(
        self, seed: int | np.random.Generator = 0, dtype: npt.DTypeLike = np.float64
    ) -> list[np.ndarray]:
        """Fresh parameters: weights normal with variance ``gain / fan_in`` (``fan_in`` a
        conv's ``C*k*k``, a dense layer's ``n_in``), ``gain`` 2 when a ReLU follows before the
        next layer with parameters (He), else 1 (LeCun); biases 0. Drawn layer by layer from
        ``np.random.default_rng(seed)`` (or the Generator given) in float64, then cast to
        ``dtype`` (float32 or float64)."""
        dt = check_float_dtype("dtype", dtype)
        if not isinstance(seed, np.random.Generator):
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise TypeError(
                    f"seed must be a non-negative int or a np.random.Generator, got {_short(seed)}"
                )
            seed = np.random.default_rng(int(seed))
        self.check_fits_in_memory(dt)
        params: list[np.ndarray] = []
        for i, (layer, shape) in enumerate(zip(self.layers, self.shapes)):
            shapes = layer.param_shapes(shape)
            if not shapes:
                continue
            gain = 2.0 if self._relu_follows(i) else 1.0
            std = math.sqrt(gain / layer.fan_in(shape))  # type: ignore[union-attr]
            params.append((seed.standard_normal(shapes[0]) * std).astype(dt))
            params.append(np.zeros(shapes[1], dtype=dt))
        return params

    def _relu_follows(self, i: int) -> bool:
        for layer in self.layers[i + 1 :]:
            if isinstance(layer, ReLU):
                return True
            if isinstance(layer, (Conv2d, Dense)):
                return False
        return False

    def check_params(self, params: Any, name: str = "params") -> list[np.ndarray]:
        """``params`` as a list of float arrays of one dtype with this stack's shapes, or a
        ValueError/TypeError naming the first one that is not."""
        if isinstance(params, np.ndarray) or not isinstance(params, Sequence):
            raise TypeError(f"{name} must be a list of arrays, got {_short(params)}")
        shapes = self.param_shapes
        if len(params) != len(shapes):
            raise ValueError(f"{name} has {len(params)} arrays; this stack has {len(shapes)} "
                             f"(shapes {shapes})")  # fmt: skip
        out = []
        dtype = None
        for i, (p, shape) in enumerate(zip(params, shapes)):
            arr = check_real_array(f"{name}[{i}]", p, ndim=None, dtype=None, finite=False)
            if arr.dtype not in (np.float32, np.float64):
                arr = arr.astype(np.float64)
            dtype = arr.dtype if dtype is None else dtype
            if arr.shape != shape:
                raise ValueError(f"{name}[{i}] has shape {arr.shape}, expected {shape}")
            if arr.dtype != dtype:
                raise ValueError(f"{name}[{i}] is {arr.dtype} but {name}[0] is {dtype}: "
                                 "all parameters must have one dtype")  # fmt: skip
            out.append(arr)
        return out

    def _check_inputs(self, X: Any, dtype: np.dtype) -> np.ndarray:
        X = check_real_array("X", X, ndim=4, dtype=dtype)
        if X.shape[1:] != self.input_shape:
            raise ValueError(f"X has samples of shape {X.shape[1:]}, but this stack takes "
                             f"input_shape={self.input_shape}")  # fmt: skip
        return X

    def forward(self, params: Sequence[np.ndarray], X: np.ndarray) -> np.ndarray:
        """The stack's output ``(N, D)`` for ``X`` ``(N, C, H, W)``, in the parameters' dtype."""
        params = self.check_params(params)
        dtype = params[0].dtype if params else np.dtype(np.float64)
        X = self._check_inputs(X, dtype)
        return forward_pass(self, list(params), X)

    def layer_outputs(self, params: Sequence[np.ndarray], X: np.ndarray) -> list[np.ndarray]:
        """What each layer outputs for ``X`` ``(N, C, H, W)``: one array per layer, ``(N,
        *shape)`` with the shape after that layer (``(N, F, H', W')`` after a conv, ``(N, D)``
        after a Flatten or Dense).

        Computed one layer at a time by the public NCHW ops (``conv2d_forward``, ``relu``, the
        pooling forwards, ``dense_forward``), keeping every intermediate: a way to look inside
        the network (feature maps), not to predict; :meth:`forward` is the fast way to the last.
        """
        from .ops import pool
        from .ops.activations import relu
        from .ops.conv import conv2d_forward
        from .ops.dense import dense_forward

        params = self.check_params(params)
        dtype = params[0].dtype if params else np.dtype(np.float64)
        a = self._check_inputs(X, dtype)
        outputs, arrays = [], iter(params)
        for layer in self.layers:
            if isinstance(layer, Conv2d):
                a = conv2d_forward(a, next(arrays), next(arrays), layer.stride, layer.pad)
            elif isinstance(layer, Dense):
                a, _ = dense_forward(a, next(arrays), next(arrays))
            elif isinstance(layer, ReLU):
                a = relu(a)
            elif isinstance(layer, MaxPool2d):
                a = pool.max_pool2d_forward(a, layer.size, layer.stride)
            elif isinstance(layer, AvgPool2d):
                a = pool.avg_pool2d_forward(a, layer.size, layer.stride)
            else:  # Flatten: C order of (C, H, W)
                a = a.reshape(a.shape[0], -1)
            outputs.append(a.astype(dtype, copy=False))
        return outputs

    def loss_and_grads(
        self,
        params: Sequence[np.ndarray],
        X: np.ndarray,
        T: np.ndarray,
        loss: str = "mse",
    ) -> tuple[float, list[np.ndarray]]:
        """The loss of ``params`` on ``X`` ``(N, C, H, W)`` against targets ``T`` ``(N, D)``, and
        its gradient with respect to every array of ``params`` (a list of the same shapes).

        ``loss="mse"``: the mean of ``(out - T)**2`` over all ``N*D`` entries;
        ``loss="softmax_cross_entropy"``: the mean over samples of ``-sum(T * log_softmax(out))``
        (rows of ``T`` are probability vectors).
        """
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        params = self.check_params(params)
        dtype = params[0].dtype if params else np.dtype(np.float64)
        X = self._check_inputs(X, dtype)
        T = check_real_array("T", T, ndim=2, dtype=dtype)
        if T.shape != (X.shape[0], self.n_outputs):
            raise ValueError(f"T must have shape {(X.shape[0], self.n_outputs)} (N, D) for X "
                             f"{X.shape}, got {T.shape}")  # fmt: skip
        return Engine(self, dtype, X.shape[0], processes=1).loss_and_grads(params, X, T, loss)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _human_bytes(n_bytes: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``3 * 2**40`` -> ``"3.0 TiB"``."""
    size, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:,.1f} {unit}"
