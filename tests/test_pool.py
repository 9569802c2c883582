"""tinycnn.ops.pool: max/avg pooling against the plain loops, central finite differences and
torch.nn.functional, over sizes, strides, odd image sizes and integer inputs that make ties."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import OpImpl, assert_close, check_op, uniform
from hypothesis import example, given
from hypothesis import strategies as st

from tinycnn import naive
from tinycnn.ops import pool


@st.composite
def pool_configs(draw):
    """(N, C, H, W, size, stride, ties, seed); H and W often leave a partial window at the edge,
    and stride below, at and above size (overlapping, tiling and gapped windows)."""
    size = draw(st.integers(1, 4))
    stride = draw(st.sampled_from([None, 1, 2, 3, 4]))
    return dict(
        N=draw(st.integers(1, 3)),
        C=draw(st.integers(1, 3)),
        H=draw(st.integers(size, size + 6)),
        W=draw(st.integers(size, size + 6)),
        size=size,
        stride=stride,
        ties=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def pool_input(cfg):
    rng = np.random.default_rng(cfg["seed"])
    shape = (cfg["N"], cfg["C"], cfg["H"], cfg["W"])
    if cfg["ties"]:  # few distinct integers: most windows hold their maximum more than once
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    return uniform(rng, *shape)


def impls(kind, size, stride):
    fast_fwd = getattr(pool, f"{kind}_pool2d_forward")
    fast_bwd = getattr(pool, f"{kind}_pool2d_backward")
    slow_fwd = getattr(naive, f"{kind}_pool2d_forward")
    slow_bwd = getattr(naive, f"{kind}_pool2d_backward")
    torch_fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    return (
        OpImpl(lambda x: fast_fwd(x, size, stride), lambda d, x: [fast_bwd(d, x, size, stride)]),
        OpImpl(lambda x: slow_fwd(x, size, stride), lambda d, x: [slow_bwd(d, x, size, stride)]),
        lambda x: torch_fn(x, size, stride=size if stride is None else stride),
    )


TILING = dict(N=2, C=2, H=6, W=4, size=2, stride=None, ties=True, seed=1)
PARTIAL_EDGE = dict(N=1, C=3, H=7, W=5, size=2, stride=2, ties=False, seed=2)
OVERLAP = dict(N=2, C=1, H=5, W=6, size=3, stride=1, ties=True, seed=3)
GAPS = dict(N=1, C=2, H=9, W=8, size=2, stride=3, ties=True, seed=4)


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(cfg=pool_configs())
@example(cfg=TILING)
@example(cfg=PARTIAL_EDGE)
@example(cfg=OVERLAP)
@example(cfg=GAPS)
def test_pool_matches_torch_and_loops(kind, cfg):
    fast, slow, torch_fn = impls(kind, cfg["size"], cfg["stride"])
    x = pool_input(cfg)
    # Finite differences only where the max is unique: at a tie the max is not differentiable.
    check_op([x], fast, torch_fn, naive=slow, finite_differences=not cfg["ties"] or kind == "avg")


def test_max_pool_tie_goes_to_first_maximum_in_row_major_order():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 0.0, 0.0]]]])  # (1, 1, 2, 4)
    dx = pool.max_pool2d_backward(np.array([[[[5.0, 7.0]]]]), x, 2)
    assert dx.tolist() == [[[[0.0, 5.0, 7.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]]
    # and an all-equal window (zeros, as after a ReLU) sends it to its top-left pixel
    dx = pool.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 2, 2)), 2)
    assert dx.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_partial_window_at_the_edge_is_dropped(kind):
    x = np.arange(35.0).reshape(1, 1, 5, 7)
    fwd = getattr(pool, f"{kind}_pool2d_forward")
    out = fwd(x, 2)
    assert out.shape == (1, 1, 2, 3)
    dx = getattr(pool, f"{kind}_pool2d_backward")(np.ones(out.shape), x, 2)
    assert not dx[0, 0, 4].any() and not dx[0, 0, :, 6].any()  # the dropped row and column


def test_max_pool_nan_propagates_forward_and_routes_nowhere():
    x = np.array([[[[1.0, np.nan], [2.0, 0.0]]]])
    assert np.isnan(pool.max_pool2d_forward(x, 2)).all()
    assert not pool.max_pool2d_backward(np.ones((1, 1, 1, 1)), x, 2).any()


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("stride", [None, 1, 3])
def test_float32_stays_float32_and_matches_float64(kind, stride):
    x = uniform(np.random.default_rng(5), 2, 3, 9, 8)
    fwd = getattr(pool, f"{kind}_pool2d_forward")
    bwd = getattr(pool, f"{kind}_pool2d_backward")
    out32 = fwd(x.astype(np.float32), 3, stride)
    assert out32.dtype == np.float32
    assert_close(out32, fwd(x, 3, stride), 1e-6, "float32 forward")
    dout = uniform(np.random.default_rng(6), *out32.shape)
    dx32 = bwd(dout.astype(np.float32), x.astype(np.float32), 3, stride)
    assert dx32.dtype == np.float32
    assert_close(dx32, bwd(dout, x, 3, stride), 1e-6, "float32 backward")


@pytest.mark.parametrize(
    "args, error, words",
    [
        ((np.zeros((1, 1, 4, 4)), 0), ValueError, "size"),
        ((np.zeros((1, 1, 4, 4)), 2.5), TypeError, "size"),
        ((np.zeros((1, 1, 4, 4)), 2, 0), ValueError, "stride"),
        ((np.zeros((1, 1, 3, 4)), 4), ValueError, "size=4 is larger than the 3x4"),
        ((np.zeros((4, 4)), 2), ValueError, "x"),
    ],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_bad_arguments_are_named(kind, args, error, words):
    with pytest.raises(error, match=words):
        getattr(pool, f"{kind}_pool2d_forward")(*args)


def test_bad_dout_shape_is_named():
    with pytest.raises(ValueError, match=r"dout must have shape \(1, 1, 2, 2\)"):
        pool.max_pool2d_backward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 4, 4)), 2)


def test_torch_routes_ties_like_us():
    """The oracle itself: PyTorch's CPU max-pool sends a tie's gradient to the first maximum."""
    x = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]]]], dtype=torch.float64, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    assert x.grad.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]


# ---------------------------------------------------------------- the channels-last max-pool core
# max_pool_backward_cl has two paths for windows that do not overlap (stride >= size): the taps
# gathered into one tap-major array, or tap by tap over strided views (pool._gathers picks one),
# each in blocks of window rows; overlapping windows go tap by tap in blocks of whole samples.
# The tests below pin every path, at every block size, against plain loops, bit for bit.


def first_max_loops(dout, x, size, stride):
    """Plain loops: ``dx`` ``(N, H, W, C)`` of channels-last ``x`` for ``dout``
    ``(N, out_h, out_w, C)``: each window's gradient to its first maximum in row-major order,
    nowhere when the window holds a NaN; the gradients a pixel gets from several windows added
    tap by tap in row-major order (the order the core adds them in)."""
    N, out_h, out_w, C = dout.shape
    first = {}
    for n, i, j, c in np.ndindex(N, out_h, out_w, C):
        window = x[n, i * stride : i * stride + size, j * stride : j * stride + size, c]
        if not np.isnan(window).any():
            first[n, i, j, c] = divmod(int(np.argmax(window)), size)  # argmax: the first max
    dx = np.zeros_like(x)
    for a, b in np.ndindex(size, size):
        for (n, i, j, c), tap in first.items():
            if tap == (a, b):
                dx[n, i * stride + a, j * stride + b, c] += dout[n, i, j, c]
    return dx


@st.composite
def channels_last_pools(draw, overlapping: bool):
    """``(x, size, stride, dout)``: channels-last ``x`` ``(N, H, W, C)``, float32 or float64,
    whose windows tie often (numbers from {0, 1}, or from {-1, 0, 1} with -0.0 among the zeros)
    or not (normal numbers), with NaN at times; image sides from one window to a few windows
    plus a partial one; stride below size when ``overlapping``, else from size up to size + 2
    (tiling windows and windows with gaps)."""
    size = draw(st.integers(1, 4) if not overlapping else st.integers(2, 4))
    stride = draw(st.integers(1, size - 1) if overlapping else st.integers(size, size + 2))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    H, W = draw(st.integers(size, 3 * size + 3)), draw(st.integers(size, 3 * size + 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = draw(st.sampled_from(["zero-one", "signed", "normal"]))
    if values == "zero-one":
        x = rng.integers(0, 2, size=(N, H, W, C)).astype(dtype)
    elif values == "signed":
        x = rng.integers(-1, 2, size=(N, H, W, C)).astype(dtype)
        x[(x == 0) & (rng.random(x.shape) < 0.5)] = -0.0
    else:
        x = rng.standard_normal((N, H, W, C)).astype(dtype)
    if draw(st.booleans()):
        x[rng.random(x.shape) < 0.05] = np.nan
    out_h, out_w = pool.pool_output_size(H, size, stride), pool.pool_output_size(W, size, stride)
    dout = rng.standard_normal((N, out_h, out_w, C)).astype(dtype)  # negatives: -0.0 products
    return x, size, stride, dout


def run_core(x, size, stride, dout, block_bytes, extra_samples):
    """``max_pool_backward_cl`` on the forward's output, ``dx`` filled with 7 beforehand (so a
    pixel the core leaves unwritten shows), with scratch made for ``extra_samples`` more samples
    (the engine's last, smaller chunk) and blocks of about ``block_bytes`` of taps."""
    out = np.empty(dout.shape, x.dtype)
    pool.max_pool_forward_cl(x, size, stride, out)
    shape = (x.shape[0] + extra_samples, *x.shape[1:])
    with mock.patch.object(pool, "_BLOCK_BYTES", block_bytes):
        scratch = pool.max_pool_backward_scratch(shape, size, stride, x.dtype)
    dx = np.full_like(x, 7)
    assert pool.max_pool_backward_cl(dout, x, out, size, stride, dx, scratch) is dx
    return dx


def bits(a):
    """The bytes of ``a``: equal only if equal bit for bit (-0.0 is not 0.0, NaN equals NaN)."""
    return a.view(f"u{a.itemsize}")


BLOCK_BYTES = st.sampled_from([1, 200, 4096, pool._BLOCK_BYTES])  # 1: a window row per block


@given(case=channels_last_pools(overlapping=False), block_bytes=BLOCK_BYTES,
       extra=st.integers(0, 2))  # fmt: skip
def test_max_pool_core_gathered_and_by_tap_paths_equal_the_loops_bit_for_bit(case, block_bytes,
                                                                              extra):  # fmt: skip
    """Windows that do not overlap: the gathered path and the tap-by-tap path give the same
    bits (-0.0 where ``dout * 0`` gives it, the first maximum's gradient on ties, none for a
    window with a NaN, 0 for pixels in no window), and the numbers of the plain loops."""
    x, size, stride, dout = case
    results = {}
    for gathers in (True, False):
        with mock.patch.object(pool, "_gathers", lambda x, gathers=gathers: gathers):
            results[gathers] = run_core(x, size, stride, dout, block_bytes, extra)
    np.testing.assert_array_equal(bits(results[True]), bits(results[False]))
    expected = first_max_loops(dout, x, size, stride)
    np.testing.assert_array_equal(results[True], expected)  # -0.0 == 0.0 here
    assert results[True].dtype == x.dtype


@given(case=channels_last_pools(overlapping=True), block_bytes=BLOCK_BYTES,
       extra=st.integers(0, 2))  # fmt: skip
def test_max_pool_core_overlapping_windows_add_in_tap_order_at_any_block_size(case, block_bytes,
                                                                            extra):  # fmt: skip
    """Overlapping windows: a pixel held by several windows gets the sum of their gradients in
    tap order, the loops' numbers exactly, whatever the block size."""
    x, size, stride, dout = case
    got = run_core(x, size, stride, dout, block_bytes, extra)
    np.testing.assert_array_equal(got, first_max_loops(dout, x, size, stride))


@given(case=channels_last_pools(overlapping=False))
def test_max_pool_plain_loops_of_these_tests_match_tinycnn_naive(case):
    """The loops above agree with ``tinycnn.naive`` (which has no NaN rule: inputs without NaN)
    on windows that do not overlap, the case where the order of sums cannot differ."""
    x, size, stride, dout = case
    x = np.nan_to_num(x, nan=0.5)
    to_nchw = (0, 3, 1, 2)
    expected = naive.max_pool2d_backward(dout.transpose(to_nchw), x.transpose(to_nchw), size,
                                         stride).transpose(0, 2, 3, 1)  # fmt: skip
    np.testing.assert_array_equal(first_max_loops(dout, x, size, stride), expected)


def test_max_pool_core_picks_its_path_by_channels_and_size():
    """One channel, and inputs of long pixels that fit in cache, go tap by tap; the rest is
    gathered (either way the same numbers: the tests above pin both paths)."""
    gathered = {(64, 28, 28, 6): True, (64, 32, 32, 32): True, (64, 16, 16, 64): True,
                (8, 28, 28, 2): True, (64, 10, 10, 16): False, (64, 6, 6, 64): False,
                (64, 28, 28, 1): False, (64, 56, 56, 1): False}  # fmt: skip
    for shape, expected in gathered.items():
        assert pool._gathers(np.empty(shape, np.float32)) == expected, shape
