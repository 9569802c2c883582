"""tinycnn.naive: the plain-loop reference ops against small values computed by hand.

Every number below was worked out on paper; the comments show the arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinycnn import naive

X3 = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).reshape(1, 1, 3, 3)
K2 = np.array([[1.0, 0.0], [0.0, -1.0]]).reshape(1, 1, 2, 2)


def test_conv_forward_of_a_3x3_image_with_a_2x2_kernel():
    # out[i, j] = x[i, j] - x[i+1, j+1] + 0.5 = -4 + 0.5 for each of the four windows.
    out = naive.conv2d_forward(X3, K2, np.array([0.5]))
    assert out.shape == (1, 1, 2, 2)
    assert np.array_equal(out[0, 0], [[-3.5, -3.5], [-3.5, -3.5]])


def test_conv_forward_with_stride_2_and_padding_1():
    # A 3x3 kernel of ones over the zero-padded 5x5 image, windows at rows/cols 0 and 2:
    # (0,0): 1+2+4+5 = 12, (0,1): 2+3+5+6 = 16, (1,0): 4+5+7+8 = 24, (1,1): 5+6+8+9 = 28.
    out = naive.conv2d_forward(X3, np.ones((1, 1, 3, 3)), np.zeros(1), stride=2, pad=1)
    assert np.array_equal(out[0, 0], [[12.0, 16.0], [24.0, 28.0]])


def test_conv_forward_sums_over_channels_and_keeps_filters_apart():
    x = np.stack([X3[0, 0], 10 * X3[0, 0]])[None]  # (1, 2, 3, 3): channel 1 is 10x channel 0
    kernel = np.zeros((2, 2, 1, 1))
    kernel[0, :, 0, 0] = [1.0, 1.0]  # filter 0: x0 + x1 = 11 x0
    kernel[1, :, 0, 0] = [1.0, -0.1]  # filter 1: x0 - x1/10 = 0
    out = naive.conv2d_forward(x, kernel, np.array([0.0, 2.0]))
    assert np.array_equal(out[0, 0], 11 * X3[0, 0])
    assert np.allclose(out[0, 1], 2.0, rtol=0, atol=1e-15)


def test_conv_backward_by_hand():
    dx, dkernel, dbias = naive.conv2d_backward(np.ones((1, 1, 2, 2)), X3, K2)
    # dkernel[a, b] = sum over the 4 windows of x[i+a, j+b]:
    # (0,0): 1+2+4+5, (0,1): 2+3+5+6, (1,0): 4+5+7+8, (1,1): 5+6+8+9.
    assert np.array_equal(dkernel[0, 0], [[12.0, 16.0], [24.0, 28.0]])
    assert np.array_equal(dbias, [4.0])  # four outputs, each with gradient 1
    # dx: the kernel [[1, 0], [0, -1]] stamped at each of the 4 window positions and added.
    assert np.array_equal(dx[0, 0], [[1.0, 1.0, 0.0], [1.0, 0.0, -1.0], [0.0, -1.0, -1.0]])


def test_conv_backward_with_padding_cuts_the_padding_gradient_away():
    # 1x1 image, 3x3 kernel, pad 1: one window, centred on the pixel; only the kernel's centre
    # ever touches real data.
    x = np.array([[[[2.0]]]])
    kernel = np.arange(9.0).reshape(1, 1, 3, 3)
    dx, dkernel, dbias = naive.conv2d_backward(np.array([[[[3.0]]]]), x, kernel, pad=1)
    assert dx.shape == (1, 1, 1, 1) and dx[0, 0, 0, 0] == 3.0 * 4.0  # dout * kernel centre
    expected = np.zeros((3, 3))
    expected[1, 1] = 3.0 * 2.0  # dout * x; the padding's zeros give 0 elsewhere
    assert np.array_equal(dkernel[0, 0], expected) and dbias[0] == 3.0


def test_relu_and_its_gradient_by_hand():
    x = np.array([[-1.5, 0.0, 2.5]])
    assert np.array_equal(naive.relu(x), [[0.0, 0.0, 2.5]])
    assert np.array_equal(naive.relu_backward(np.array([[7.0, 7.0, 7.0]]), x), [[0.0, 0.0, 7.0]])


def test_dense_by_hand():
    x = np.array([[1.0, 2.0]])
    W = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]])
    b = np.array([0.5, 0.0, -1.0])
    # [1*1 + 2*0 + 0.5, 1*0 + 2*1 + 0, 1*2 + 2*3 - 1]
    assert np.array_equal(naive.dense_forward(x, W, b), [[1.5, 2.0, 7.0]])
    dx, dW, db = naive.dense_backward(np.array([[1.0, 1.0, 1.0]]), x, W)
    assert np.array_equal(dx, [[3.0, 4.0]])  # row sums of W
    assert np.array_equal(dW, [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])  # x.T @ dout
    assert np.array_equal(db, [1.0, 1.0, 1.0])


def test_mse_by_hand():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    loss, dpred = naive.mse_loss(pred, target)
    assert loss == pytest.approx((1 + 0 + 4 + 16) / 4, rel=1e-15)  # mean over N*O = 4 entries
    assert np.array_equal(dpred, [[0.5, 0.0], [1.0, 2.0]])  # 2 * error / 4


def test_cross_entropy_by_hand():
    # Equal logits: p = (1/2, 1/2), loss = log 2, gradient p - t = (-1/2, 1/2).
    loss, grad = naive.softmax_cross_entropy(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]))
    assert loss == pytest.approx(math.log(2), rel=1e-15)
    assert np.allclose(grad, [[-0.5, 0.5]], rtol=0, atol=1e-16)
    # Logits (0, log 3): p = (1/4, 3/4); target class 1: loss = -log(3/4); two samples average.
    logits = np.array([[0.0, math.log(3)], [0.0, math.log(3)]])
    loss, grad = naive.softmax_cross_entropy(logits, np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert loss == pytest.approx(-math.log(0.75), rel=1e-14)
    assert np.allclose(grad, [[0.125, -0.125], [0.125, -0.125]], rtol=0, atol=1e-15)


def test_naive_train_cnn_one_epoch_by_hand():
    # One 1x1 image x = 2, target 1, a 1x1 kernel: z = k*x, a = relu(z), out = a*w.
    np.random.seed(3)
    k0, w0 = np.random.randn() * 0.1, np.random.randn() * 0.1
    assert k0 > 0  # seed 3 draws a positive kernel, so the ReLU passes the gradient
    np.random.seed(3)
    kernel, bias_conv, W_fc, b_fc, loss = naive.train_cnn(
        np.array([[[[2.0]]]]), np.array([1.0]), epochs=1, lr=0.1, kernel_size=1
    )
    a = 2 * k0
    err = a * w0 - 1
    assert loss == pytest.approx(err**2, rel=1e-15)
    g = 2 * err  # d loss / d out, with N*O = 1
    assert W_fc[0, 0] == pytest.approx(w0 - 0.1 * g * a, rel=1e-14)
    assert b_fc[0] == pytest.approx(-0.1 * g, rel=1e-14)
    assert kernel[0, 0, 0, 0] == pytest.approx(k0 - 0.1 * g * w0 * 2, rel=1e-14)
    assert bias_conv[0] == pytest.approx(-0.1 * g * w0, rel=1e-14)
