"""tinycnn.model.Sequential and tinycnn.layers: random stacks against torch.nn.Sequential
(forward, both losses, every gradient; whole training trajectories), the chain-rule reference
over the public ops, the layers as values, initialisation, and the bad stacks refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stacks import (
    assert_grads_close,
    problem_for,
    reference_loss_and_grads,
    stacks,
    torch_grads,
    torch_loss,
    torch_params,
    torch_sequential,
)

import tinycnn
from tinycnn import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, Sequential
from tinycnn.network import ConvNetSpec, init_params_he
from tinycnn.optim import SGD, Adam
from tinycnn.training import train

LENET = [Conv2d(6, 5, pad=2), ReLU(), MaxPool2d(2), Conv2d(16, 5), ReLU(), MaxPool2d(2),
         Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10)]  # fmt: skip


@settings(max_examples=60)
@given(stacks())
def test_random_stacks_match_torch_sequential(problem):
    net, X, T, params, loss = problem
    module = torch_sequential(net, params)
    out = module(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(net.forward(params, X), out, rtol=0, atol=1e-10 * np.abs(out).max())
    for name in ("mse", "softmax_cross_entropy"):
        module.zero_grad()
        expected = torch_loss(module(torch.tensor(X)), T, name)
        expected.backward()
        value, grads = net.loss_and_grads(params, X, T, name)
        assert abs(value - expected.item()) <= 1e-10 * abs(expected.item()), name
        assert_grads_close(grads, torch_grads(module), 1e-10, f"{name} vs torch")


@settings(max_examples=30)
@given(stacks())
def test_random_stacks_match_the_chain_rule_over_the_public_ops(problem):
    net, X, T, params, loss = problem
    value, grads = net.loss_and_grads(params, X, T, loss)
    ref_value, ref_grads = reference_loss_and_grads(net, params, X, T, loss)
    assert abs(value - ref_value) <= 1e-12 * abs(ref_value)
    assert_grads_close(grads, ref_grads, 1e-12, "vs the reference walk")


TRAJECTORY_STACKS = [
    (LENET[:6] + [Flatten(), Dense(12), ReLU(), Dense(3)], (1, 16, 16)),
    (
        [
            Conv2d(4, 3, stride=2, pad=1),
            ReLU(),
            AvgPool2d(2, 1),
            Conv2d(3, 2),
            MaxPool2d(2),
            Flatten(),
            Dense(2),
        ],
        (2, 11, 9),
    ),  # fmt: skip
    ([Conv2d(2, 3), ReLU(), Flatten(), Dense(1)], (1, 8, 8)),  # the seed's
]


@pytest.mark.parametrize("layers, input_shape", TRAJECTORY_STACKS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_ten_training_steps_follow_torch(layers, input_shape, optimizer, batch_size, loss):
    """10 steps (full batch: 10 epochs; batches of 4 over 10 samples, in data order: 3 epochs
    plus one batch) of SGD with momentum or Adam, against torch.optim on the same module."""
    net = Sequential(layers, input_shape)
    X, T, params = problem_for(net, 10, seed=7)
    module = torch_sequential(net, params)
    if optimizer == "sgd":
        ours, theirs = SGD(0.05, momentum=0.9), torch.optim.SGD(torch_params(module), 0.05, 0.9)
    else:
        ours, theirs = Adam(0.01), torch.optim.Adam(torch_params(module), 0.01)
    steps, size = 10, batch_size or len(X)
    losses = []
    for step in range(steps):
        start = (step * size) % len(X)
        xb, tb = X[start : start + size], T[start : start + size]
        theirs.zero_grad()
        value = torch_loss(module(torch.tensor(xb)), tb, loss)
        value.backward()
        theirs.step()
        losses.append(value.item())
    ours_losses = []
    for step in range(steps):
        start = (step * size) % len(X)
        h = train(net, params, X[start : start + size], T[start : start + size], ours, 1,
                  loss=loss)  # fmt: skip
        ours_losses.append(h.loss_curve[-1])
    np.testing.assert_allclose(ours_losses, losses, rtol=1e-9)
    for mine, p in zip(params, torch_params(module)):
        expected = p.detach().numpy()
        expected = expected.T if expected.ndim == 2 else expected
        np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_lenet_builds_for_28x28_and_gives_10_outputs():
    net = Sequential(LENET, (1, 28, 28))
    assert net.shapes[3] == (6, 14, 14) and net.shapes[6] == (16, 5, 5)
    assert net.output_shape == (10,)
    params = net.init_params(0)
    assert [p.shape for p in params] == [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (400, 120),
                                         (120,), (120, 84), (84,), (84, 10), (10,)]  # fmt: skip
    assert net.forward(params, np.zeros((3, 1, 28, 28))).shape == (3, 10)


def test_the_seed_stack_is_the_one_layer_network():
    spec = ConvNetSpec(2, 7, 6, n_filters=3, kernel_size=3, stride=2, pad=1, n_outputs=4)
    net = spec.sequential()
    assert net.layers == (Conv2d(3, 3, 2, 1), ReLU(), Flatten(), Dense(4))
    # He for the conv (a ReLU follows), LeCun for the output: the estimators' draws exactly
    a = init_params_he(spec, np.random.default_rng(3))
    b = net.init_params(np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_init_params_scales_by_fan_in_with_gain_2_before_a_relu():
    net = Sequential([Conv2d(64, 3), MaxPool2d(2), ReLU(), Flatten(), Dense(200), Dense(3)],
                     (4, 20, 20))  # fmt: skip
    params = net.init_params(np.random.default_rng(0))
    assert abs(params[0].std() / math.sqrt(2 / 36) - 1) < 0.05  # a ReLU comes before Dense
    assert abs(params[2].std() / math.sqrt(1 / (64 * 9 * 9)) - 1) < 0.05  # none after
    assert abs(params[4].std() / math.sqrt(1 / 200) - 1) < 0.1
    assert not any(b.any() for b in params[1::2])
    again = net.init_params(0)
    assert all(np.array_equal(x, y) for x, y in zip(net.init_params(0), again))
    assert {p.dtype for p in net.init_params(0, np.float32)} == {np.dtype(np.float32)}


@pytest.mark.parametrize("layer", [Conv2d(6, 5, 2, 1), ReLU(), MaxPool2d(2), MaxPool2d(3, 1),
                                   AvgPool2d(2, 2), Flatten(), Dense(10)])  # fmt: skip
def test_layers_are_values_whose_repr_evaluates_back(layer):
    namespace = {name: getattr(tinycnn, name) for name in
                 ("Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Dense")}  # fmt: skip
    again = eval(repr(layer), namespace)
    assert again == layer and hash(again) == hash(layer)
    with pytest.raises(AttributeError):
        layer.size = 3  # frozen
    assert Sequential([Conv2d(2, 3), Flatten()], (1, 5, 5)) == Sequential(
        [Conv2d(2, 3), Flatten()], [1, 5, 5]
    )


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda: Conv2d(0, 3), ValueError, "Conv2d filters"),
        (lambda: Conv2d(2.5, 3), TypeError, "Conv2d filters"),
        (lambda: Conv2d(2, 0), ValueError, "Conv2d kernel_size"),
        (lambda: Conv2d(2, 3, stride=0), ValueError, "Conv2d stride"),
        (lambda: Conv2d(2, 3, pad=-1), ValueError, "Conv2d pad"),
        (lambda: Conv2d(2, "3"), TypeError, "Conv2d kernel_size"),
        (lambda: MaxPool2d(0), ValueError, "MaxPool2d size"),
        (lambda: AvgPool2d(2, 0), ValueError, "AvgPool2d stride"),
        (lambda: Dense(0), ValueError, "Dense units"),
        (lambda: Dense(True), TypeError, "Dense units"),
    ],
)
def test_bad_layer_arguments_are_named(make, error, words):
    with pytest.raises(error, match=words):
        make()


BAD_STACKS = [
    # (layers, input_shape, error, words in the message)
    ([Conv2d(2, 7), Flatten(), Dense(1)], (1, 5, 5), ValueError,
     r"layer 0 \(Conv2d\(filters=2, kernel_size=7.*\) does not fit: .*kernel_size 7 is larger"),
    ([Conv2d(2, 3), Dense(1)], (1, 5, 5), ValueError,
     r"layer 1 \(Dense\(units=1\)\) does not fit: .*images 2x3x3.*put a Flatten\(\) before it"),
    ([Flatten(), Conv2d(2, 3)], (1, 5, 5), ValueError,
     r"layer 1 .* needs images \(C, H, W\) but gets flat features \(25,\)"),
    ([Conv2d(2, 3), MaxPool2d(4), Flatten()], (1, 5, 5), ValueError,
     r"layer 1 \(MaxPool2d.*a 4x4 window does not fit images 2x3x3"),
    ([Conv2d(2, 3), ReLU()], (1, 5, 5), ValueError, r"ends in 2x3x3 images.*add Flatten\(\)"),
    ([Flatten(), AvgPool2d(2)], (1, 5, 5), ValueError, r"layer 1 .*needs images"),
    ([], (1, 5, 5), ValueError, "layers is empty"),
    ([Conv2d(2, 3), "relu"], (1, 5, 5), TypeError, r"layers\[1\] is 'relu', not a layer"),
    ("conv", (1, 5, 5), TypeError, "layers must be a list"),
    ([Flatten()], (5, 5), ValueError, r"input_shape must be \(C, H, W\)"),
    ([Flatten()], (1, 0, 5), ValueError, r"input_shape\[1\]"),
    ([Flatten()], (1, 2.5, 5), TypeError, r"input_shape\[1\]"),
    ([Flatten()], None, TypeError, "input_shape must be"),
]  # fmt: skip


@pytest.mark.parametrize("layers, input_shape, error, words", BAD_STACKS)
def test_bad_stacks_are_refused_before_any_weight_is_drawn(layers, input_shape, error, words):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    with pytest.raises(error, match=words):
        Sequential(layers, input_shape)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda n, p: n.forward(p[:-1], np.zeros((2, 1, 5, 5))), ValueError, "params has 3 arrays"),
        (lambda n, p: n.forward([p[0].T, *p[1:]], np.zeros((2, 1, 5, 5))), ValueError,
         r"params\[0\] has shape"),
        (lambda n, p: n.forward(p, np.zeros((2, 2, 5, 5))), ValueError,
         r"input_shape=\(1, 5, 5\)"),
        (lambda n, p: n.forward(p, np.zeros((2, 5, 5))), ValueError, "X"),
        (lambda n, p: n.loss_and_grads(p, np.zeros((2, 1, 5, 5)), np.zeros((2, 3))), ValueError,
         r"T must have shape \(2, 2\)"),
        (lambda n, p: n.loss_and_grads(p, np.zeros((2, 1, 5, 5)), np.zeros((2, 2)), "l1"),
         ValueError, "loss must be one of"),
        (lambda n, p: n.init_params(-1), TypeError, "seed"),
        (lambda n, p: n.init_params(0, np.int32), ValueError, "dtype"),
        (lambda n, p: n.forward(np.zeros(3), np.zeros((2, 1, 5, 5))), TypeError, "params"),
    ],
)  # fmt: skip
def test_bad_calls_are_named(call, error, words):
    net = Sequential([Conv2d(2, 3), ReLU(), Flatten(), Dense(2)], (1, 5, 5))
    with pytest.raises(error, match=words):
        call(net, net.init_params(0))


def test_float32_parameters_compute_in_float32_close_to_float64():
    net = Sequential(LENET[:3] + [Flatten(), Dense(3)], (1, 12, 12))
    X, T, params = problem_for(net, 5, seed=2)
    value64, grads64 = net.loss_and_grads(params, X, T, "softmax_cross_entropy")
    p32 = [p.astype(np.float32) for p in params]
    value32, grads32 = net.loss_and_grads(p32, X, T, "softmax_cross_entropy")
    assert abs(value32 - value64) <= 1e-5 * value64
    assert all(g.dtype == np.float32 for g in grads32)
    assert_grads_close(grads32, grads64, 1e-5, "float32")
    assert net.forward(p32, X).dtype == np.float32


@given(st.integers(1, 30))
def test_a_stack_without_parameters_runs(N):
    net = Sequential([MaxPool2d(2), ReLU(), Flatten()], (2, 5, 4))
    X = np.random.default_rng(N).uniform(-1, 1, (N, 2, 5, 4))
    out = net.forward([], X)
    np.testing.assert_array_equal(
        out, np.maximum(tinycnn.ops.pool.max_pool2d_forward(X, 2), 0).reshape(N, -1)
    )
    value, grads = net.loss_and_grads([], X, np.zeros_like(out))
    assert grads == [] and np.isclose(value, np.mean(out**2))
