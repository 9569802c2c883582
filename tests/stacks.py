"""Test helpers for layer stacks: random stacks (hypothesis), and two oracles for them.

* :func:`reference_loss_and_grads` walks a stack with the public ``(N, C, H, W)`` ops of
  ``tinycnn.ops`` (each itself checked against the plain loops, finite differences and
  PyTorch): forward layer by layer keeping each layer's input, then the chain rule backwards.
  It shares no code with the engine's runners, buffers or layouts.
* :func:`torch_sequential` builds the same stack as a float64 ``torch.nn.Sequential`` holding
  the same parameters (dense weights transposed at this boundary only).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import tinycnn
from tinycnn.layers import AvgPool2d, Conv2d, Dense, Flatten, LayerError, MaxPool2d, ReLU
from tinycnn.model import Sequential
from tinycnn.ops import pool
from tinycnn.ops.dense import dense_backward, dense_forward
from tinycnn.ops.losses import mse_loss, softmax_cross_entropy

LOSSES = ("mse", "softmax_cross_entropy")


@st.composite
def stacks(draw, max_n: int = 6, max_size: int = 12):
    """(net, X, T, params, loss): 1-3 conv layers (stride, pad), each optionally followed by
    ReLU and by max or avg pooling, then Flatten, 0-2 hidden dense layers (optionally with
    ReLU), and the output Dense; float64 data in [-2, 2], targets valid for both losses, and
    parameters with random (not zero) biases."""
    C = draw(st.integers(1, 3))
    shape = input_shape = (C, draw(st.integers(3, max_size)), draw(st.integers(3, max_size)))
    layers: list = []

    def add(layer) -> None:
        nonlocal shape
        try:
            new = layer.output_shape(shape)
        except LayerError:
            return  # does not fit what is left of the image: leave it out
        layers.append(layer)
        shape = new

    for j in range(draw(st.integers(1, 3))):
        k = draw(st.integers(1, 3 if j == 0 else 4))  # the first always fits
        add(Conv2d(draw(st.integers(1, 4)), k, draw(st.integers(1, 2)), draw(st.integers(0, 2))))
        if draw(st.booleans()):
            add(ReLU())
        kind = draw(st.sampled_from([None, MaxPool2d, AvgPool2d]))
        if kind is not None:
            size = draw(st.integers(1, 3))
            add(kind(size, draw(st.sampled_from([None, 1, 2, 3]))))
    add(Flatten())
    for _ in range(draw(st.integers(0, 2))):
        add(Dense(draw(st.integers(1, 6))))
        if draw(st.booleans()):
            add(ReLU())
    O = draw(st.integers(1, 4))
    add(Dense(O))
    net = Sequential(layers, input_shape)
    return (net, *problem_for(net, draw(st.integers(1, max_n)), draw(st.integers(0, 2**32 - 1))),
            draw(st.sampled_from(LOSSES)))  # fmt: skip


def problem_for(net: Sequential, N: int, seed: int):
    """``X`` ``(N, *input_shape)``, targets ``T`` (rows of probabilities) and parameters."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (N, *net.input_shape))
    T = rng.dirichlet(np.ones(net.n_outputs), size=N)
    params = net.init_params(rng)
    for b in params[1::2]:
        b[...] = rng.uniform(-0.5, 0.5, b.shape)
    return X, T, params


def reference_forward(net: Sequential, params, X):
    """The output and, per layer, its input: the forward walk over the public NCHW ops."""
    inputs, a, i = [], np.asarray(X, dtype=np.float64), 0
    for layer in net.layers:
        inputs.append(a)
        if isinstance(layer, Conv2d):
            a = tinycnn.conv2d_forward(a, params[i], params[i + 1], layer.stride, layer.pad)
            i += 2
        elif isinstance(layer, Dense):
            a, _ = dense_forward(a, params[i], params[i + 1])
            i += 2
        elif isinstance(layer, ReLU):
            a = tinycnn.relu(a)
        elif isinstance(layer, MaxPool2d):
            a = pool.max_pool2d_forward(a, layer.size, layer.stride)
        elif isinstance(layer, AvgPool2d):
            a = pool.avg_pool2d_forward(a, layer.size, layer.stride)
        elif isinstance(layer, Flatten):
            a = a.reshape(a.shape[0], -1)
    return a, inputs


def reference_loss_and_grads(net: Sequential, params, X, T, loss: str):
    """The loss and every parameter's gradient by the chain rule, layer by layer backwards."""
    out, inputs = reference_forward(net, params, X)
    value, d = (mse_loss if loss == "mse" else softmax_cross_entropy)(out, T)
    grads: list = [None] * len(params)
    i = len(params)
    for layer, x in zip(reversed(net.layers), reversed(inputs)):
        if isinstance(layer, Conv2d):
            i -= 2
            d, grads[i], grads[i + 1] = tinycnn.conv2d_backward(
                d, x, params[i], layer.stride, layer.pad
            )
        elif isinstance(layer, Dense):
            i -= 2
            d, grads[i], grads[i + 1] = dense_backward(d, x, params[i])
        elif isinstance(layer, ReLU):
            d = tinycnn.relu_backward(d, x)
        elif isinstance(layer, MaxPool2d):
            d = pool.max_pool2d_backward(d, x, layer.size, layer.stride)
        elif isinstance(layer, AvgPool2d):
            d = pool.avg_pool2d_backward(d, x, layer.size, layer.stride)
        elif isinstance(layer, Flatten):
            d = d.reshape(x.shape)
    return value, grads


def torch_sequential(net: Sequential, params, dtype=torch.float64) -> torch.nn.Sequential:
    """The same stack in PyTorch, holding copies of ``params``."""
    modules, i = [], 0
    for layer, shape in zip(net.layers, net.shapes):
        if isinstance(layer, Conv2d):
            m = torch.nn.Conv2d(shape[0], layer.filters, layer.kernel_size, layer.stride,
                                layer.pad, dtype=dtype)  # fmt: skip
            m.weight.data = torch.tensor(params[i], dtype=dtype)
            m.bias.data = torch.tensor(params[i + 1], dtype=dtype)
            i += 2
        elif isinstance(layer, Dense):
            m = torch.nn.Linear(shape[0], layer.units, dtype=dtype)
            m.weight.data = torch.tensor(params[i].T.copy(), dtype=dtype)
            m.bias.data = torch.tensor(params[i + 1], dtype=dtype)
            i += 2
        elif isinstance(layer, ReLU):
            m = torch.nn.ReLU()
        elif isinstance(layer, MaxPool2d):
            m = torch.nn.MaxPool2d(layer.size, layer.stride)
        elif isinstance(layer, AvgPool2d):
            m = torch.nn.AvgPool2d(layer.size, layer.stride)
        else:
            m = torch.nn.Flatten()
        modules.append(m)
    return torch.nn.Sequential(*modules)


def torch_params(module: torch.nn.Sequential) -> list[torch.Tensor]:
    """The module's parameters in tinycnn's order (weight, bias per layer)."""
    layers = [m for m in module if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return [p for m in layers for p in (m.weight, m.bias)]


def torch_grads(module: torch.nn.Sequential) -> list[np.ndarray]:
    """Gradients in tinycnn's layouts (a dense weight's transposed back)."""
    out = []
    for m in module:
        if isinstance(m, torch.nn.Conv2d):
            out += [m.weight.grad.numpy(), m.bias.grad.numpy()]
        elif isinstance(m, torch.nn.Linear):
            out += [m.weight.grad.numpy().T, m.bias.grad.numpy()]
    return out


def torch_loss(out: torch.Tensor, T: np.ndarray, loss: str) -> torch.Tensor:
    t = torch.tensor(T, dtype=out.dtype)
    if loss == "mse":
        return ((out - t) ** 2).mean()
    return -(t * torch.log_softmax(out, dim=1)).sum() / out.shape[0]


def assert_grads_close(actual, expected, tol: float, what: str) -> None:
    """Each gradient to ``tol`` relative to the largest gradient entry of all: a gradient that
    is a sum cancelling down to almost nothing (a bias gradient under softmax, whose rows sum
    to 0) carries the rounding of its terms, not of itself."""
    expected = [np.asarray(e) for e in expected]
    assert len(actual) == len(expected), what
    scale = max(float(np.max(np.abs(e))) for e in expected)
    for j, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f"{what}: gradient {j} has shape {a.shape}, not {e.shape}"
        err = float(np.max(np.abs(a - e)))
        assert err <= tol * scale, f"{what}: gradient {j} off by {err:.3g} (largest {scale:.3g})"


def assert_same_result(actual, expected, tol: float, what: str) -> None:
    (loss_a, grads_a), (loss_e, grads_e) = actual, expected
    assert abs(loss_a - loss_e) <= tol * abs(loss_e), f"{what}: loss {loss_a} vs {loss_e}"
    assert all(a.dtype == e.dtype for a, e in zip(grads_a, grads_e)), what
    assert_grads_close(grads_a, grads_e, tol, what)


def assert_bit_identical(actual, expected, what: str = "") -> None:
    assert actual[0] == expected[0], f"{what}: loss {actual[0]!r} vs {expected[0]!r}"
    for a, e in zip(actual[1], expected[1]):
        np.testing.assert_array_equal(a, e, err_msg=what)


def copied(result):
    loss, grads = result
    return loss, [g.copy() for g in grads]
