"""The fast training path (``tinycnn.workspace``) against the plain one, and against itself.

The plain ``network.loss_and_grads`` (fresh arrays, the readable reference, itself tested against
torch, the plain loops and finite differences) is the oracle: the workspace must give the same
loss and gradients up to the order of floating-point sums, for every chunk size, with its
windows cached or unfolded chunk by chunk, on its first use and on every reuse; and the same
inputs must give bit-identical results.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import rel_error, uniform
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn import naive
from tinycnn.network import ConvNetParams, ConvNetSpec, init_params_he, loss_and_grads
from tinycnn.optim import SGD
from tinycnn.training import make_workspace, run_epoch, train
from tinycnn.workspace import Workspace

LOSSES = ("mse", "cross_entropy")


@st.composite
def problems(draw, max_n: int = 9):
    """A small network spec (stride and padding included, sizes that don't divide evenly), its
    data, targets and He-initialised parameters, in float64."""
    C = draw(st.integers(1, 3))
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    H = draw(st.integers(max(1, k - 2 * pad), k + 5))
    W = draw(st.integers(max(1, k - 2 * pad), k + 5))
    spec = ConvNetSpec(C, H, W, draw(st.integers(1, 3)), k, stride, pad, draw(st.integers(1, 4)))
    N = draw(st.integers(1, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = uniform(rng, N, C, H, W)
    T = rng.dirichlet(np.ones(spec.n_outputs), size=N)  # valid for both losses
    params = init_params_he(spec, rng)
    return spec, X, T, params


def assert_grads_close(actual, expected, tol: float, what: str) -> None:
    """Each gradient to ``tol`` relative to the largest gradient entry of all: a gradient that
    is a sum cancelling down to almost nothing (a bias gradient under softmax, whose dlogits
    rows sum to 0) carries the rounding of its terms, not of itself."""
    expected = [np.asarray(e) for e in expected]
    scale = max(float(np.max(np.abs(e))) for e in expected)
    for name, a, e in zip(ConvNetParams._fields, actual, expected):
        assert a.shape == e.shape, f"{what}: d{name} has shape {a.shape}, not {e.shape}"
        err = float(np.max(np.abs(a - e)))
        assert err <= tol * scale, (
            f"{what}: d{name} off by {err:.3g} (largest gradient {scale:.3g})"
        )


def assert_same_result(actual, expected, tol: float, what: str) -> None:
    (loss_a, grads_a), (loss_e, grads_e) = actual, expected
    assert abs(loss_a - loss_e) <= tol * abs(loss_e), f"{what}: loss {loss_a} vs {loss_e}"
    assert all(a.dtype == e.dtype for a, e in zip(grads_a, grads_e)), what
    assert_grads_close(grads_a, grads_e, tol, what)


def copied(result):
    loss, grads = result
    return loss, type(grads)(*(g.copy() for g in grads))


def window_bytes(spec: ConvNetSpec, itemsize: int = 8) -> int:
    """Bytes of one sample's unfolded windows (plus the row of ones) in a workspace's cache."""
    return (spec.in_channels * spec.kernel_size**2 + 1) * spec.out_h * spec.out_w * itemsize


@settings(max_examples=40)
@given(problems(), st.sampled_from(LOSSES), st.integers(1, 10), st.integers(0, 10))
def test_workspace_equals_the_plain_path_for_any_chunk_size(problem, loss, chunk, cacheable):
    """``cacheable`` samples' windows fit the cache: none, some chunks, or all of them."""
    spec, X, T, params = problem
    N = X.shape[0]
    expected = loss_and_grads(params, spec, X, T, loss)
    budget = cacheable * window_bytes(spec)
    ws = Workspace(spec, X.dtype, N, fixed_inputs=X, cache_bytes=budget, chunk_size=chunk)
    whole_chunks = N if cacheable >= N else cacheable - cacheable % ws.chunk
    assert ws.n_cached == whole_chunks
    assert_same_result(ws.loss_and_grads(params, X, T, loss), expected, 1e-12, "workspace")


def test_chunk_boundaries_anywhere_give_the_same_result():
    """N = 7 cut into chunks of every size from 1 to 8, some not dividing 7."""
    rng = np.random.default_rng(0)
    spec = ConvNetSpec(2, 6, 5, 3, 3, 1, 1, 2)
    X, T = uniform(rng, 7, 2, 6, 5), uniform(rng, 7, 2)
    params = init_params_he(spec, rng)
    expected = loss_and_grads(params, spec, X, T)
    for chunk in range(1, 9):
        for cache in (0, 1 << 30):
            ws = Workspace(spec, X.dtype, 7, fixed_inputs=X, cache_bytes=cache, chunk_size=chunk)
            assert ws.chunk == min(chunk, 7)
            got = ws.loss_and_grads(params, X, T)
            assert_same_result(got, expected, 1e-12, f"chunk {chunk}, cache {cache}")


@settings(max_examples=25)
@given(problems(max_n=12), st.integers(1, 5))
def test_cached_windows_give_the_results_of_unfolding_per_chunk(problem, chunk):
    """Equal to rounding, not bit for bit: a chunk of cached windows is a strided view (each
    row a slice of a longer one), and BLAS may take another kernel path for it."""
    spec, X, T, params = problem
    kwargs = dict(fixed_inputs=X, chunk_size=chunk)
    cached = Workspace(spec, X.dtype, X.shape[0], cache_bytes=1 << 30, **kwargs)
    streamed = Workspace(spec, X.dtype, X.shape[0], cache_bytes=0, **kwargs)
    assert cached.n_cached == X.shape[0] and streamed.n_cached == 0
    expected = streamed.loss_and_grads(params, X, T)
    assert_same_result(cached.loss_and_grads(params, X, T), expected, 1e-12, "cached")


@settings(max_examples=20)
@given(problems(), st.integers(1, 4), st.sampled_from(LOSSES))
def test_a_reused_workspace_gives_bit_identical_results_to_a_fresh_one(problem, chunk, loss):
    """Buffers left over from earlier calls (other parameters, other batches) change nothing."""
    spec, X, T, params = problem
    N = X.shape[0]
    reused = Workspace(spec, X.dtype, N + 3, chunk_size=chunk)  # sized for bigger batches
    rng = np.random.default_rng(1)
    for _ in range(3):  # other parameters and a batch of another size first
        other = init_params_he(spec, rng)
        Xo, To = uniform(rng, N + 3, *X.shape[1:]), rng.dirichlet(np.ones(T.shape[1]), N + 3)
        reused.loss_and_grads(other, Xo, To, loss)
    first = copied(reused.loss_and_grads(params, X, T, loss))
    again = copied(reused.loss_and_grads(params, X, T, loss))
    fresh = Workspace(spec, X.dtype, N + 3, chunk_size=chunk).loss_and_grads(params, X, T, loss)
    for result in (again, fresh):
        assert result[0] == first[0]
        for a, b in zip(result[1], first[1]):
            np.testing.assert_array_equal(a, b)


def test_a_fixed_input_workspace_given_another_x_unfolds_that_x():
    rng = np.random.default_rng(2)
    spec = ConvNetSpec(1, 5, 5, 2, 3, 1, 0, 2)
    X, X2, T = uniform(rng, 4, 1, 5, 5), uniform(rng, 4, 1, 5, 5), uniform(rng, 4, 2)
    params = init_params_he(spec, rng)
    ws = Workspace(spec, X.dtype, 4, fixed_inputs=X, cache_bytes=1 << 30)
    assert_same_result(
        ws.loss_and_grads(params, X2, T), loss_and_grads(params, spec, X2, T), 1e-12, "other X"
    )


@settings(max_examples=15)
@given(problems(), st.integers(1, 4))
def test_float32_workspace_is_close_to_float64(problem, chunk):
    spec, X, T, params = problem
    expected = loss_and_grads(params, spec, X, T)
    p32 = type(params)(*(p.astype(np.float32) for p in params))
    ws = Workspace(spec, np.float32, X.shape[0], chunk_size=chunk)
    loss, grads = ws.loss_and_grads(p32, X.astype(np.float32), T.astype(np.float32))
    assert all(g.dtype == np.float32 for g in grads)
    assert abs(loss - expected[0]) <= 1e-5 * abs(expected[0])  # a sum of squares: no cancellation
    assert_grads_close(grads, expected[1], 1e-5, "float32")


@settings(max_examples=15)
@given(problems(max_n=5))
def test_workspace_gradients_match_torch_autograd(problem):
    spec, X, T, params = problem
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    z = torch.nn.functional.conv2d(
        torch.tensor(X), tp[0], tp[1], stride=spec.stride, padding=spec.pad
    )
    logits = torch.relu(z).flatten(1) @ tp[2] + tp[3]
    loss = torch.nn.functional.mse_loss(logits, torch.tensor(T))
    loss.backward()
    got_loss, grads = Workspace(spec, X.dtype, X.shape[0], fixed_inputs=X).loss_and_grads(
        params, X, T
    )
    assert abs(got_loss - loss.item()) <= 1e-12 * loss.item()
    assert_grads_close(grads, [t.grad.numpy() for t in tp], 1e-10, "vs torch")


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


def _plain_training(params, spec, X, T, epochs, batch_size, seed, loss):
    """Training through run_epoch without a workspace: the plain path, epoch by epoch."""
    opt, rng = SGD(0.05, momentum=0.9), np.random.default_rng(seed)
    losses = [
        run_epoch(params, spec, X, T, opt, e, loss, batch_size, rng) for e in range(1, epochs + 1)
    ]
    return losses


@pytest.mark.parametrize("batch_size", [None, 1, 3, 4])
@pytest.mark.parametrize("loss", LOSSES)
def test_train_with_its_workspace_follows_the_plain_path(batch_size, loss):
    rng = np.random.default_rng(3)
    spec = ConvNetSpec(2, 6, 6, 2, 3, 2, 1, 3)
    X, T = uniform(rng, 7, 2, 6, 6), rng.dirichlet(np.ones(3), 7)
    start = init_params_he(spec, rng)
    plain = start.copy()
    expected = _plain_training(plain, spec, X, T, 4, batch_size, 5, loss)
    fast = start.copy()
    history = train(
        fast,
        spec,
        X,
        T,
        SGD(0.05, momentum=0.9),
        4,
        loss=loss,
        batch_size=batch_size,
        rng=np.random.default_rng(5),
    )
    np.testing.assert_allclose(history.loss_curve, expected, rtol=1e-12)
    for a, b in zip(fast, plain):
        assert rel_error(a, b) <= 1e-12


def test_a_workspace_kept_across_train_calls_continues_bit_for_bit():
    rng = np.random.default_rng(4)
    spec = ConvNetSpec(1, 8, 8, 3, 3, 1, 0, 2)
    X, T = uniform(rng, 20, 1, 8, 8), uniform(rng, 20, 2)
    start = init_params_he(spec, rng)
    once = start.copy()
    train(once, spec, X, T, SGD(0.01), 6)
    twice, opt = start.copy(), SGD(0.01)
    ws = make_workspace(twice, spec, X)
    history = train(twice, spec, X, T, opt, 2, workspace=ws)
    train(twice, spec, X, T, opt, 4, workspace=ws, history=history)
    for a, b in zip(once, twice):
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


def test_chunks_are_a_fixed_function_of_the_shapes():
    spec = ConvNetSpec(1, 28, 28, 16, 5, 1, 0, 10)
    assert spec.chunk_size() == spec.chunk_size() >= 1
    ws = Workspace(spec, np.float32, 10_000)
    assert ws.chunk == spec.chunk_size()
    assert Workspace(spec, np.float32, 5).chunk == min(5, ws.chunk)


def test_workspace_refuses_inputs_it_was_not_built_for():
    spec = ConvNetSpec(1, 5, 5, 2, 3, 1, 0, 2)
    ws = Workspace(spec, np.float64, 4)
    params = init_params_he(spec, np.random.default_rng(0))
    with pytest.raises(ValueError, match="1 to 4 samples"):
        ws.loss_and_grads(params, np.zeros((5, 1, 5, 5)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="1 to 4 samples"):
        ws.loss_and_grads(params, np.zeros((0, 1, 5, 5)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="float64"):
        ws.loss_and_grads(params, np.zeros((4, 1, 5, 5), np.float32), np.zeros((4, 2)))
    other = ConvNetSpec(1, 5, 5, 3, 3, 1, 0, 2)
    with pytest.raises(ValueError, match="workspace was built for"):
        loss_and_grads(params, other, np.zeros((4, 1, 5, 5)), np.zeros((4, 2)), workspace=ws)


def test_train_with_x_of_another_dtype_than_the_parameters_takes_the_plain_path():
    rng = np.random.default_rng(7)
    spec = ConvNetSpec(1, 6, 6, 2, 3, 1, 0, 2)
    X, T = uniform(rng, 5, 1, 6, 6), uniform(rng, 5, 2)
    start = init_params_he(spec, rng, np.float32)
    fast, plain = start.copy(), start.copy()
    train(fast, spec, X, T, SGD(0.01), 2)  # X float64, parameters float32
    opt = SGD(0.01)
    for epoch in (1, 2):
        run_epoch(plain, spec, X, T, opt, epoch)
    for a, b in zip(fast, plain):
        np.testing.assert_array_equal(a, b)
