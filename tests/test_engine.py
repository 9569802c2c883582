"""The engine (``tinycnn.engine``) against the chain-rule reference over the public ops, and
against itself: any chunk size, windows kept or unfolded per call, first use and every reuse,
full batches and mini-batches; the same inputs give bit-identical results."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_error
from hypothesis import given, settings
from hypothesis import strategies as st
from stacks import (
    assert_bit_identical,
    assert_grads_close,
    assert_same_result,
    copied,
    problem_for,
    reference_loss_and_grads,
    stacks,
)

import tinycnn
from tinycnn import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, Sequential, naive
from tinycnn.engine import Engine, chunk_size_for
from tinycnn.optim import SGD
from tinycnn.training import make_engine, run_epoch, train

STACK = Sequential([Conv2d(3, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(4, 2, stride=1, pad=1),
                    ReLU(), AvgPool2d(2, 1), Flatten(), Dense(5), ReLU(), Dense(3)],
                   (2, 9, 8))  # fmt: skip


def first_layer_window_bytes(net: Sequential, itemsize: int = 8) -> int:
    """Bytes one sample's windows (and row of ones) take in a first conv layer's cache."""
    C, k = net.input_shape[0], net.layers[0].kernel_size
    _, oh, ow = net.shapes[1]
    return (C * k * k + 1) * oh * ow * itemsize


@settings(max_examples=40)
@given(stacks(max_n=9), st.integers(1, 10), st.integers(0, 10))
def test_any_chunk_size_with_windows_kept_or_not_gives_the_references_numbers(
    problem, chunk, cacheable
):
    """``cacheable`` samples' windows fit the cache: none, some chunks, or all of them."""
    net, X, T, params, loss = problem
    expected = reference_loss_and_grads(net, params, X, T, loss)
    cache = cacheable * first_layer_window_bytes(net)
    engine = Engine(net, X.dtype, len(X), fixed_inputs=X, chunk_size=chunk, cache_bytes=cache,
                    processes=1)  # fmt: skip
    first = copied(engine.loss_and_grads(params, X, T, loss))
    assert_same_result(first, expected, 1e-12, f"chunk {chunk}, first call")
    # The second call reads the kept windows: the same numbers, bit for bit.
    assert_bit_identical(engine.loss_and_grads(params, X, T, loss), first, "second call")


@settings(max_examples=25)
@given(stacks(max_n=9), st.integers(1, 4))
def test_a_reused_engine_gives_bit_identical_results_to_a_fresh_one(problem, chunk):
    """Buffers left over from earlier calls (other parameters, other batches) change nothing."""
    net, X, T, params, loss = problem
    engine = Engine(net, X.dtype, len(X), chunk_size=chunk, processes=1)
    other = [p * 1.5 for p in params]
    engine.loss_and_grads(other, X, T, loss)
    engine.loss_and_grads(params, X[: max(1, len(X) // 2)], T[: max(1, len(X) // 2)], loss)
    fresh = Engine(net, X.dtype, len(X), chunk_size=chunk, processes=1)
    assert_bit_identical(engine.loss_and_grads(params, X, T, loss),
                         fresh.loss_and_grads(params, X, T, loss), "reused")  # fmt: skip
    assert_bit_identical((0.0, [engine.forward(params, X)]), (0.0, [fresh.forward(params, X)]))


def test_chunk_boundaries_anywhere_give_the_same_result():
    X, T, params = problem_for(STACK, 7, seed=1)
    expected = reference_loss_and_grads(STACK, params, X, T, "softmax_cross_entropy")
    for chunk in range(1, 9):
        engine = Engine(STACK, X.dtype, 7, chunk_size=chunk, processes=1)
        result = engine.loss_and_grads(params, X, T, "softmax_cross_entropy")
        assert_same_result(result, expected, 1e-12, f"chunk {chunk}")
        out = engine.forward(params, X)
        assert rel_error(out, STACK.forward(params, X)) <= 1e-14


def test_a_fixed_input_engine_given_another_x_unfolds_that_x():
    X, T, params = problem_for(STACK, 6, seed=2)
    other = X[::-1].copy()
    engine = Engine(STACK, X.dtype, 6, fixed_inputs=X, chunk_size=2, processes=1)
    engine.loss_and_grads(params, X, T)
    assert_same_result(
        engine.loss_and_grads(params, other, T),
        reference_loss_and_grads(STACK, params, other, T, "mse"),
        1e-12,
        "other",
    )
    # fmt: skip


def test_the_engine_refuses_inputs_it_was_not_built_for():
    X, T, params = problem_for(STACK, 5, seed=3)
    engine = Engine(STACK, np.float64, 4)
    with pytest.raises(ValueError, match="1 to 4 samples"):
        engine.loss_and_grads(params, X, T)
    with pytest.raises(ValueError, match="1 to 4 samples"):
        engine.loss_and_grads(params, X[:0], T[:0])
    with pytest.raises(ValueError, match="float64"):
        engine.loss_and_grads(params, X[:4].astype(np.float32), T[:4])


def test_chunks_are_a_fixed_function_of_the_shapes():
    net = Sequential([Conv2d(16, 5), ReLU(), Flatten(), Dense(10)], (1, 28, 28))
    big = Engine(net, np.float32, 10_000)
    assert big.chunk == Engine(net, np.float32, 10_000).chunk == 64  # the floor
    assert Engine(net, np.float32, 5).chunk == 5
    digits = Sequential([Conv2d(8, 3), ReLU(), Flatten(), Dense(10)], (1, 8, 8))
    # windows 10*36, activations 8*36, the dense output padded to 16 columns, 2*10 for the loss
    assert Engine(digits, np.float64, 5000).chunk == chunk_size_for((10 + 8) * 36 + 16 + 20)
    assert chunk_size_for(1 << 30) == 1 and chunk_size_for(1 << 20) == 8


@pytest.mark.parametrize("batch_size", [None, 1, 3, 4])
@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_train_follows_the_reference_step_by_step(batch_size, loss):
    X, T, start = problem_for(STACK, 7, seed=4)
    mine = [p.copy() for p in start]
    history = train(STACK, mine, X, T, SGD(0.05, momentum=0.9), 4, loss=loss,
                    batch_size=batch_size, rng=np.random.default_rng(5))  # fmt: skip
    expected, opt = [p.copy() for p in start], SGD(0.05, momentum=0.9)
    rng = np.random.default_rng(5)
    losses = []
    for _ in range(4):
        size = batch_size or len(X)
        order = rng.permutation(len(X)) if size < len(X) else np.arange(len(X))
        total = 0.0
        for s in range(0, len(X), size):
            idx = order[s : s + size]
            value, grads = reference_loss_and_grads(STACK, expected, X[idx], T[idx], loss)
            opt.step(expected, grads)
            total += value * len(idx)
        losses.append(total / len(X))
    np.testing.assert_allclose(history.loss_curve, losses, rtol=1e-12)
    for a, b in zip(mine, expected):
        assert rel_error(a, b) <= 1e-12


def test_an_engine_kept_across_train_calls_continues_bit_for_bit():
    X, T, start = problem_for(STACK, 20, seed=6)
    once = [p.copy() for p in start]
    train(STACK, once, X, T, SGD(0.01), 6)
    twice, opt = [p.copy() for p in start], SGD(0.01)
    engine = make_engine(STACK, X.dtype, X)
    history = train(STACK, twice, X, T, opt, 2, engine=engine)
    train(STACK, twice, X, T, opt, 4, engine=engine, history=history)
    for a, b in zip(once, twice):
        np.testing.assert_array_equal(a, b)


def test_train_with_x_of_another_dtype_uses_the_parameters_dtype():
    X, T, start = problem_for(STACK, 5, seed=7)
    p32 = [p.astype(np.float32) for p in start]
    fast, plain = [p.copy() for p in p32], [p.copy() for p in p32]
    train(STACK, fast, X, T, SGD(0.01), 2)  # X float64, parameters float32
    X32 = X.astype(np.float32)
    engine, opt = Engine(STACK, np.float32, 5), SGD(0.01)
    for epoch in (1, 2):
        run_epoch(plain, engine, X32, T, opt, epoch)
    for a, b in zip(fast, plain):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_same_inputs_give_bit_identical_training():
    rng = np.random.default_rng(6)
    X, y = rng.uniform(0, 1, (300, 1, 8, 8)), rng.uniform(0, 1, (300, 3))
    results = []
    for dtype in (np.float64, np.float64, np.float32, np.float32):
        np.random.seed(0)
        results.append(tinycnn.train_cnn(X, y, 5, 0.05, n_filters=4, dtype=dtype))
    for same in (results[:2], results[2:]):
        for a, b in zip(*same):
            np.testing.assert_array_equal(a, b)


@settings(max_examples=20)
@given(
    st.integers(1, 6),
    st.integers(1, 2),
    st.integers(3, 7),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 1),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
)
def test_train_cnn_equals_the_plain_loop_trainer(N, C, size, F, k, stride, pad, O, seed):
    rng = np.random.default_rng(seed)
    X, y = rng.uniform(0, 1, (N, C, size, size + 1)), rng.uniform(-1, 1, (N, O))
    args = dict(n_filters=F, kernel_size=k, stride=stride, pad=pad)
    np.random.seed(seed % 2**31)
    fast = tinycnn.train_cnn(X, y, 3, 0.05, **args)
    np.random.seed(seed % 2**31)
    slow = naive.train_cnn(X, y, 3, 0.05, F, k, stride, pad)
    for a, b in zip(fast[:4], slow[:4]):
        assert rel_error(a, b) <= 1e-9
    assert abs(fast[4] - slow[4]) <= 1e-9 * abs(slow[4])


def test_parameters_in_any_memory_layout_give_the_same_gradients():
    """Parameters may arrive as Fortran-ordered or transposed views (weights taken from another
    library): the engine copies them into its own layouts."""
    X, T, params = problem_for(STACK, 4, seed=8)
    expected = STACK.loss_and_grads(params, X, T)
    odd = [np.asfortranarray(p) if p.ndim == 4 else np.ascontiguousarray(p.T).T for p in params]
    assert not odd[0].flags.c_contiguous and not odd[4].flags.c_contiguous
    assert_bit_identical(STACK.loss_and_grads(odd, X, T), expected, "odd layouts")


def test_a_relu_before_a_max_pool_runs_after_it():
    from tinycnn.engine import build_runners, run_order

    shape = (1, 8, 8)
    cases = [
        ([Conv2d(2, 3), ReLU(), MaxPool2d(2), Flatten(), Dense(2)], [0, 2, 1, 3, 4]),
        ([ReLU(), MaxPool2d(2), Conv2d(1, 2), Flatten()], [1, 0, 2, 3]),
        ([ReLU(), ReLU(), MaxPool2d(2), MaxPool2d(2), Flatten()], [0, 2, 3, 1, 4]),
        ([ReLU(), AvgPool2d(2), MaxPool2d(2), ReLU(), Flatten()], [0, 1, 2, 3, 4]),  # average
    ]
    for layers, expected in cases:
        net = Sequential(layers, shape)
        assert run_order(net) == expected, layers
        runners = build_runners(net, np.dtype(np.float64))
        assert [r.index for r in runners] == expected
        assert runners[-1].out_shape == net.output_shape


TIED_STACKS = [
    [Conv2d(3, 3, pad=1), ReLU(), MaxPool2d(2), Flatten(), Dense(3)],
    [ReLU(), MaxPool2d(2), Conv2d(2, 2), ReLU(), Flatten(), Dense(3)],
    [Conv2d(2, 1), ReLU(), ReLU(), MaxPool2d(3, 1), MaxPool2d(2), Flatten(), Dense(3)],
    [Conv2d(2, 3, pad=1), ReLU(), MaxPool2d(3, 2), Conv2d(2, 1), Flatten(), Dense(3)],
]


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("layers", TIED_STACKS, ids=range(len(TIED_STACKS)))
def test_pooling_before_the_relu_gives_the_numbers_of_the_stacks_order(monkeypatch, layers,
                                                                         with_nan):  # fmt: skip
    """Inputs and weights of a few small integers make ties (and exact zeros) in every window;
    moving the ReLU after the max pool changes no number of the outputs or gradients."""
    import tinycnn.engine as engine_module

    net = Sequential(layers, (2, 7, 7))
    rng = np.random.default_rng(4)
    X = rng.integers(-2, 3, size=(6, *net.input_shape)).astype(np.float64)
    if with_nan:
        X[1, 0, 2, 3] = np.nan
    T = rng.random((6, 3))
    params = [rng.integers(-1, 2, size=s).astype(np.float64) for s in net.param_shapes]
    assert engine_module.run_order(net) != list(range(len(layers)))
    results = {}
    for moved in (True, False):
        if not moved:
            monkeypatch.setattr(engine_module, "run_order", lambda n: list(range(len(n.layers))))
        engine = Engine(net, X.dtype, len(X), processes=1)
        outputs = engine.forward(params, X)
        results[moved] = (outputs, *copied(engine.loss_and_grads(params, X, T, "mse")))
    moved, in_order = results[True], results[False]
    np.testing.assert_array_equal(moved[0], in_order[0])  # outputs
    np.testing.assert_array_equal(moved[1], in_order[1])  # loss (NaN equals NaN here)
    for g, e in zip(moved[2], in_order[2], strict=True):
        np.testing.assert_array_equal(g, e)
    assert np.isnan(moved[0]).any() == with_nan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_backward_paths_and_blocks_give_the_engine_the_same_bits(monkeypatch, dtype):
    """The max-pool backward gathers its taps or goes tap by tap (``ops.pool._gathers``), in
    blocks of window rows: forced either way, in blocks of one window row or the default, the
    engine's gradients are the same bits, on inputs and weights full of ties; pools that tile
    with a partial edge (13 -> 6) and that leave gaps (stride 3), 8 and 9 channels, chunks of
    3 + 3 + 1 samples (the last one smaller than the scratch planned for 3)."""
    from tinycnn.ops import pool

    net = Sequential([Conv2d(8, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(9, 2), MaxPool2d(2, 3),
                      Flatten(), Dense(3)], (2, 13, 13))  # fmt: skip
    rng = np.random.default_rng(5)
    X = rng.integers(-2, 3, size=(7, *net.input_shape)).astype(dtype)
    T = rng.random((7, 3)).astype(dtype)
    params = [rng.integers(-1, 2, size=s).astype(dtype) for s in net.param_shapes]

    def run():
        engine = Engine(net, np.dtype(dtype), len(X), chunk_size=3, processes=1)
        return copied(engine.loss_and_grads(params, X, T, "mse"))

    default = run()
    as64 = [p.astype(np.float64) for p in params]
    _, expected = reference_loss_and_grads(net, as64, X.astype(np.float64), T, "mse")
    assert_grads_close(default[1], expected, 1e-5 if dtype == np.float32 else 1e-12, "default")
    for gathers in (True, False):
        for block_bytes in (1, pool._BLOCK_BYTES):
            with monkeypatch.context() as patch:
                patch.setattr(pool, "_gathers", lambda x, gathers=gathers: gathers)
                patch.setattr(pool, "_BLOCK_BYTES", block_bytes)
                assert_bit_identical(run(), default, f"gathers {gathers}, blocks {block_bytes}")


def test_relu_gradient_is_zero_where_a_window_sees_only_padding():
    # k = 1 and pad = 1: the border outputs read only padding, so there z = bias = 0 exactly,
    # and ReLU must pass no gradient (x > 0, as the seed and PyTorch).
    net = Sequential([Conv2d(2, 1, pad=1), ReLU(), Flatten(), Dense(2)], (1, 4, 4))
    X, T, params = problem_for(net, 3, seed=9)
    params[1][...] = 0
    _, grads = net.loss_and_grads(params, X, T)
    _, expected = reference_loss_and_grads(net, params, X, T, "mse")
    for g, e in zip(grads, expected):
        assert rel_error(g, e) <= 1e-13


@pytest.mark.parametrize("flat_input", [False, True], ids=["after channels-last images", "flat"])
def test_wide_dense_layers_transpose_their_weights_in_blocks_to_the_same_numbers(flat_input):
    """Dense layers of at least TRANSPOSE_BLOCK units copy W.T and dW.T in blocks of rows (a
    row count that is not a multiple of the block included): still the reference's numbers."""
    from tinycnn.layers import TRANSPOSE_BLOCK

    units = TRANSPOSE_BLOCK + 6
    if flat_input:
        net = Sequential([Flatten(), Dense(units), ReLU(), Dense(units + 1)], (1, 10, 13))
    else:  # 5 x 6 x 5 channels-last features: 150 rows of W, reordered
        net = Sequential([Conv2d(5, 3), ReLU(), Flatten(), Dense(units), ReLU(), Dense(3)],
                         (2, 7, 8))  # fmt: skip
    X, T, params = problem_for(net, 7, seed=3)
    expected = reference_loss_and_grads(net, params, X, T, "softmax_cross_entropy")
    engine = Engine(net, X.dtype, len(X), processes=1)
    got = engine.loss_and_grads(params, X, T, "softmax_cross_entropy")
    assert_same_result(got, expected, 1e-12, "wide dense layers")
    np.testing.assert_array_equal(engine.forward(params, X), tinycnn.Sequential(
        net.layers, net.input_shape).forward(params, X))


def test_copy_transposed_equals_a_plain_transpose_for_any_shape_and_strides():
    from tinycnn.layers import TRANSPOSE_BLOCK, copy_transposed

    rng = np.random.default_rng(0)
    for rows, cols in [(3, 5), (TRANSPOSE_BLOCK * 2 + 7, TRANSPOSE_BLOCK + 1), (200, 64)]:
        src = rng.random((rows, cols + 3))[:, :cols]  # a column slice, as the padded W is
        dst = np.full((cols, rows), np.nan)
        assert copy_transposed(dst, src) is dst
        np.testing.assert_array_equal(dst, src.T)


def test_full_batch_training_keeps_the_windows_of_a_small_set_only():
    """Keeping a fixed X's windows costs page faults in the first call: a digits-sized set
    keeps all of them, a set of CIFAR-sized images at most engine.CACHE_BYTES of them."""
    net = Sequential([Conv2d(8, 3), ReLU(), Flatten(), Dense(10)], (1, 8, 8))
    digits = make_engine(net, np.float32, np.zeros((1797, 1, 8, 8), np.float32))
    conv = digits.runners[0]
    assert conv.n_kept_chunks == -(-1797 // digits.chunk)
    net = Sequential([Conv2d(16, 3), ReLU(), Flatten(), Dense(10)], (3, 32, 32))
    cifar = make_engine(net, np.float32, np.zeros((2000, 3, 32, 32), np.float32))
    conv = cifar.runners[0]
    kept_bytes = conv.n_kept_chunks * conv.R * conv.P * cifar.chunk * 4
    all_bytes = conv.R * conv.P * 2000 * 4
    assert 0 < kept_bytes <= 32 << 20 < all_bytes
    digits.close()
    cifar.close()
