"""The one-conv-layer network of the seed and of the estimators' shorthand, as a stack.

:class:`ConvNetSpec` names the shape of conv -> ReLU -> flatten -> dense (the parameters the
estimators' ``n_filters``/``kernel_size``/``stride``/``padding`` and model files of format 1 speak
of), and :meth:`ConvNetSpec.sequential` is that network as the stack
``[Conv2d(F, k, stride, pad), ReLU(), Flatten(), Dense(O)]``: everything it computes, the
engine computes for that stack. :class:`ConvNetParams` names its four arrays, in the stack's
parameter order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .engine import Engine
from .layers import Conv2d, Dense, Flatten, ReLU
from .model import Sequential, _human_bytes, _memory_bytes
from .ops.conv import conv_output_size


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

    def sequential(self) -> Sequential:
        """This network as a stack: ``[Conv2d(F, k, stride, pad), ReLU(), Flatten(), Dense(O)]``
        on ``(in_channels, height, width)`` inputs."""
        conv = Conv2d(self.n_filters, self.kernel_size, self.stride, self.pad)
        layers = [conv, ReLU(), Flatten(), Dense(self.n_outputs)]
        return Sequential(layers, (self.in_channels, self.height, self.width))


class ConvNetParams(NamedTuple):
    """The learned arrays (also used for their gradients, and for optimizer state)."""

    kernel: np.ndarray  # (F, C, k, k)
    bias_conv: np.ndarray  # (F,)
    W_fc: np.ndarray  # (F*out_h*out_w, O)
    b_fc: np.ndarray  # (O,)

    def copy(self) -> ConvNetParams:
        return ConvNetParams(*(p.copy() for p in self))

    def zeros_like(self) -> ConvNetParams:
        return ConvNetParams(*(np.zeros(p.shape, dtype=p.dtype) for p in self))


def check_fits_in_memory(
    spec: ConvNetSpec, dtype: npt.DTypeLike, filters_name: str = "n_filters"
) -> None:
    """Refuse, with a ValueError naming the sizes, a network whose parameters plus one sample's
    windows and activations (the least any forward pass holds) exceed this machine's memory:
    such a run could only end in a MemoryError or in swapping. ``filters_name`` is what the
    caller's users call the number of filters."""
    n_params = sum(int(np.prod(shape)) for shape in spec.param_shapes.values())
    need = (n_params + spec.sequential().numbers_per_sample(dtype)) * np.dtype(dtype).itemsize
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
    """:meth:`Sequential.init_params` of the stack, from ``rng``: the kernel ``N(0, 2/(C*k*k))``
    (He: a ReLU follows), then ``W_fc`` ``N(0, 1/n_hidden)``; biases 0. A network too large for
    the machine is refused before anything is drawn."""
    check_fits_in_memory(spec, dtype)
    return ConvNetParams(*spec.sequential().init_params(rng, dtype))


def predict(
    params: ConvNetParams, spec: ConvNetSpec, X: np.ndarray, *, chunk_size: int | None = None
) -> np.ndarray:
    """The network's outputs (logits for a classifier) ``(N, O)`` for ``X`` ``(N, C, H, W)``
    (unchecked), ``chunk_size`` samples at a time (default: the engine's)."""
    engine = Engine(
        spec.sequential(), params.W_fc.dtype, max(1, X.shape[0]), chunk_size=chunk_size, processes=1
    )
    return engine.forward(list(params), X)
