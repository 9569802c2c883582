"""tinycnn.seed: train_cnn and predict_cnn against an independent restatement of the seed's rules
(SEED.md), against PyTorch's SGD for the keyword extensions, and against the naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, uniform
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn import naive

# ---------------------------------------------------------------------------------------------
# The oracle: the seed's rules (SEED.md's list of what train_cnn must keep), restated here
# independently of both the engine and the seed's loops: the windows are gathered once by fancy
# indexing and every product is an einsum, so no code path is shared with tinycnn.
# ---------------------------------------------------------------------------------------------


def seed_train_cnn(X, y, epochs=100, lr=0.01):
    """One 3x3 filter, stride 1, no padding, ReLU, flatten in (F, H', W') order, dense; MSE over
    all N*O entries; full-batch gradient descent; draws kernel then W_fc (randn * 0.1) from the
    global state; returns the loss of the last forward pass (before the last update)."""
    X = np.asarray(X, dtype=np.float64)
    N, C, H, W = X.shape
    O = y.shape[1] if y.ndim > 1 else 1
    target = np.asarray(y, dtype=np.float64).reshape(N, O)
    kernel = np.random.randn(1, C, 3, 3) * 0.1
    bias_conv = np.zeros(1)
    out_h, out_w = H - 2, W - 2
    W_fc = np.random.randn(out_h * out_w, O) * 0.1
    b_fc = np.zeros(O)
    # windows[n, c, i, j, a, b] = X[n, c, i + a, j + b]
    rows = np.arange(out_h)[:, None, None, None] + np.arange(3)[None, None, :, None]
    cols = np.arange(out_w)[None, :, None, None] + np.arange(3)[None, None, None, :]
    windows = X[:, :, rows, cols]  # (N, C, out_h, out_w, 3, 3)
    loss = None
    for _ in range(epochs):
        z = np.einsum("ncijab,fcab->nfij", windows, kernel) + bias_conv[None, :, None, None]
        active = z > 0
        flat = np.where(active, z, 0.0).reshape(N, -1)
        err = np.einsum("nd,do->no", flat, W_fc) + b_fc - target
        loss = np.mean(err**2)
        d_out = 2.0 * err / (N * O)
        dW_fc = np.einsum("nd,no->do", flat, d_out)
        db_fc = d_out.sum(axis=0)
        dz = np.einsum("no,do->nd", d_out, W_fc).reshape(z.shape) * active
        d_kernel = np.einsum("nfij,ncijab->fcab", dz, windows)
        d_bias = dz.sum(axis=(0, 2, 3))
        kernel = kernel - lr * d_kernel
        bias_conv = bias_conv - lr * d_bias
        W_fc = W_fc - lr * dW_fc
        b_fc = b_fc - lr * db_fc
    return kernel, bias_conv, W_fc, b_fc, loss


# ---------------------------------------------------------------------------------------------

NAMES = ("kernel", "bias_conv", "W_fc", "b_fc", "loss")


def run_seeded(train, seed, *args, **kwargs):
    """``train(*args, **kwargs)`` after ``np.random.seed(seed)``; returns its result and the
    global random state it leaves behind."""
    np.random.seed(seed)
    result = train(*args, **kwargs)
    return result, np.random.get_state()


def assert_same_random_state(a, b):
    # ('MT19937', key array, position, has_gauss, cached_gaussian): randn caches half a pair.
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def assert_same_result(mine, expected, tol):
    assert len(mine) == 5
    for name, m, e in zip(NAMES[:4], mine, expected):
        assert np.shape(m) == np.shape(e), name
        assert_close(m, e, tol, name)
    # The loss is a mean of squared residuals r; each residual carries rounding of about
    # eps * |output| (outputs here are of order 1) whatever the order of the sums, so the loss
    # carries about 2 * |r| * eps = 2 * sqrt(loss) * eps. Near a perfect fit (loss 1e-13,
    # found by hypothesis) that, not tol, is what two correct implementations can agree to.
    loss, expected_loss = mine[4], expected[4]
    allowed = tol * abs(expected_loss) + 8 * np.finfo(np.float64).eps * np.sqrt(abs(expected_loss))
    assert abs(loss - expected_loss) <= allowed, f"loss {loss!r} vs {expected_loss!r}"


@st.composite
def seed_problems(draw):
    N = draw(st.integers(1, 4))
    C = draw(st.integers(1, 3))
    H, W = draw(st.integers(3, 7)), draw(st.integers(3, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = uniform(rng, N, C, H, W)
    O = draw(st.sampled_from([None, 1, 2, 3]))  # None: y is 1-D
    y = uniform(rng, N) if O is None else uniform(rng, N, O)
    epochs = draw(st.integers(1, 8))
    lr = draw(st.floats(1e-3, 0.1))
    return X, y, epochs, lr, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=40)
@given(seed_problems())
@example((np.ones((1, 1, 3, 3)), np.array([1.0]), 1, 0.01, 0))  # one sample, one window
def test_train_cnn_matches_the_seed_and_its_random_draws(problem):
    X, y, epochs, lr, seed = problem
    with np.errstate(all="ignore"):
        expected, expected_state = run_seeded(seed_train_cnn, seed, X, y, epochs, lr)
    assume(all(np.isfinite(v).all() for v in expected))  # parity is for finite training
    mine, state = run_seeded(tinycnn.train_cnn, seed, X, y, epochs, lr)
    assert_same_result(mine, expected, 1e-9)
    assert isinstance(mine[4], float)
    assert all(v.dtype == np.float64 for v in mine[:4])
    assert_same_random_state(state, expected_state)


def test_train_cnn_default_arguments_are_the_seeds():
    rng = np.random.default_rng(1)
    X, y = uniform(rng, 3, 2, 5, 5), uniform(rng, 3, 2)
    expected, expected_state = run_seeded(seed_train_cnn, 9, X, y)  # epochs=100, lr=0.01
    mine, state = run_seeded(tinycnn.train_cnn, 9, X, y)
    assert_same_result(mine, expected, 1e-9)
    assert_same_random_state(state, expected_state)


@settings(max_examples=15)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_integer_data_is_accepted_like_the_seed(seed, two_d):
    rng = np.random.default_rng(seed)
    X = rng.integers(-3, 4, size=(3, 2, 5, 4))
    X[0] = 0  # every window of an all-zero image gives z = bias = 0 exactly: ReLU's gradient 0
    y = rng.integers(0, 3, size=(3, 2) if two_d else 3)
    with np.errstate(all="ignore"):
        expected, _ = run_seeded(seed_train_cnn, seed, X, y, 5, 0.001)
    assume(all(np.isfinite(v).all() for v in expected))
    mine, _ = run_seeded(tinycnn.train_cnn, seed, X, y, 5, 0.001)
    assert_same_result(mine, expected, 1e-9)


def test_float32_option_gives_float32_close_to_float64_with_the_same_draws():
    rng = np.random.default_rng(2)
    X, y = uniform(rng, 5, 2, 6, 6), uniform(rng, 5, 2)
    r64, s64 = run_seeded(tinycnn.train_cnn, 4, X, y, 10, 0.01)
    r32, s32 = run_seeded(tinycnn.train_cnn, 4, X, y, 10, 0.01, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in r32[:4])
    assert_same_result(r32, r64, 1e-4)
    assert_same_random_state(s32, s64)


@st.composite
def extension_problems(draw, max_side=6):
    k = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    stride = draw(st.integers(1, 3))
    smallest = max(1, k - 2 * pad)
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    H = draw(st.integers(smallest, max(smallest, max_side)))
    W = draw(st.integers(smallest, max(smallest, max_side)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = uniform(rng, N, C, H, W)
    y = uniform(rng, N, draw(st.integers(1, 3))) if draw(st.booleans()) else uniform(rng, N)
    extensions = dict(n_filters=draw(st.integers(1, 3)), kernel_size=k, stride=stride, pad=pad)
    return X, y, draw(st.integers(1, 4)), draw(st.floats(1e-3, 0.05)), extensions


@settings(max_examples=20)
@given(extension_problems(max_side=5), st.integers(0, 2**32 - 1))
def test_extensions_match_the_naive_loop_trainer(problem, seed):
    X, y, epochs, lr, ext = problem
    with np.errstate(all="ignore"):
        expected, expected_state = run_seeded(naive.train_cnn, seed, X, y, epochs, lr, **ext)
    assume(all(np.isfinite(v).all() for v in expected))
    mine, state = run_seeded(tinycnn.train_cnn, seed, X, y, epochs, lr, **ext)
    assert_same_result(mine, expected, 1e-9)
    assert_same_random_state(state, expected_state)


def torch_sgd_run(X, y, epochs, lr, ext, kernel, W_fc):
    """The same model in PyTorch (nn.Conv2d, nn.Linear, mse_loss, optim.SGD) from the given initial
    weights; yields (kernel, bias_conv, W_fc, b_fc, loss) after every epoch."""
    N, C = X.shape[:2]
    F_, k = ext["n_filters"], ext["kernel_size"]
    conv = torch.nn.Conv2d(C, F_, k, stride=ext["stride"], padding=ext["pad"], dtype=torch.float64)
    dense = torch.nn.Linear(W_fc.shape[0], W_fc.shape[1], dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(kernel))
        conv.bias.zero_()
        dense.weight.copy_(torch.tensor(W_fc.T))
        dense.bias.zero_()
    params = [conv.weight, conv.bias, dense.weight, dense.bias]
    optimizer = torch.optim.SGD(params, lr=lr)
    X_t, T_t = torch.tensor(X), torch.tensor(y.reshape(N, -1))
    for _ in range(epochs):
        optimizer.zero_grad()
        logits = dense(torch.relu(conv(X_t)).flatten(1))  # flatten in C order of (F, H', W')
        loss = F.mse_loss(logits, T_t)
        loss.backward()
        optimizer.step()
        yield (
            conv.weight.detach().numpy().copy(),
            conv.bias.detach().numpy().copy(),
            dense.weight.detach().numpy().T.copy(),
            dense.bias.detach().numpy().copy(),
            loss.item(),
        )


@settings(max_examples=15)
@given(extension_problems(max_side=8), st.integers(0, 2**32 - 1))
def test_training_with_extensions_follows_torch_sgd_epoch_by_epoch(problem, seed):
    X, y, epochs, lr, ext = problem
    epochs += 2
    N, C, H, W = X.shape
    k, s, p = ext["kernel_size"], ext["stride"], ext["pad"]
    n_hidden = ext["n_filters"] * ((H + 2 * p - k) // s + 1) * ((W + 2 * p - k) // s + 1)
    O = y.shape[1] if y.ndim == 2 else 1
    np.random.seed(seed)  # the rule: kernel first, then W_fc, both randn * 0.1
    kernel = np.random.randn(ext["n_filters"], C, k, k) * 0.1
    W_fc = np.random.randn(n_hidden, O) * 0.1
    for epoch, expected in enumerate(torch_sgd_run(X, y, epochs, lr, ext, kernel, W_fc), 1):
        assume(all(np.isfinite(v).all() for v in expected))
        mine, _ = run_seeded(tinycnn.train_cnn, seed, X, y, epoch, lr, **ext)
        assert_same_result(mine, expected, 1e-9)


def test_divergence_raises_naming_the_epoch_and_suggesting_a_smaller_learning_rate():
    rng = np.random.default_rng(3)
    X, y = uniform(rng, 4, 1, 5, 5), uniform(rng, 4)
    with np.errstate(all="ignore"):
        for first_bad in range(1, 30):  # the seed's first epoch with a non-finite loss
            np.random.seed(0)
            if not np.isfinite(seed_train_cnn(X, y, first_bad, 1e4)[4]):
                break
        assert first_bad > 1
        np.random.seed(0)
        with pytest.raises(tinycnn.DivergenceError) as info:
            tinycnn.train_cnn(X, y, epochs=30, lr=1e4)
    error = info.value
    assert isinstance(error, FloatingPointError)
    assert error.epoch == first_bad
    message = str(error)
    assert f"epoch {first_bad}" in message
    assert "smaller learning rate" in message and "lr=10000.0" in message


def test_predict_cnn_is_the_forward_pass_with_the_returned_weights():
    rng = np.random.default_rng(4)
    X, y = uniform(rng, 5, 2, 7, 6), uniform(rng, 5, 3)
    ext = dict(n_filters=3, kernel_size=3, stride=2, pad=1)
    np.random.seed(0)
    kernel, bias_conv, W_fc, b_fc, _ = tinycnn.train_cnn(X, y, 3, 0.05, **ext)
    pred = tinycnn.predict_cnn(X, kernel, bias_conv, W_fc, b_fc, stride=2, pad=1)
    # Independent forward: windows built explicitly, contracted with einsum.
    xpad = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out_h, out_w = (7 + 2 - 3) // 2 + 1, (6 + 2 - 3) // 2 + 1
    windows = np.array(
        [
            [xpad[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] for j in range(out_w)]
            for i in range(out_h)
        ]
    )  # (out_h, out_w, N, C, k, k)
    z = np.einsum("ijncab,fcab->nfij", windows, kernel) + bias_conv[None, :, None, None]
    expected = np.maximum(z, 0).reshape(5, -1) @ W_fc + b_fc
    assert pred.shape == (5, 3)
    assert_close(pred, expected, 1e-12, "predict_cnn")


def test_returned_loss_is_the_loss_before_the_last_update():
    rng = np.random.default_rng(5)
    X, y = uniform(rng, 4, 1, 6, 6), uniform(rng, 4)
    np.random.seed(1)
    *_, loss = tinycnn.train_cnn(X, y, epochs=4)
    np.random.seed(1)
    *weights, _ = tinycnn.train_cnn(X, y, epochs=3)
    pred = tinycnn.predict_cnn(X, *weights)
    assert_close(loss, np.mean((pred - y[:, None]) ** 2), 1e-12, "loss")


def test_predict_cnn_keeps_float32_weights_in_float32():
    rng = np.random.default_rng(6)
    X, y = uniform(rng, 3, 1, 5, 5), uniform(rng, 3)
    np.random.seed(2)
    *weights, _ = tinycnn.train_cnn(X, y, 2, dtype=np.float32)
    assert tinycnn.predict_cnn(X, *weights).dtype == np.float32


def test_the_naive_loop_trainer_is_the_seed_too():
    rng = np.random.default_rng(7)
    X, y = uniform(rng, 2, 2, 5, 4), uniform(rng, 2, 2)
    expected, expected_state = run_seeded(seed_train_cnn, 11, X, y, 3, 0.05)
    mine, state = run_seeded(naive.train_cnn, 11, X, y, 3, 0.05)
    assert_same_result(mine, expected, 1e-12)
    assert_same_random_state(state, expected_state)


def test_train_cnn_refuses_weights_its_last_update_made_non_finite():
    """The last forward pass's loss is finite, but the update after it overflows: the seed would
    return infinite weights silently; train_cnn raises, naming the epoch."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 1, 5, 5)) * 100
    y = rng.standard_normal(4) * 1e10
    np.random.seed(0)
    with pytest.raises(tinycnn.DivergenceError, match="epoch 1: the last update made the weights"):
        tinycnn.train_cnn(X, y, epochs=1, lr=1e306)
