"""tinycnn.network: the whole conv -> ReLU -> dense network's loss and gradients vs PyTorch and
finite differences; chunking never changes the result; predict; initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import OpImpl, assert_close, check_op, uniform
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn import network
from tinycnn.network import (
    ConvNetParams,
    ConvNetSpec,
    init_params_he,
    init_params_seed,
    loss_and_grads,
    predict,
)
from tinycnn.workspace import Workspace


@st.composite
def problems(draw, max_n=4):
    """A small network spec (any stride/pad, several filters and outputs) with data and params."""
    k = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 1))
    smallest = max(1, k - 2 * pad)
    spec = ConvNetSpec(
        in_channels=draw(st.integers(1, 2)),
        height=draw(st.integers(smallest, smallest + 4)),
        width=draw(st.integers(smallest, smallest + 4)),
        n_filters=draw(st.integers(1, 3)),
        kernel_size=k,
        stride=draw(st.integers(1, 2)),
        pad=pad,
        n_outputs=draw(st.integers(1, 3)),
    )
    N = draw(st.integers(1, max_n))
    loss = draw(st.sampled_from(["mse", "cross_entropy"]))
    return make_problem(spec, N, loss, draw(st.integers(0, 2**32 - 1)))


def make_problem(spec, N, loss, seed):
    rng = np.random.default_rng(seed)
    params = ConvNetParams(*(uniform(rng, *s) * 0.5 for s in spec.param_shapes.values()))
    X = uniform(rng, N, spec.in_channels, spec.height, spec.width)
    if loss == "mse":
        T = uniform(rng, N, spec.n_outputs)
    else:
        T = rng.dirichlet(np.ones(spec.n_outputs), size=N)
    return spec, params, X, T, loss


def torch_loss(spec, X, T, loss):
    """The same network built from PyTorch functions (the autograd oracle)."""
    X_t, T_t = torch.tensor(X), torch.tensor(T)

    def forward(kernel, bias_conv, W_fc, b_fc):
        z = F.conv2d(X_t, kernel, bias_conv, stride=spec.stride, padding=spec.pad)
        logits = torch.relu(z).reshape(X.shape[0], -1) @ W_fc + b_fc  # flatten (F, H', W')
        return F.mse_loss(logits, T_t) if loss == "mse" else F.cross_entropy(logits, T_t)

    return forward


def network_op(spec, X, T, loss) -> OpImpl:
    """The network's loss as an op of its four parameter arrays."""
    return OpImpl(
        lambda *p: loss_and_grads(ConvNetParams(*p), spec, X, T, loss)[0],
        lambda dout, *p: [dout * g for g in loss_and_grads(ConvNetParams(*p), spec, X, T, loss)[1]],
    )


@settings(max_examples=25)
@given(problems())
def test_network_gradients_match_torch_and_finite_differences(problem):
    spec, params, X, T, loss = problem
    check_op(
        list(params),
        network_op(spec, X, T, loss),
        torch_loss(spec, X, T, loss),
        finite_differences=True,
        tol=1e-10,
        fd_tol=1e-6,
    )


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_network_gradients_with_stride_pad_several_filters_and_outputs(loss):
    spec = ConvNetSpec(2, 7, 6, n_filters=3, kernel_size=3, stride=2, pad=1, n_outputs=4)
    spec, params, X, T, loss = make_problem(spec, 5, loss, seed=11)
    check_op(
        list(params),
        network_op(spec, X, T, loss),
        torch_loss(spec, X, T, loss),
        finite_differences=True,
    )


@settings(max_examples=30)
@given(problems(max_n=9), st.integers(1, 9))
def test_chunked_result_equals_single_chunk_result(problem, chunk):
    spec, params, X, T, loss = problem
    N = X.shape[0]
    whole_loss, whole_grads = loss_and_grads(params, spec, X, T, loss, chunk_size=N)
    whole_pred = predict(params, spec, X, chunk_size=N)
    chunked_loss, chunked_grads = loss_and_grads(params, spec, X, T, loss, chunk_size=chunk)
    chunked_pred = predict(params, spec, X, chunk_size=chunk)
    assert_close(chunked_loss, whole_loss, 1e-12, "loss")
    for name, g, w in zip(ConvNetParams._fields, chunked_grads, whole_grads):
        assert_close(g, w, 1e-12, f"gradient of {name}")
    assert_close(chunked_pred, whole_pred, 1e-12, "predictions")


def test_chunks_really_split_the_batch(monkeypatch):
    """A chunk boundary inside the batch: the plain path runs forward once per chunk."""
    spec = ConvNetSpec(1, 5, 5, 2, 3, 1, 0, 2)
    params = init_params_he(spec, np.random.default_rng(0))
    X = np.random.default_rng(1).random((7, 1, 5, 5))
    calls = []
    real = network.forward_chunk
    monkeypatch.setattr(
        network, "forward_chunk", lambda p, s, x: calls.append(len(x)) or real(p, s, x)
    )
    predict(params, spec, X, chunk_size=3)
    loss_and_grads(params, spec, X, np.zeros((7, 2)), chunk_size=3)
    assert calls == [3, 3, 1, 3, 3, 1]


@pytest.mark.parametrize(
    "spec, expected",
    [
        # 2^17 numbers of windows, ones and activations: (9 + 1 + 8) * 36 = 648 per digit
        (ConvNetSpec(1, 8, 8, 8, 3, 1, 0, 10), (1 << 17) // 648),
        # (25 + 1 + 16) * 576 per MNIST image: fewer than 64 fit, so 64 (the floor)
        (ConvNetSpec(1, 28, 28, 16, 5, 1, 0, 10), 64),
        # (9 + 1 + 8) * 998**2 per image: 64 of them would exceed 2^23 numbers, so 1
        (ConvNetSpec(1, 1000, 1000, 8, 3, 1, 0, 2), 1),
        # (9 + 1 + 8) * 398**2 per image: 2^23 // that = 2 samples
        (ConvNetSpec(1, 400, 400, 8, 3, 1, 0, 2), (1 << 23) // (18 * 398**2)),
    ],
)
def test_chunk_size_policy(spec, expected):
    assert spec.chunk_size() == expected >= 1
    ws_chunk = Workspace(spec, np.float32, 10_000).chunk if spec.height < 100 else None
    assert ws_chunk in (None, expected)  # the workspace follows the same policy


def manual_forward(params, spec, X):
    """conv -> ReLU -> flatten in C order of (F, H', W') -> dense, from the public ops."""
    z = tinycnn.conv2d_forward(X, params.kernel, params.bias_conv, spec.stride, spec.pad)
    return tinycnn.relu(z).reshape(X.shape[0], -1) @ params.W_fc + params.b_fc


@settings(max_examples=20)
@given(problems(max_n=6))
def test_predict_is_the_forward_pass_of_the_loss(problem):
    spec, params, X, T, loss = problem
    pred = predict(params, spec, X)
    assert pred.shape == (X.shape[0], spec.n_outputs)
    assert_close(pred, manual_forward(params, spec, X), 1e-12, "predict vs public ops")
    value, _ = loss_and_grads(params, spec, X, T, loss)
    if loss == "mse":
        expected = np.mean((pred - T) ** 2)
    else:
        shifted = pred - pred.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        expected = -np.sum(T * logp) / X.shape[0]
    assert_close(value, expected, 1e-12, "loss vs predict")


def test_gradients_do_not_depend_on_the_memory_layout_of_the_parameters():
    # Parameters may arrive as Fortran-ordered or transposed views (e.g. weights taken from
    # another library); the gradients must not be lost in a reshape that silently copies.
    spec = ConvNetSpec(2, 6, 6, n_filters=3, kernel_size=3, stride=1, pad=1, n_outputs=2)
    spec, params, X, T, loss = make_problem(spec, 4, "mse", seed=12)
    expected_loss, expected = loss_and_grads(params, spec, X, T)
    odd = ConvNetParams(
        np.asfortranarray(params.kernel),
        params.bias_conv[::-1].copy()[::-1],
        np.ascontiguousarray(params.W_fc.T).T,
        params.b_fc,
    )
    assert not odd.kernel.flags.c_contiguous and not odd.W_fc.flags.c_contiguous
    value, grads = loss_and_grads(odd, spec, X, T)
    assert value == expected_loss
    for name, g, e in zip(ConvNetParams._fields, grads, expected):
        assert_close(g, e, 1e-14, f"gradient of {name}")


def test_float32_network_matches_float64():
    spec = ConvNetSpec(2, 6, 5, n_filters=2, kernel_size=3, stride=1, pad=0, n_outputs=3)
    spec, params, X, T, loss = make_problem(spec, 4, "mse", seed=13)
    value64, grads64 = loss_and_grads(params, spec, X, T)
    p32 = ConvNetParams(*(p.astype(np.float32) for p in params))
    value32, grads32 = loss_and_grads(p32, spec, X.astype(np.float32), T.astype(np.float32))
    assert_close(value32, value64, 1e-5, "loss")
    for name, g32, g64 in zip(ConvNetParams._fields, grads32, grads64):
        assert g32.dtype == np.float32, name
        assert_close(g32, g64, 1e-5, f"gradient of {name}")
    assert predict(p32, spec, X.astype(np.float32)).dtype == np.float32


def test_spec_sizes_follow_the_output_size_formula():
    spec = ConvNetSpec(3, 7, 8, n_filters=4, kernel_size=3, stride=2, pad=1, n_outputs=5)
    assert (spec.out_h, spec.out_w) == ((7 + 2 - 3) // 2 + 1, (8 + 2 - 3) // 2 + 1) == (4, 4)
    assert spec.n_hidden == 4 * 4 * 4
    assert spec.param_shapes == {
        "kernel": (4, 3, 3, 3),
        "bias_conv": (4,),
        "W_fc": (64, 5),
        "b_fc": (5,),
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_seed_initialisation_draws_kernel_then_dense_weights_from_the_global_state(dtype):
    spec = ConvNetSpec(2, 5, 6, n_filters=3, kernel_size=2, stride=2, pad=1, n_outputs=2)
    np.random.seed(5)
    kernel = np.random.randn(3, 2, 2, 2) * 0.1
    W_fc = np.random.randn(spec.n_hidden, 2) * 0.1
    after = np.random.get_state()
    np.random.seed(5)
    params = init_params_seed(spec, dtype)
    assert np.array_equal(params.kernel, kernel.astype(dtype))
    assert np.array_equal(params.W_fc, W_fc.astype(dtype))
    assert not params.bias_conv.any() and not params.b_fc.any()
    assert all(p.dtype == dtype for p in params)
    assert_same_random_state(np.random.get_state(), after)


def assert_same_random_state(a, b):
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def test_he_initialisation_is_reproducible_from_its_generator_and_leaves_global_state_alone():
    spec = ConvNetSpec(3, 8, 8, n_filters=16, kernel_size=3, stride=1, pad=1, n_outputs=4)
    np.random.seed(0)
    before = np.random.get_state()
    a = init_params_he(spec, np.random.default_rng(1))
    b = init_params_he(spec, np.random.default_rng(1))
    assert_same_random_state(np.random.get_state(), before)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [p.shape for p in a] == list(spec.param_shapes.values())
    # He normal for the conv: std sqrt(2 / fan_in), fan_in = C*k*k = 27 (432 draws).
    assert abs(a.kernel.std() / np.sqrt(2 / 27) - 1) < 0.15
    assert not a.bias_conv.any() and not a.b_fc.any()


def test_relu_gradient_is_zero_where_a_window_sees_only_padding():
    # k = 1 and pad = 1: the border outputs read only padding, so there z = bias_conv = 0
    # exactly, and ReLU must pass no gradient (x > 0, as the seed and PyTorch).
    spec = ConvNetSpec(1, 4, 4, n_filters=2, kernel_size=1, stride=1, pad=1, n_outputs=2)
    spec, params, X, T, loss = make_problem(spec, 3, "mse", seed=14)
    params = params._replace(bias_conv=np.zeros(2))
    check_op(list(params), network_op(spec, X, T, loss), torch_loss(spec, X, T, loss))
