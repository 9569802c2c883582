"""tinycnn.gradcheck: the finite-difference helper passes right gradients and catches wrong ones."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from conftest import uniform

import tinycnn
from tinycnn import gradcheck
from tinycnn.gradcheck import check_gradients, numerical_gradient, relative_error
from tinycnn.ops.dense import dense_backward, dense_forward


def dense_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [uniform(rng, 4, 5), uniform(rng, 5, 3), uniform(rng, 3)]


def dense_out(x, W, b):
    return dense_forward(x, W, b)[0]


def test_a_right_backward_passes():
    report = check_gradients(dense_out, lambda d, x, W, b: dense_backward(d, x, W), dense_inputs())
    assert len(report.errors) == 3 and report.max_error < 1e-8


@pytest.mark.parametrize(
    "broken",
    [
        lambda d, x, W, b: (d @ W.T, x.T @ d * 2, d.sum(0)),  # a factor of 2 too much
        lambda d, x, W, b: (d @ W.T, x.T @ d, d.mean(0)),  # mean instead of sum
        lambda d, x, W, b: (-(d @ W.T), x.T @ d, d.sum(0)),  # wrong sign
    ],
    ids=["factor", "mean-not-sum", "sign"],
)
def test_a_deliberately_broken_backward_gives_a_large_error(broken):
    report = check_gradients(dense_out, broken, dense_inputs())
    assert report.max_error > 0.1
    assert sorted(report.errors)[:2] < [1e-8, 1e-8]  # the two right gradients still pass


def test_a_broken_relu_backward_is_caught():
    x = uniform(np.random.default_rng(1), 3, 4)
    right = check_gradients(tinycnn.relu, tinycnn.relu_backward, [x])
    wrong = check_gradients(tinycnn.relu, lambda d, x: d * (x < 0), [x])  # mask inverted
    assert right.max_error < 1e-8 and wrong.max_error > 0.5


def test_a_broken_conv_backward_is_caught():
    rng = np.random.default_rng(2)
    x, kernel, bias = uniform(rng, 1, 2, 5, 5), uniform(rng, 2, 2, 3, 3), uniform(rng, 2)

    def unflipped(d, x, w, b):  # dx with the kernel flipped: the classic mix-up
        dx, dk, db = tinycnn.conv2d_backward(d, x, w)
        dx_wrong, _, _ = tinycnn.conv2d_backward(d, x, w[:, :, ::-1, ::-1])
        return dx_wrong, dk, db

    report = check_gradients(tinycnn.conv2d_forward, unflipped, [x, kernel, bias])
    assert report.errors[0] > 0.1 and max(report.errors[1:]) < 1e-7


def test_numerical_gradient_of_a_quadratic_and_inputs_are_restored():
    x = uniform(np.random.default_rng(3), 3, 2)
    before = x.copy()
    grad = numerical_gradient(lambda: float(np.sum(x**2 + 3 * x)), x)
    assert np.array_equal(x, before)
    assert np.max(np.abs(grad - (2 * before + 3))) < 1e-8


def test_check_gradients_copies_its_inputs_and_accepts_a_single_gradient():
    x = uniform(np.random.default_rng(4), 5)
    before = x.copy()
    report = check_gradients(lambda x: x**3, lambda d, x: d * 3 * x**2, [x])
    assert np.array_equal(x, before) and report.max_error < 1e-7


def test_check_gradients_refuses_a_wrong_number_of_gradients():
    with pytest.raises(ValueError, match="gradients"):
        check_gradients(dense_out, lambda d, x, W, b: (d @ W.T, x.T @ d), dense_inputs())


def test_relative_error():
    a = np.array([1.0, -2.0, 4.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, -a) == 2.0  # max|a - (-a)| / max|a| = 8 / 4
    assert relative_error(np.zeros(0), np.zeros(0)) == 0.0
    assert relative_error(a, a * (1 + 1e-9)) == pytest.approx(1e-9, rel=1e-3)
    with pytest.raises(ValueError, match="shapes"):
        relative_error(a, a[:2])


def test_module_docstring_example_runs():
    result = doctest.testmod(gradcheck)
    assert result.attempted > 0 and result.failed == 0


def test_relative_error_is_measured_against_the_largest_entry():
    # Entry by entry, 1e-12 against 2e-12 would be an error of 0.5; against the array's scale
    # (about 1) it is rounding noise, which is what finite differences leave in every entry.
    a = np.array([1.0, 1e-12])
    b = np.array([1.0, 2e-12])
    assert relative_error(a, b) == pytest.approx(1e-12)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.zeros(2), np.array([0.0, 1e-300])) == 1.0
