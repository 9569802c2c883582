"""tinycnn.network: the one-conv-layer network (the seed's and the estimators' shorthand) as the
stack conv -> ReLU -> flatten -> dense: its sizes, its initialisations, its predictions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, uniform

import tinycnn
from tinycnn.network import ConvNetParams, ConvNetSpec, init_params_he, init_params_seed, predict


def manual_forward(params, spec, X):
    """conv -> ReLU -> flatten in C order of (F, H', W') -> dense, from the public ops."""
    z = tinycnn.conv2d_forward(X, params.kernel, params.bias_conv, spec.stride, spec.pad)
    return tinycnn.relu(z).reshape(X.shape[0], -1) @ params.W_fc + params.b_fc


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_is_the_forward_pass_of_the_public_ops(chunk_size, dtype):
    spec = ConvNetSpec(2, 7, 6, n_filters=3, kernel_size=3, stride=2, pad=1, n_outputs=4)
    rng = np.random.default_rng(0)
    params = ConvNetParams(*(p.astype(dtype) for p in init_params_he(spec, rng)))
    params.bias_conv[...] = rng.uniform(-1, 1, 3)
    X = uniform(rng, 5, 2, 7, 6).astype(dtype)
    pred = predict(params, spec, X, chunk_size=chunk_size)
    assert pred.dtype == dtype and pred.shape == (5, 4)
    assert_close(pred, manual_forward(params, spec, X), 1e-12 if dtype == np.float64 else 1e-5)


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
