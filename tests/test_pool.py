"""tinycnn.ops.pool: max/avg pooling against the plain loops, central finite differences and
torch.nn.functional, over sizes, strides, odd image sizes and integer inputs that make ties."""

from __future__ import annotations

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
