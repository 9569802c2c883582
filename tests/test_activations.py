"""tinycnn.ops.activations: relu/relu_backward vs naive loops, PyTorch and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import OpImpl, check_op, uniform
from hypothesis import given
from hypothesis import strategies as st

import tinycnn
from tinycnn import naive
from tinycnn.ops.activations import relu_into

FAST = OpImpl(lambda x: tinycnn.relu(x), lambda d, x: [tinycnn.relu_backward(d, x)])
NAIVE = OpImpl(lambda x: naive.relu(x), lambda d, x: [naive.relu_backward(d, x)])

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)


@given(shapes, st.integers(0, 2**32 - 1))
def test_relu_matches_naive_torch_and_finite_differences(shape, seed):
    x = uniform(np.random.default_rng(seed), *shape)
    # Finite differences are only meaningful away from the kink: uniform draws never hit 0.
    check_op([x], FAST, torch.relu, naive=NAIVE, finite_differences=True, tol=0.0, fd_tol=1e-8)


def test_relu_gradient_is_zero_at_exactly_zero():
    x = np.array([[-1.0, 0.0, 2.0], [0.0, -0.0, 1e-300]])
    dout = np.full_like(x, 5.0)
    expected = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]])
    assert np.array_equal(tinycnn.relu_backward(dout, x), expected)
    assert np.array_equal(naive.relu_backward(dout, x), expected)
    t = torch.tensor(x, requires_grad=True)
    torch.relu(t).backward(torch.tensor(dout))
    assert np.array_equal(t.grad.numpy(), expected)  # PyTorch's convention too


def test_relu_values_at_zero_and_both_sides():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert np.array_equal(tinycnn.relu(x), [0.0, 0.0, 0.0, 0.5, 2.0])
    assert np.array_equal(naive.relu(x), [0.0, 0.0, 0.0, 0.5, 2.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_the_float_dtype(dtype):
    x = np.array([[-1.0, 2.0]], dtype=dtype)
    assert tinycnn.relu(x).dtype == dtype
    assert tinycnn.relu_backward(np.ones_like(x), x).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_into_gives_the_bits_of_max_with_zero(dtype):
    """The engine's ReLU takes max against an array of zeros (a faster NumPy loop than
    against the scalar 0): the same bits, signed zeros, NaNs and infinities included, in
    place and over a transposed view."""
    special = [-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3.5, -3.5]
    x = np.array(special * 7 + list(np.random.default_rng(0).standard_normal(30)), dtype)
    x = x.reshape(10, 10)
    expected = np.maximum(x, 0)
    bits = f"u{x.itemsize}"
    zeros = np.zeros_like(x)
    out = np.empty_like(x)
    assert np.array_equal(relu_into(x, out, zeros).view(bits), expected.view(bits))
    assert np.array_equal(relu_into(x.T, out, zeros).view(bits), expected.T.view(bits))
    inplace = x.copy()
    assert relu_into(inplace, inplace, zeros) is inplace
    assert np.array_equal(inplace.view(bits), expected.view(bits))
    assert np.array_equal(tinycnn.relu(x).view(bits), expected.view(bits))
