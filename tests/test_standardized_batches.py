"""Mini-batch training standardises each batch as it is drawn: no standardised copy of the
whole training set is made, and the numbers the network sees are those of such a copy, bit for
bit (classifier and regressor, float32 and float64, early stopping, warm starts)."""

from __future__ import annotations

import copy
import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from tinycnn import CNNClassifier, CNNRegressor
from tinycnn.estimators import _base
from tinycnn.layers import Conv2d, ReLU

LAYERS = (Conv2d(2, 3), ReLU())


def data(n, seed=0, shape=(2, 6, 6)):
    """Images far from standardised (mean 3, std 2; the channels apart), labels and targets."""
    rng = np.random.default_rng(seed)
    X = rng.normal(3.0, 2.0, size=(n, *shape)) * np.arange(1, shape[0] + 1)[:, None, None]
    score = X[:, 0, 1:4, 1:4].sum(axis=(1, 2))
    return X, (score > np.median(score)).astype(int), np.c_[score, -score] / 10


def standardised(X, est, dtype):
    """``X`` standardised whole, as ``fit`` did before (float64, then the estimator's dtype)."""
    mean, std = est.input_mean_[None, :, None, None], est.input_std_[None, :, None, None]
    return ((X.astype(np.float64) - mean) / std).astype(dtype)


class WholeCopy:
    """What ``fit`` trained on before: all of the (already standardised) training part in one
    array, batches taken from it (stands in for the estimators' per-batch source)."""

    def __init__(self, est, images, rows, dtype):
        whole = images.astype(dtype)
        self.X = whole if rows is None else whole[rows]
        self.shape = self.X.shape

    def __getitem__(self, idx):
        return self.X[idx]


def clone_fitted(est):
    """An independent copy (a warm start then leaves the original alone)."""
    return copy.deepcopy(est)


def quiet_fit(est, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kwargs)


@pytest.mark.parametrize("Est", [CNNClassifier, CNNRegressor])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_size", [16, 1000])
def test_training_sees_the_numbers_of_a_whole_standardised_copy(
    Est, dtype, batch_size, monkeypatch
):
    X, labels, targets = data(120)
    X2, labels2, targets2 = data(90, seed=1)
    y, y2 = (labels, labels2) if Est is CNNClassifier else (targets, targets2)
    X_before, X2_before = X.copy(), X2.copy()
    kwargs = dict(layers=LAYERS, batch_size=batch_size, max_iter=3, dtype=dtype,
                  early_stopping=True, n_iter_no_change=5, random_state=0)  # fmt: skip
    ours = quiet_fit(Est(**kwargs), X, y)
    ours_warm = quiet_fit(clone_fitted(ours).set_params(warm_start=True, max_iter=2), X2, y2)
    # The reference trains on a standardised copy, with standardisation off (0 and 1), and
    # batches taken from one array of the training part.
    monkeypatch.setattr(_base, "_StandardizedRows", WholeCopy)
    ref = quiet_fit(Est(**kwargs, standardize=False), standardised(X, ours, dtype), y)
    ref_warm = quiet_fit(
        clone_fitted(ref).set_params(warm_start=True, max_iter=2), standardised(X2, ours, dtype), y2
    )
    for a, b in ((ours, ref), (ours_warm, ref_warm)):
        assert a.loss_curve_ == b.loss_curve_
        assert a.validation_scores_ == b.validation_scores_ and len(a.validation_scores_) >= 2
        for p, q in zip(a.params_, b.params_):
            assert p.dtype == dtype and np.array_equal(p, q)
    # the user's arrays are never written to
    assert np.array_equal(X, X_before) and np.array_equal(X2, X2_before)


def peak_bytes(step) -> int:
    """The largest memory (bytes, as tracemalloc sees NumPy's arrays) in use during ``step()``
    beyond what was in use before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        step()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_mini_batch_training_makes_no_standardised_copy_of_the_training_set():
    X, labels, _ = data(6000, shape=(1, 16, 16))
    X = X.astype(np.float32)  # 6 MiB; standardised in float64: 12 MiB
    copy_bytes = X.shape[0] * 16 * 16 * 8
    kwargs = dict(layers=LAYERS, batch_size=200, dtype=np.float64, random_state=0)
    # learns the standardisation on a few samples; and a state to resume from
    est = quiet_fit(CNNClassifier(**kwargs, max_iter=1), X[:300], labels[:300])
    states = []
    quiet_fit(CNNClassifier(**kwargs, max_iter=2), X[:300], labels[:300],
              callback=lambda e, s: states.append(s))  # fmt: skip
    steps = {
        "warm start": lambda: quiet_fit(est.set_params(warm_start=True), X, labels),
        "partial_fit": lambda: est.partial_fit(X, labels),
        "early stopping": lambda: quiet_fit(est.set_params(early_stopping=True), X, labels),
        "resume": lambda: quiet_fit(
            CNNClassifier(**kwargs, max_iter=2), X, labels, resume=states[0]
        ),
    }
    for name, step in steps.items():
        # one standardised copy takes copy_bytes; a batch, its float64 scratch, the engine's
        # buffers and, with early stopping, the validation part (10%) and its forward pass less
        assert peak_bytes(step) < copy_bytes / 2, name


def test_a_fresh_fit_learns_the_standardisation_without_a_float64_copy_of_x():
    """The channel statistics are summed block by block: a fresh fit (which learns them) peaks
    below the float64 copy of X that ``np.std`` would make."""
    X, labels, _ = data(12000, shape=(1, 16, 16))
    X = X.astype(np.float32)
    copy_bytes = X.shape[0] * 16 * 16 * 8  # 24 MiB; a block of the sums' scratch: 8 MiB
    est = CNNClassifier(layers=LAYERS, batch_size=200, max_iter=1, random_state=0,
                        dtype=np.float32)  # fmt: skip
    assert peak_bytes(lambda: quiet_fit(est, X, labels)) < copy_bytes / 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (7, 3, 5, 4), (6000, 1, 16, 16), (900, 3, 9, 9)])
def test_the_blockwise_std_is_numpys_up_to_the_order_of_sums(shape, dtype):
    rng = np.random.default_rng(1)
    images = (rng.normal(3.0, 2.0, size=shape) * np.arange(1, shape[1] + 1)[:, None, None])
    images = images.astype(dtype)
    mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_allclose(
        _base._blockwise_std(images, mean), images.std(axis=(0, 2, 3), dtype=np.float64),
        rtol=1e-14, atol=0,
    )  # fmt: skip
