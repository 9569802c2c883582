"""tinycnn.ops.dense: the fully connected layer vs naive loops, PyTorch and finite differences."""

from __future__ import annotations

import numpy as np
from conftest import OpImpl, check_op, uniform
from hypothesis import given
from hypothesis import strategies as st

from tinycnn import naive
from tinycnn.ops.dense import dense_backward, dense_forward

FAST = OpImpl(lambda x, W, b: dense_forward(x, W, b)[0], lambda d, x, W, b: dense_backward(d, x, W))
NAIVE = OpImpl(naive.dense_forward, lambda d, x, W, b: naive.dense_backward(d, x, W))


def torch_dense(x, W, b):
    return x @ W + b


@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_dense_matches_naive_torch_and_finite_differences(N, D, O, seed):
    rng = np.random.default_rng(seed)
    inputs = [uniform(rng, N, D), uniform(rng, D, O), uniform(rng, O)]
    check_op(inputs, FAST, torch_dense, naive=NAIVE, finite_differences=True, fd_tol=1e-8)


def test_dense_forward_returns_its_input_as_the_cache():
    rng = np.random.default_rng(0)
    x, W, b = uniform(rng, 3, 4), uniform(rng, 4, 2), uniform(rng, 2)
    out, cache = dense_forward(x, W, b)
    assert out.shape == (3, 2) and cache is x
