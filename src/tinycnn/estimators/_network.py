"""The network an estimator trains: its hidden stack (``layers``, or the one-conv-layer
shorthand ``n_filters``/``kernel_size``/``stride``/``padding``, or with neither the default stack
of :func:`default_layers`, which adapts to the image size) with the output ``Dense`` sized from
``y`` appended (after a ``Flatten`` where the stack ends in images).

The shorthand network is conv -> ReLU -> flatten -> dense, the network of format-1 model files;
its weights are kept as a :class:`tinycnn.network.ConvNetParams` (``kernel``, ``bias_conv``,
``W_fc``, ``b_fc``), as before stacks existed. Any other stack's weights are a list of arrays in
:class:`tinycnn.Sequential`'s order.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..layer_string import layers_to_string, parse_layers
from ..layers import LAYER_TYPES, AvgPool2d, Conv2d, Dense, Flatten, Layer, MaxPool2d, ReLU
from ..model import Sequential
from ..network import ConvNetParams, ConvNetSpec, check_fits_in_memory
from ._checks import short

# The one-conv-layer shorthand and the value each takes when only some are given.
SHORTHAND_DEFAULTS: dict[str, Any] = {
    "n_filters": 16,
    "kernel_size": 5,
    "stride": 1,
    "padding": "same",
}

# The default network (docs/defaults.md): a 3x3 conv block per (filters, pooling) entry of
# DEFAULT_BLOCKS, each followed by its 2x2 pooling where the pooled image is still at least
# MIN_POOLED a side, then a hidden Dense of DEFAULT_UNITS and its ReLU. Averaging in the second
# block rather than max-pooling kept sizes and positions better on the suite (shapes-size R^2
# 0.944 -> 0.978) at the same accuracy on the classifications.
DEFAULT_BLOCKS = ((32, MaxPool2d), (64, AvgPool2d))
DEFAULT_UNITS = 128
MIN_POOLED = 2
# Images still larger than this a side after the conv blocks are averaged by 2 again, so that
# the hidden Dense's weights stay few on large images.
MAX_FLAT_SIDE = 15

Params = Sequence[np.ndarray]  # ConvNetParams for the shorthand network, else a list


class Network(NamedTuple):
    """The stack an estimator trains, and its :class:`ConvNetSpec` when it is the shorthand's
    one-conv-layer network (None for any other stack)."""

    stack: Sequential
    spec: ConvNetSpec | None

    def init_params(self, rng: np.random.Generator, dtype: np.dtype) -> Params:
        """Fresh weights from ``rng`` (:meth:`Sequential.init_params`); a network too large for
        the machine is refused before anything is drawn."""
        if self.spec is not None:
            check_fits_in_memory(self.spec, dtype)
            return ConvNetParams(*self.stack.init_params(rng, dtype))
        self.stack.check_fits_in_memory(dtype)
        return self.stack.init_params(rng, dtype)

    def wrap(self, arrays: Sequence[np.ndarray]) -> Params:
        """``arrays`` in this network's container (ConvNetParams or a list)."""
        return ConvNetParams(*arrays) if self.spec is not None else list(arrays)

    def checked_params(self, params: Any, dtype: np.dtype, name: str) -> Params:
        """Copies of ``params`` of ``dtype`` after checking their number and shapes."""
        try:
            arrays = [np.array(p, dtype=dtype, copy=True) for p in params]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a sequence of real arrays: {exc}") from None
        shapes = [tuple(s) for s in self.stack.param_shapes]
        if [a.shape for a in arrays] != shapes:
            raise ValueError(
                f"{name} has shapes {[a.shape for a in arrays]}, but this estimator on this data "
                f"needs {shapes}"
            )
        return self.wrap(arrays)


def copy_params(params: Params) -> Params:
    """A copy of every array, in the same container."""
    arrays = [p.copy() for p in params]
    return ConvNetParams(*arrays) if isinstance(params, ConvNetParams) else arrays


def check_layers(layers: Any, name: str = "layers") -> tuple[Layer, ...]:
    """``layers`` (a string in the grammar of :mod:`tinycnn.layer_string`, or a sequence of
    layer objects) as a tuple of layers."""
    if isinstance(layers, str):
        return parse_layers(layers, name)
    if isinstance(layers, LAYER_TYPES):
        raise TypeError(
            f"{name} must be a tuple of layers, got one layer {layers!r}: write ({layers!r},)"
        )
    try:
        items = tuple(layers)
    except TypeError:
        raise TypeError(
            f"{name} must be a tuple of layers or a string such as 'conv8k3p1-relu-max2', got "
            f"{short(layers)}"
        ) from None
    for i, item in enumerate(items):
        if not isinstance(item, LAYER_TYPES):
            raise TypeError(
                f"{name}[{i}] is {short(item)}, not a layer (one of "
                f"{', '.join(t.__name__ for t in LAYER_TYPES)})"
            )
    return items


def layers_text(layers: Any) -> str:
    """The string form of a valid ``layers`` value (for files, run.json and messages)."""
    return layers_to_string(check_layers(layers))


def ends_flat(layers: Sequence[Layer]) -> bool:
    """Whether a stack's output is flat features: its last layer other than ReLU (which keeps
    its input's shape) is a Dense or a Flatten. An empty stack passes the images on."""
    for layer in reversed(layers):
        if not isinstance(layer, ReLU):
            return isinstance(layer, (Dense, Flatten))
    return False


def default_layers(image_shape: tuple[int, int, int]) -> tuple[Layer, ...]:
    """The hidden stack of the default network for images ``(C, H, W)``, any size from 1x1 up.

    Per entry ``(filters, pooling)`` of :data:`DEFAULT_BLOCKS`: ``Conv2d(filters, 3, pad=1)``
    (keeps H and W, so it fits a 1x1 image), ``ReLU()``, and ``pooling(2)`` only where the
    pooled image is at least :data:`MIN_POOLED` a side; then ``AvgPool2d(2)`` again while both
    sides exceed :data:`MAX_FLAT_SIDE`; then ``Flatten()``, ``Dense(DEFAULT_UNITS)``,
    ``ReLU()``. On 8x8 digits and 28x28 MNIST:
    ``conv32k3p1-relu-max2-conv64k3p1-relu-avg2-flatten-dense128-relu``.
    """
    _, h, w = image_shape
    layers: list[Layer] = []
    for filters, pooling in DEFAULT_BLOCKS:
        layers += [Conv2d(filters, 3, pad=1), ReLU()]
        if min(h, w) // 2 >= MIN_POOLED:
            layers.append(pooling(2))
            h, w = h // 2, w // 2
    while min(h, w) > MAX_FLAT_SIDE:
        layers.append(AvgPool2d(2))
        h, w = h // 2, w // 2
    return (*layers, Flatten(), Dense(DEFAULT_UNITS), ReLU())


def names_no_network(est: Any) -> bool:
    """Whether ``est``'s parameters name no network (no ``layers``, no shorthand value): it
    trains the default network of its version."""
    return est.layers is None and all(getattr(est, n) is None for n in SHORTHAND_DEFAULTS)


def network_of(est: Any, image_shape: tuple[int, int, int], n_outputs: int) -> Network:
    """The network ``est``'s parameters describe on images ``(C, H, W)`` with ``n_outputs``
    outputs; a stack that does not fit the images raises ``ValueError`` naming the layer."""
    given = [n for n in SHORTHAND_DEFAULTS if getattr(est, n) is not None]
    if est.layers is not None and given:
        raise ValueError(
            "give either layers or the one-conv-layer shorthand "
            f"({', '.join(SHORTHAND_DEFAULTS)}), not both: got layers={short(est.layers)} and "
            + ", ".join(f"{n}={getattr(est, n)!r}" for n in given)
        )
    if est.layers is not None or not given:
        hidden = default_layers(image_shape) if est.layers is None else check_layers(est.layers)
        tail = (Dense(n_outputs),) if ends_flat(hidden) else (Flatten(), Dense(n_outputs))
        try:
            stack = Sequential(hidden + tail, image_shape)
        except ValueError as exc:
            hint = ""
            if est.image_shape is None and image_shape[1] == 1:
                hint = "; a 2-D X without image_shape is taken as 1 x n_features images"
            C, H, W = image_shape
            raise ValueError(f"layers do not fit {C}x{H}x{W} images: {exc}{hint}") from None
        return Network(stack, None)
    spec = shorthand_spec(est, image_shape, n_outputs)
    return Network(spec.sequential(), spec)


def shorthand_spec(est: Any, image_shape: tuple[int, int, int], n_outputs: int) -> ConvNetSpec:
    """The one-conv-layer network of ``n_filters``/``kernel_size``/``stride``/``padding`` (each
    None taking its default) on images ``(C, H, W)``; refuses impossible geometry."""
    value = {
        n: d if getattr(est, n) is None else getattr(est, n) for n, d in SHORTHAND_DEFAULTS.items()
    }
    C, H, W = image_shape
    k, stride, padding = int(value["kernel_size"]), int(value["stride"]), value["padding"]
    if padding == "same":
        if k % 2 == 0 or stride != 1:
            raise ValueError(
                f"padding='same' needs an odd kernel_size and stride=1 (it keeps H and W), "
                f"got kernel_size={k}, stride={stride}; use padding='valid' or an int"
            )
        pad = (k - 1) // 2
    elif padding == "valid":
        pad = 0
    else:
        assert isinstance(padding, numbers.Integral)
        pad = int(padding)
    if k > H + 2 * pad or k > W + 2 * pad:
        raise ValueError(
            f"kernel_size={k} is larger than the padded image: images are {H}x{W}, with "
            f"padding={padding!r} {H + 2 * pad}x{W + 2 * pad}"
            + (
                "; a 2-D X without image_shape is taken as 1 x n_features images"
                if est.image_shape is None and H == 1
                else ""
            )
        )
    return ConvNetSpec(C, H, W, int(value["n_filters"]), k, stride, pad, n_outputs)
