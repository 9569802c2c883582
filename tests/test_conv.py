"""tinycnn.ops.conv: conv2d_forward/backward vs PyTorch autograd, naive loops, finite differences;
unfold/fold layout and adjointness; the float32 path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import OpImpl, assert_close, check_op, rel_error, uniform
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn import naive
from tinycnn.gradcheck import check_gradients
from tinycnn.ops.conv import (
    conv_backward,
    conv_forward,
    conv_output_size,
    fold,
    fold_cl,
    unfold,
)


@st.composite
def conv_configs(draw, max_batch=3, max_channels=3, max_filters=4, max_kernel=5, max_extra=6):
    """(N, C, H, W, F, k, stride, pad, seed) with a kernel that fits the padded image.

    H and W range over several values past the smallest that fits, so the stride often does not
    divide ``H + 2*pad - k`` evenly (the last rows/columns then belong to no window).
    """
    k = draw(st.integers(1, max_kernel))
    pad = draw(st.integers(0, 2))
    stride = draw(st.integers(1, 3))
    smallest = max(1, k - 2 * pad)
    H = draw(st.integers(smallest, smallest + max_extra))
    W = draw(st.integers(smallest, smallest + max_extra))
    return dict(
        N=draw(st.integers(1, max_batch)),
        C=draw(st.integers(1, max_channels)),
        H=H,
        W=W,
        F=draw(st.integers(1, max_filters)),
        k=k,
        stride=stride,
        pad=pad,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def conv_inputs(cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = uniform(rng, cfg["N"], cfg["C"], cfg["H"], cfg["W"])
    kernel = uniform(rng, cfg["F"], cfg["C"], cfg["k"], cfg["k"])
    bias = uniform(rng, cfg["F"])
    return x, kernel, bias


def fast_conv(stride, pad) -> OpImpl:
    return OpImpl(
        lambda x, w, b: tinycnn.conv2d_forward(x, w, b, stride=stride, pad=pad),
        lambda d, x, w, b: tinycnn.conv2d_backward(d, x, w, stride=stride, pad=pad),
    )


def naive_conv(stride, pad) -> OpImpl:
    return OpImpl(
        lambda x, w, b: naive.conv2d_forward(x, w, b, stride, pad),
        lambda d, x, w, b: naive.conv2d_backward(d, x, w, stride, pad),
    )


def torch_conv(stride, pad):
    return lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad)


# Remainder cases pinned explicitly: (H + 2*pad - k) % stride != 0.
REMAINDER = dict(N=2, C=2, H=6, W=7, F=3, k=3, stride=2, pad=0, seed=1)
REMAINDER_PADDED = dict(N=1, C=3, H=5, W=4, F=2, k=2, stride=3, pad=2, seed=2)


@settings(max_examples=50)
@given(conv_configs())
@example(REMAINDER)
@example(REMAINDER_PADDED)
@example(dict(N=1, C=1, H=1, W=1, F=1, k=5, stride=3, pad=2, seed=3))  # one window, all padding
def test_conv2d_matches_torch_autograd(cfg):
    s, p = cfg["stride"], cfg["pad"]
    out, _ = check_op(conv_inputs(cfg), fast_conv(s, p), torch_conv(s, p), tol=1e-10)
    out_h = (cfg["H"] + 2 * p - cfg["k"]) // s + 1
    out_w = (cfg["W"] + 2 * p - cfg["k"]) // s + 1
    assert out.shape == (cfg["N"], cfg["F"], out_h, out_w)
    assert out.dtype == np.float64


@settings(max_examples=25)
@given(conv_configs(max_batch=2, max_channels=2, max_filters=2, max_kernel=3, max_extra=3))
@example(REMAINDER)
def test_conv2d_fast_matches_naive_loops(cfg):
    s, p = cfg["stride"], cfg["pad"]
    check_op(conv_inputs(cfg), fast_conv(s, p), torch_conv(s, p), naive=naive_conv(s, p))


@settings(max_examples=15)
@given(conv_configs(max_batch=2, max_channels=2, max_filters=2, max_kernel=3, max_extra=3))
@example(REMAINDER_PADDED)
def test_conv2d_gradients_match_finite_differences(cfg):
    s, p = cfg["stride"], cfg["pad"]
    check_op(
        conv_inputs(cfg), fast_conv(s, p), torch_conv(s, p), finite_differences=True, fd_tol=1e-7
    )


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1), (3, 2)])
def test_conv2d_passes_public_gradcheck(stride, pad):
    x, kernel, bias = conv_inputs(dict(N=2, C=2, H=5, W=6, F=3, k=3, stride=1, pad=0, seed=7))
    report = check_gradients(
        lambda x, w, b: tinycnn.conv2d_forward(x, w, b, stride=stride, pad=pad),
        lambda d, x, w, b: tinycnn.conv2d_backward(d, x, w, stride=stride, pad=pad),
        [x, kernel, bias],
    )
    assert len(report.errors) == 3
    assert report.max_error < 1e-6


def test_pixels_no_window_reaches_get_zero_gradient():
    # H = W = 6, k = 3, stride 2: windows start at rows 0 and 2 and cover rows 0..4; row 5 and
    # column 5 are never seen, so they get exactly 0, and nothing else in dx is forced to 0.
    x, kernel, bias = conv_inputs(dict(N=1, C=1, H=6, W=6, F=1, k=3, stride=2, pad=0, seed=4))
    out = tinycnn.conv2d_forward(x, kernel, bias, stride=2)
    assert out.shape == (1, 1, 2, 2)
    dx, _, _ = tinycnn.conv2d_backward(np.ones_like(out), x, kernel, stride=2)
    assert np.all(dx[..., 5, :] == 0) and np.all(dx[..., :, 5] == 0)
    assert np.all(dx[..., :5, :5] != 0)


def test_bias_gradient_is_dout_summed_per_filter():
    x, kernel, bias = conv_inputs(dict(N=3, C=2, H=5, W=5, F=4, k=2, stride=1, pad=1, seed=5))
    dout = uniform(np.random.default_rng(0), 3, 4, 6, 6)
    _, _, dbias = tinycnn.conv2d_backward(dout, x, kernel, pad=1)
    assert_close(dbias, dout.sum(axis=(0, 2, 3)), 1e-14, "dbias")


@settings(max_examples=30)
@given(conv_configs(max_extra=4))
def test_unfold_has_the_channel_major_layout(cfg):
    x, _, _ = conv_inputs(cfg)
    k, s, p = cfg["k"], cfg["stride"], cfg["pad"]
    cols = unfold(x, k, s, p)
    N, C, H, W = x.shape
    out_h, out_w = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
    assert cols.shape == (C * k * k, N * out_h * out_w)
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    c6 = cols.reshape(C, k, k, N, out_h, out_w)
    rng = np.random.default_rng(cfg["seed"])
    for _ in range(20):  # random spot checks of cols[(c, a, b), (n, i, j)]
        c, a, b = rng.integers(C), rng.integers(k), rng.integers(k)
        n, i, j = rng.integers(N), rng.integers(out_h), rng.integers(out_w)
        assert c6[c, a, b, n, i, j] == xpad[n, c, i * s + a, j * s + b]


def test_unfold_into_a_reused_buffer_gives_the_same_columns():
    x, _, _ = conv_inputs(dict(N=2, C=3, H=7, W=6, F=1, k=3, stride=2, pad=1, seed=6))
    expected = unfold(x, 3, 2, 1)
    buffer = np.full(expected.size + 17, np.nan)
    assert np.array_equal(unfold(x, 3, 2, 1, out=buffer), expected)


@settings(max_examples=40)
@given(conv_configs(max_extra=5))
def test_fold_is_the_adjoint_of_unfold(cfg):
    # <unfold(x), c> == <x, fold(c)> for every x and c: fold is exactly unfold's transpose,
    # which is what makes conv_backward's dx the gradient of conv_forward.
    x, _, _ = conv_inputs(cfg)
    k, s, p = cfg["k"], cfg["stride"], cfg["pad"]
    cols = unfold(x, k, s, p)
    c = uniform(np.random.default_rng(cfg["seed"] + 1), *cols.shape)
    folded = fold(c, x.shape, k, s, p)
    assert folded.shape == x.shape
    lhs, rhs = np.vdot(cols, c), np.vdot(x, folded)
    assert abs(lhs - rhs) <= 1e-13 * np.linalg.norm(cols) * np.linalg.norm(c)


@settings(max_examples=40)
@given(conv_configs(max_extra=5), st.booleans())
def test_channels_last_fold_equals_the_channel_major_fold(cfg, strided_target):
    # fold_cl is the engine's col2im: the same sums as fold, laid out (N, H, W, C), into a
    # target of any strides (here also a transposed view), whatever it held before.
    x, _, _ = conv_inputs(cfg)
    N, C, H, W = x.shape
    k, s, p = cfg["k"], cfg["stride"], cfg["pad"]
    out_h, out_w = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
    c = uniform(np.random.default_rng(cfg["seed"] + 1), C * k * k, N * out_h * out_w)
    expected = fold(c, x.shape, k, s, 0 if p == 0 else p)  # (N, C, H, W)
    # (c, a, b) x (n, i, j) -> (n, i, j, a, b, c)
    dcols = c.reshape(C, k, k, N, out_h, out_w).transpose(3, 4, 5, 1, 2, 0)
    Hp, Wp = H + 2 * p, W + 2 * p
    if strided_target:
        target = np.full((N, C, Hp, Wp), np.nan).transpose(0, 2, 3, 1)
    else:
        target = np.full((N, Hp, Wp, C), np.nan)
    got = fold_cl(np.ascontiguousarray(dcols), target, s)
    assert got is target
    got = got[:, p : p + H, p : p + W] if p else got
    assert rel_error(got.transpose(0, 3, 1, 2), expected) <= 1e-15


def test_internal_pair_matches_public_functions():
    x, kernel, bias = conv_inputs(dict(N=2, C=2, H=6, W=5, F=3, k=3, stride=2, pad=1, seed=8))
    out, cache = conv_forward(x, kernel, bias, stride=2, pad=1)
    assert np.array_equal(out, tinycnn.conv2d_forward(x, kernel, bias, stride=2, pad=1))
    dout = uniform(np.random.default_rng(1), *out.shape)
    dx, dk, db = conv_backward(dout, cache)
    for mine, public in zip((dx, dk, db), tinycnn.conv2d_backward(dout, x, kernel, 2, 1)):
        assert np.array_equal(mine, public)
    no_dx, dk2, db2 = conv_backward(dout, cache, need_dx=False)
    assert no_dx is None and np.array_equal(dk2, dk) and np.array_equal(db2, db)


@settings(max_examples=20)
@given(conv_configs(max_extra=4))
def test_float32_path_stays_float32_and_matches_float64(cfg):
    x, kernel, bias = conv_inputs(cfg)
    s, p = cfg["stride"], cfg["pad"]
    out64 = tinycnn.conv2d_forward(x, kernel, bias, s, p)
    out32 = tinycnn.conv2d_forward(x.astype(np.float32), kernel, bias, s, p)
    assert out32.dtype == np.float32
    assert_close(out32, out64, 1e-5, "float32 out")
    dout = uniform(np.random.default_rng(0), *out64.shape)
    grads64 = tinycnn.conv2d_backward(dout, x, kernel, s, p)
    grads32 = tinycnn.conv2d_backward(dout, x.astype(np.float32), kernel, s, p)
    for name, g32, g64 in zip(("dx", "dkernel", "dbias"), grads32, grads64):
        assert g32.dtype == np.float32, name
        assert_close(g32, g64, 1e-5, f"float32 {name}")


def test_integer_input_is_computed_in_float64():
    x = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    kernel = np.ones((1, 1, 2, 2), dtype=np.int64)
    out = tinycnn.conv2d_forward(x, kernel, np.array([1]))
    assert out.dtype == np.float64
    assert rel_error(out, naive.conv2d_forward(x, kernel, np.array([1.0]))) == 0.0
    dx, dk, db = tinycnn.conv2d_backward(np.ones_like(out), x, kernel)
    assert dx.dtype == dk.dtype == db.dtype == np.float64


# --- the textbook formulas of docs/how-it-works.md, checked with the forward conv itself ---------


def dilate(dout, stride):
    """Insert ``stride - 1`` zeros between neighbouring entries of ``dout`` along H and W:
    ``(N, F, H', W')`` -> ``(N, F, stride*(H'-1) + 1, stride*(W'-1) + 1)``."""
    N, F_, out_h, out_w = dout.shape
    dilated = np.zeros((N, F_, stride * (out_h - 1) + 1, stride * (out_w - 1) + 1))
    dilated[:, :, ::stride, ::stride] = dout
    return dilated


@settings(max_examples=30)
@given(conv_configs())
def test_dx_is_a_full_convolution_of_the_dilated_dout_with_the_flipped_kernel(cfg):
    x, kernel, bias = conv_inputs(cfg)
    k, s, p = cfg["k"], cfg["stride"], cfg["pad"]
    out = tinycnn.conv2d_forward(x, kernel, bias, s, p)
    dout = uniform(np.random.default_rng(cfg["seed"]), *out.shape)
    dx, _, _ = tinycnn.conv2d_backward(dout, x, kernel, s, p)
    # Full convolution = correlation of the dilated dout, zero-padded by k-1, with the kernel
    # rotated by 180 degrees and its filter/channel axes swapped: (F, C, k, k) -> (C, F, k, k).
    flipped = kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    dxpad = tinycnn.conv2d_forward(dilate(dout, s), flipped, np.zeros(cfg["C"]), pad=k - 1)
    # It covers rows 0 .. s*(H'-1) + k - 1 of the padded input; the remainder rows, which no
    # window reaches, get 0; then the padding's border is cut away.
    Hp, Wp = cfg["H"] + 2 * p, cfg["W"] + 2 * p
    full = np.zeros((cfg["N"], cfg["C"], Hp, Wp))
    full[:, :, : dxpad.shape[2], : dxpad.shape[3]] = dxpad
    assert_close(dx, full[:, :, p : p + cfg["H"], p : p + cfg["W"]], 1e-12, "dx")


@settings(max_examples=30)
@given(conv_configs())
def test_dkernel_is_a_correlation_of_the_input_with_the_dilated_dout(cfg):
    x, kernel, bias = conv_inputs(cfg)
    k, s, p = cfg["k"], cfg["stride"], cfg["pad"]
    out = tinycnn.conv2d_forward(x, kernel, bias, s, p)
    dout = uniform(np.random.default_rng(cfg["seed"]), *out.shape)
    _, dkernel, _ = tinycnn.conv2d_backward(dout, x, kernel, s, p)
    # dkernel[f, c] = sum_n xpad[n, c] (correlated with) dilated dout[n, f]: a convolution whose
    # "batch" is the channel c, whose "channels" are the samples n, and whose (non-square)
    # kernel is dout; PyTorch computes it here.
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    corr = F.conv2d(
        torch.tensor(xpad.transpose(1, 0, 2, 3)),
        torch.tensor(dilate(dout, s).transpose(1, 0, 2, 3)),
    ).numpy()  # (C, F, ...): only the first k x k offsets are kernel taps (the rest: remainder)
    assert_close(dkernel, corr[:, :, :k, :k].transpose(1, 0, 2, 3), 1e-12, "dkernel")
