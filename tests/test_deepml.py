"""tinycnn.deepml: the deep-ml #130 published example, exact to its printed digits; more filters,
kernel sizes and soft labels against a per-sample restatement; the layout conversion."""

import numpy as np
import pytest
from conftest import assert_close, uniform
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.deepml import _from_engine, _to_engine, train_simple_cnn_with_backprop

PUBLISHED = (
    "(array([[[ 0.00501739],        [-0.00128214],        [ 0.00662764]],       "
    "[[ 0.01543131],        [-0.00209028],        [-0.00203986]],       "
    "[[ 0.01614389],        [ 0.00807636],        [-0.00424248]]]), array([5.02517066e-05]), "
    "array([[ 0.00635715, -0.00556573]]), array([ 0.00499531, -0.00499531]))"
)


def test_deepml_published_example_prints_exactly():
    np.random.seed(42)
    result = train_simple_cnn_with_backprop(
        np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]), np.array([[1, 0]]), 1, 0.01, 3, 1
    )
    assert str(result).replace("\n", "") == PUBLISHED


# --- beyond the published example -------------------------------------------------------------


def deepml_reference(X, y, epochs, learning_rate, kernel_size=3, num_filters=1):
    """The deep-ml contract restated sample by sample in deep-ml's own layout (kernel (k, k, F),
    flatten order (H', W', F)), windows built explicitly and contracted with einsum."""
    n, H, W = X.shape
    k, F = kernel_size, num_filters
    out_h, out_w = H - k + 1, W - k + 1
    W_conv = np.random.randn(k, k, F) * 0.01
    b_conv = np.zeros(F)
    W_dense = np.random.randn(out_h * out_w * F, y.shape[1]) * 0.01
    b_dense = np.zeros(y.shape[1])
    for _ in range(epochs):
        for x, target in zip(X.astype(np.float64), y):
            windows = np.array(
                [[x[i : i + k, j : j + k] for j in range(out_w)] for i in range(out_h)]
            )  # (H', W', k, k)
            z = np.einsum("ijab,abf->ijf", windows, W_conv) + b_conv  # (H', W', F)
            hidden = np.maximum(z, 0).reshape(-1)  # flatten in (H', W', F) order
            logits = hidden @ W_dense + b_dense
            p = np.exp(logits - logits.max())
            p /= p.sum()
            dlogits = p - target  # softmax + cross-entropy, one sample
            dW_dense, db_dense = np.outer(hidden, dlogits), dlogits
            dz = (W_dense @ dlogits).reshape(out_h, out_w, F) * (z > 0)
            dW_conv = np.einsum("ijab,ijf->abf", windows, dz)
            db_conv = dz.sum(axis=(0, 1))
            W_conv -= learning_rate * dW_conv
            b_conv -= learning_rate * db_conv
            W_dense -= learning_rate * dW_dense
            b_dense -= learning_rate * db_dense
    return W_conv, b_conv, W_dense, b_dense


@settings(max_examples=25)
@given(
    n=st.integers(1, 4),
    H=st.integers(3, 7),
    W=st.integers(3, 7),
    k=st.integers(1, 3),
    F=st.integers(1, 3),
    K=st.integers(2, 4),
    soft=st.booleans(),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_a_per_sample_restatement_for_filters_kernels_and_soft_labels(
    n, H, W, k, F, K, soft, epochs, seed
):
    rng = np.random.default_rng(seed)
    X = uniform(rng, n, H, W) * 2
    y = rng.dirichlet(np.ones(K), size=n) if soft else np.eye(K)[rng.integers(K, size=n)]
    np.random.seed(seed % 2**31)
    expected = deepml_reference(X, y, epochs, 0.1, k, F)
    expected_state = np.random.get_state()
    np.random.seed(seed % 2**31)
    result = train_simple_cnn_with_backprop(X, y, epochs, 0.1, k, F)
    state = np.random.get_state()
    assert len(result) == 4
    for name, mine, ref in zip(("W_conv", "b_conv", "W_dense", "b_dense"), result, expected):
        assert mine.shape == ref.shape and mine.dtype == np.float64, name
        assert_close(mine, ref, 1e-9, name)
    assert state[0] == expected_state[0] and np.array_equal(state[1], expected_state[1])
    assert state[2:] == expected_state[2:]


def test_layout_conversion_round_trip_and_index_mapping():
    rng = np.random.default_rng(0)
    k, F, out_h, out_w, K = 3, 4, 2, 5, 3
    W_conv, b_conv = uniform(rng, k, k, F), uniform(rng, F)
    W_dense, b_dense = uniform(rng, out_h * out_w * F, K), uniform(rng, K)
    params = _to_engine(W_conv, b_conv, W_dense, b_dense, out_h, out_w)
    assert params.kernel.shape == (F, 1, k, k) and params.W_fc.shape == (F * out_h * out_w, K)
    for f in range(F):
        for a in range(k):
            for b in range(k):
                assert params.kernel[f, 0, a, b] == W_conv[a, b, f]
        for i in range(out_h):
            for j in range(out_w):
                # deep-ml row (i, j, f) of (H', W', F) is the engine's row (f, i, j) of (F, H', W')
                src = (i * out_w + j) * F + f
                dst = (f * out_h + i) * out_w + j
                assert np.array_equal(params.W_fc[dst], W_dense[src])
    back = _from_engine(params, out_h, out_w)
    for original, restored in zip((W_conv, b_conv, W_dense, b_dense), back):
        assert np.array_equal(original, restored)
    # The conversions copy: training the engine's arrays never writes into the caller's.
    params.kernel[...] = 0
    assert W_conv.any()


@pytest.mark.parametrize(
    "y",
    [
        np.array([[1.0, 1.0]]),  # sums to 2
        np.array([[0.5, 0.4]]),  # sums to 0.9
        np.array([[1.5, -0.5]]),  # negative entry, sums to 1
        np.array([[2.0, 0.0]]),  # a class index written as a value
    ],
)
def test_rows_that_are_not_probability_vectors_are_refused(y):
    with pytest.raises(ValueError, match="y"):
        train_simple_cnn_with_backprop(np.ones((1, 3, 3)), y, 1, 0.01)
