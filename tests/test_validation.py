"""tinycnn._validation, through every public entry point: a user's mistake raises ValueError or
TypeError whose message names the argument, never a raw NumPy error or a silent NaN.

Table-driven: each row is (entry point, the arguments that differ from a valid call, the
exception type, and the name the message must contain)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinycnn
from tinycnn.deepml import train_simple_cnn_with_backprop

NAN, INF = float("nan"), float("inf")


def x_img(N=2, C=1, H=5, W=5):
    return np.ones((N, C, H, W))


def with_value(arr, index, value):
    arr = np.array(arr, dtype=np.float64)
    arr[index] = value
    return arr


VALID = {
    "conv2d_forward": dict(x=x_img(), kernel=np.ones((3, 1, 3, 3)), bias=np.zeros(3)),
    "conv2d_backward": dict(dout=np.ones((2, 3, 3, 3)), x=x_img(), kernel=np.ones((3, 1, 3, 3))),
    "relu": dict(x=np.array([[-1.0, 2.0]])),
    "relu_backward": dict(dout=np.ones((1, 2)), x=np.array([[-1.0, 2.0]])),
    "train_cnn": dict(X=x_img(N=4), y=np.arange(4.0), epochs=2, lr=0.01),
    "predict_cnn": dict(
        X=x_img(),
        kernel=np.ones((2, 1, 3, 3)),
        bias_conv=np.zeros(2),
        W_fc=np.ones((18, 3)),
        b_fc=np.zeros(3),
    ),
    "deepml": dict(X=np.ones((2, 4, 4)), y=np.eye(2), epochs=1, learning_rate=0.01),
}

FUNCTIONS = {
    "conv2d_forward": tinycnn.conv2d_forward,
    "conv2d_backward": tinycnn.conv2d_backward,
    "relu": tinycnn.relu,
    "relu_backward": tinycnn.relu_backward,
    "train_cnn": tinycnn.train_cnn,
    "predict_cnn": tinycnn.predict_cnn,
    "deepml": train_simple_cnn_with_backprop,
}


def call(function, **overrides):
    kwargs = {**VALID[function], **overrides}
    with np.errstate(all="ignore"):
        return FUNCTIONS[function](**kwargs)


def case(function, overrides, exc, name, id_):
    return pytest.param(function, overrides, exc, name, id=f"{function}-{id_}")


def bad_common_array(function, arg, exemplar):
    """The rows every real-array argument gets: NaN, inf, strings (even of digits), objects,
    complex, None, a ragged list."""
    shape = np.shape(exemplar)
    return [
        case(
            function,
            {arg: with_value(exemplar, (0,) * len(shape), NAN)},
            ValueError,
            arg,
            f"{arg}-nan",
        ),
        case(
            function,
            {arg: with_value(exemplar, (-1,) * len(shape), -INF)},
            ValueError,
            arg,
            f"{arg}-inf",
        ),
        case(function, {arg: np.full(shape, "1")}, TypeError, arg, f"{arg}-digit-strings"),
        case(function, {arg: "1.0"}, TypeError, arg, f"{arg}-string"),
        case(function, {arg: np.ones(shape, dtype=object)}, TypeError, arg, f"{arg}-object"),
        case(function, {arg: np.ones(shape) + 1j}, TypeError, arg, f"{arg}-complex"),
        case(function, {arg: None}, TypeError, arg, f"{arg}-none"),
        case(function, {arg: [[1.0], [1.0, 2.0]]}, ValueError, arg, f"{arg}-ragged"),
    ]


def bad_epochs_and_rate(function, lr_name):
    rows = []
    for value, exc in [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError),
                       ("3", TypeError), (None, TypeError)]:  # fmt: skip
        rows.append(case(function, {"epochs": value}, exc, "epochs", f"epochs={value!r}"))
    for value, exc in [(0, ValueError), (-1, ValueError), (NAN, ValueError), (INF, ValueError),
                       ("0.1", TypeError), (True, TypeError), (None, TypeError)]:  # fmt: skip
        rows.append(case(function, {lr_name: value}, exc, lr_name, f"{lr_name}={value!r}"))
    return rows


def bad_geometry(function):
    rows = []
    for value, exc in [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("1", TypeError),
                       (True, TypeError), (None, TypeError)]:  # fmt: skip
        rows.append(case(function, {"stride": value}, exc, "stride", f"stride={value!r}"))
    for value, exc in [(-1, ValueError), (0.5, TypeError), ("0", TypeError)]:
        rows.append(case(function, {"pad": value}, exc, "pad", f"pad={value!r}"))
    return rows


CASES = [
    # --- conv2d_forward ---------------------------------------------------------------------
    case("conv2d_forward", {"x": np.ones((1, 5, 5))}, ValueError, "x", "x-ndim"),
    case("conv2d_forward", {"kernel": np.ones((3, 3, 3))}, ValueError, "kernel", "kernel-ndim"),
    case("conv2d_forward", {"bias": np.zeros((3, 1))}, ValueError, "bias", "bias-ndim"),
    case("conv2d_forward", {"bias": np.zeros(2)}, ValueError, "bias", "bias-shape"),
    case("conv2d_forward", {"bias": None}, TypeError, "bias", "bias-none"),
    case("conv2d_forward", {"kernel": np.ones((3, 2, 3, 3))}, ValueError, "kernel", "channels"),
    case("conv2d_forward", {"kernel": np.ones((3, 1, 3, 2))}, ValueError, "kernel", "not-square"),
    case("conv2d_forward", {"kernel": np.ones((3, 1, 6, 6))}, ValueError, "kernel", "too-big"),
    case(
        "conv2d_forward",
        {"kernel": np.ones((3, 1, 8, 8)), "pad": 1},
        ValueError,
        "pad",
        "too-big-padded",
    ),
    case(
        "conv2d_forward",
        {"kernel": np.ones((0, 1, 3, 3)), "bias": np.zeros(0)},
        ValueError,
        "kernel",
        "zero-filters",
    ),
    case("conv2d_forward", {"x": np.ones((0, 1, 5, 5))}, ValueError, "x", "x-empty"),
    case(
        "conv2d_forward",
        {"x": np.ones((2, 0, 5, 5)), "kernel": np.ones((3, 0, 3, 3))},
        ValueError,
        "x",
        "no-channels",
    ),
    *bad_common_array("conv2d_forward", "x", x_img()),
    *bad_common_array("conv2d_forward", "kernel", np.ones((3, 1, 3, 3))),
    *bad_common_array("conv2d_forward", "bias", np.zeros(3)),
    *bad_geometry("conv2d_forward"),
    # --- conv2d_backward --------------------------------------------------------------------
    case("conv2d_backward", {"dout": np.ones((2, 3, 4, 4))}, ValueError, "dout", "dout-shape"),
    case("conv2d_backward", {"dout": np.ones((2, 2, 3, 3))}, ValueError, "dout", "dout-filters"),
    case("conv2d_backward", {"dout": np.ones((1, 3, 3, 3))}, ValueError, "dout", "dout-batch"),
    case("conv2d_backward", {"dout": np.ones((3, 3, 3))}, ValueError, "dout", "dout-ndim"),
    case("conv2d_backward", {"stride": 2}, ValueError, "dout", "dout-for-other-stride"),
    case("conv2d_backward", {"x": np.ones((2, 5, 5))}, ValueError, "x", "x-ndim"),
    case("conv2d_backward", {"kernel": np.ones((3, 2, 3, 3))}, ValueError, "kernel", "channels"),
    case("conv2d_backward", {"kernel": np.ones((3, 1, 6, 6))}, ValueError, "kernel", "too-big"),
    *bad_common_array("conv2d_backward", "dout", np.ones((2, 3, 3, 3))),
    *bad_common_array("conv2d_backward", "x", x_img()),
    *bad_common_array("conv2d_backward", "kernel", np.ones((3, 1, 3, 3))),
    *bad_geometry("conv2d_backward"),
    # --- relu, relu_backward ----------------------------------------------------------------
    case("relu", {"x": np.array(["1", "2"])}, TypeError, "x", "digit-strings"),
    case("relu", {"x": np.array([1 + 1j])}, TypeError, "x", "complex"),
    case("relu", {"x": np.array([1], dtype=object)}, TypeError, "x", "object"),
    case("relu_backward", {"dout": np.ones(2)}, ValueError, "dout", "shape-mismatch"),
    case("relu_backward", {"dout": np.array([["1", "2"]])}, TypeError, "dout", "dout-strings"),
    case("relu_backward", {"x": np.array([["a", "b"]])}, TypeError, "x", "x-strings"),
    # --- train_cnn --------------------------------------------------------------------------
    case("train_cnn", {"X": np.ones((4, 5, 5))}, ValueError, "X", "X-ndim"),
    case("train_cnn", {"y": np.ones((4, 1, 1))}, ValueError, "y", "y-ndim"),
    case("train_cnn", {"y": np.ones(3)}, ValueError, "y", "rows-mismatch"),
    case("train_cnn", {"y": np.ones((5, 2))}, ValueError, "y", "rows-mismatch-2d"),
    case("train_cnn", {"X": np.ones((0, 1, 5, 5)), "y": np.ones(0)}, ValueError, "X", "empty"),
    case(
        "train_cnn", {"X": np.ones((4, 1, 2, 2))}, ValueError, "kernel", "image-smaller-than-kernel"
    ),
    case("train_cnn", {"kernel_size": 6}, ValueError, "kernel", "kernel-too-big"),
    case("train_cnn", {"kernel_size": 0}, ValueError, "kernel_size", "kernel-size-0"),
    case("train_cnn", {"kernel_size": 2.0}, TypeError, "kernel_size", "kernel-size-float"),
    case("train_cnn", {"n_filters": 0}, ValueError, "n_filters", "zero-filters"),
    case("train_cnn", {"n_filters": "2"}, TypeError, "n_filters", "filters-string"),
    # sizes no machine holds: refused by name before anything is allocated or drawn
    case("train_cnn", {"n_filters": 10**12}, ValueError, "n_filters", "filters-huge"),
    case("train_cnn", {"pad": 10**6}, ValueError, "pad=1000000", "pad-huge"),
    case("train_cnn", {"dtype": np.float16}, ValueError, "dtype", "float16"),
    case("train_cnn", {"dtype": np.int64}, ValueError, "dtype", "int-dtype"),
    case("train_cnn", {"dtype": "banana"}, TypeError, "dtype", "nonsense-dtype"),
    *bad_common_array("train_cnn", "X", x_img(N=4)),
    *bad_common_array("train_cnn", "y", np.arange(4.0)),
    *bad_epochs_and_rate("train_cnn", "lr"),
    *bad_geometry("train_cnn"),
    # --- predict_cnn ------------------------------------------------------------------------
    case("predict_cnn", {"X": np.ones((2, 5, 5))}, ValueError, "X", "X-ndim"),
    case("predict_cnn", {"X": x_img(C=2)}, ValueError, "X", "channels"),
    case("predict_cnn", {"kernel": np.ones((2, 1, 3, 2))}, ValueError, "kernel", "not-square"),
    case("predict_cnn", {"kernel": np.ones((2, 1, 6, 6))}, ValueError, "kernel", "too-big"),
    case("predict_cnn", {"bias_conv": np.zeros(3)}, ValueError, "bias_conv", "bias-shape"),
    case("predict_cnn", {"W_fc": np.ones((17, 3))}, ValueError, "W_fc", "W_fc-rows"),
    case("predict_cnn", {"W_fc": np.ones(18)}, ValueError, "W_fc", "W_fc-ndim"),
    case("predict_cnn", {"b_fc": np.zeros(2)}, ValueError, "b_fc", "b_fc-shape"),
    case("predict_cnn", {"stride": 2}, ValueError, "W_fc", "W_fc-for-other-stride"),
    case("predict_cnn", {"X": np.ones((0, 1, 5, 5))}, ValueError, "X", "empty"),
    *bad_common_array("predict_cnn", "X", x_img()),
    *bad_common_array("predict_cnn", "W_fc", np.ones((18, 3))),
    *bad_common_array("predict_cnn", "kernel", np.ones((2, 1, 3, 3))),
    *bad_geometry("predict_cnn"),
    # --- deep-ml ----------------------------------------------------------------------------
    case("deepml", {"X": np.ones((2, 1, 4, 4))}, ValueError, "X", "X-ndim"),
    case("deepml", {"y": np.array([0, 1])}, ValueError, "y", "labels-not-one-hot"),
    case("deepml", {"y": np.eye(3)}, ValueError, "y", "rows-mismatch"),
    case("deepml", {"y": np.array([[1.5, -0.5], [0.0, 1.0]])}, ValueError, "y", "negative"),
    case("deepml", {"y": np.array([[1.0, 1.0], [0.0, 1.0]])}, ValueError, "y", "sums-to-2"),
    case("deepml", {"y": np.array([[0.2, 0.2], [0.0, 1.0]])}, ValueError, "y", "sums-below-1"),
    case("deepml", {"X": np.ones((0, 4, 4)), "y": np.ones((0, 2))}, ValueError, "X", "empty"),
    case("deepml", {"kernel_size": 5}, ValueError, "kernel_size", "kernel-too-big"),
    case("deepml", {"kernel_size": 0}, ValueError, "kernel_size", "kernel-size-0"),
    case("deepml", {"num_filters": 0}, ValueError, "num_filters", "zero-filters"),
    # sizes no machine holds: refused by name before anything is allocated or drawn
    case("deepml", {"num_filters": 10**12}, ValueError, "num_filters", "deepml-filters-huge"),
    *bad_common_array("deepml", "X", np.ones((2, 4, 4))),
    *bad_common_array("deepml", "y", np.eye(2)),
    *bad_epochs_and_rate("deepml", "learning_rate"),
]


@pytest.mark.parametrize("function, overrides, exc, name", CASES)
def test_bad_input_is_refused_naming_the_argument(function, overrides, exc, name):
    with pytest.raises(exc) as info:
        call(function, **overrides)
    assert name in str(info.value), f"message does not name {name!r}: {info.value}"


@pytest.mark.parametrize("function", list(VALID))
def test_the_valid_calls_of_the_table_are_accepted(function):
    call(function)  # the base of every row above is valid: each row changes one thing


@pytest.mark.parametrize(
    "function, overrides",
    [
        ("conv2d_forward", {"x": np.ones((2, 1, 5, 5), dtype=np.int64)}),
        ("conv2d_forward", {"x": np.ones((2, 1, 5, 5), dtype=bool)}),
        ("conv2d_forward", {"kernel": np.ones((3, 1, 7, 7)), "pad": 1}),  # fits once padded
        ("conv2d_forward", {"stride": np.int64(2)}),
        ("train_cnn", {"X": x_img(N=4).tolist(), "y": [1, 2, 3, 4]}),
        ("train_cnn", {"y": np.arange(4).reshape(4, 1)}),
        ("train_cnn", {"epochs": np.int32(1), "lr": np.float32(0.01)}),
        ("deepml", {"y": np.array([[0.25, 0.75], [0.5, 0.5]])}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_unusual_but_valid_input_is_accepted(function, overrides):
    call(function, **overrides)


# --- property: whatever the (bad) geometry, only ValueError/TypeError escape ----------------

dims = st.lists(st.integers(0, 4), min_size=0, max_size=5)
scalars = st.one_of(
    st.integers(-2, 4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["1", "x", b"2"]),
)


@given(dims, dims, dims, dims, scalars, scalars)
def test_random_bad_geometry_only_ever_raises_value_or_type_errors(
    x_shape, kernel_shape, bias_shape, dout_shape, stride, pad
):
    x, kernel = np.ones(x_shape), np.ones(kernel_shape)
    bias, dout = np.zeros(bias_shape), np.ones(dout_shape)
    try:
        out = tinycnn.conv2d_forward(x, kernel, bias, stride=stride, pad=pad)
    except (ValueError, TypeError):
        pass
    else:  # accepted: then the call was valid, and the result has the documented shape
        k = kernel.shape[2]
        out_h = (x.shape[2] + 2 * pad - k) // stride + 1
        out_w = (x.shape[3] + 2 * pad - k) // stride + 1
        assert out.shape == (x.shape[0], kernel.shape[0], out_h, out_w)
    try:
        dx, dkernel, dbias = tinycnn.conv2d_backward(dout, x, kernel, stride=stride, pad=pad)
    except (ValueError, TypeError):
        pass
    else:
        assert dx.shape == x.shape and dkernel.shape == kernel.shape
        assert dbias.shape == (kernel.shape[0],)


def test_a_network_larger_than_memory_is_refused_before_the_random_state_moves(monkeypatch):
    """The size check compares parameters plus one sample's windows and activations with the
    machine's memory (here pretended to be 200 KiB), and draws nothing when it refuses."""
    from tinycnn import network

    monkeypatch.setattr(network, "_memory_bytes", lambda: 200 << 10)
    # 8 filters of 3x3 on 40x40 images, 1 output: kernel, biases and W_fc (8*38*38, 1), plus
    # one sample's windows, row of ones and activations, and its output (padded to 8 columns)
    X, y = np.ones((2, 1, 40, 40)), np.ones(2)
    n_params = 8 * 9 + 8 + 8 * 38 * 38 + 1
    per_sample = (9 + 1 + 8) * 38 * 38 + 8
    assert (n_params + per_sample) * 8 > 200 << 10 > (n_params + per_sample) * 4
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    with pytest.raises(
        ValueError,
        match=r"n_filters=8, kernel_size=3, .*: 294\.0 KiB in float64, .* 200\.0 KiB of memory",
    ):
        tinycnn.train_cnn(X, y, 1, 0.01, n_filters=8)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    tinycnn.train_cnn(X, y, 1, 0.01, n_filters=8, dtype=np.float32)  # half the bytes: fits
