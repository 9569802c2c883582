"""The estimators' ``layers``: tuple and string forms, the output layer appended from ``y``,
the shorthand kept, scikit-learn's protocol (clone, get/set_params, pipelines, grid search
over stacks), misfits refused before training, and the public look inside (``layer_outputs``,
``objective``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

from tinycnn import (  # noqa: E402
    AvgPool2d,
    CNNClassifier,
    CNNRegressor,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    ReLU,
)
from tinycnn.network import ConvNetParams  # noqa: E402

STACK = (Conv2d(4, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(6, 3), ReLU())
STACK_TEXT = "conv4k3p1-relu-max2-conv6k3-relu"


def images(n=40, seed=0, shape=(1, 8, 8)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, *shape))
    score = X[:, 0, 2:5, 2:5].sum(axis=(1, 2))
    return X, (score > 0).astype(int), score


def fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def test_the_output_layer_is_appended_after_a_flatten_where_the_stack_ends_in_images():
    X, y, score = images()
    clf = fit(CNNClassifier(layers=STACK, max_iter=2, random_state=0), X, y)
    assert clf.network_.layers == (*STACK, Flatten(), Dense(2))
    assert clf.network_.input_shape == (1, 8, 8)
    assert isinstance(clf.params_, list) and not hasattr(clf, "spec_")
    assert [p.shape for p in clf.params_] == [(4, 1, 3, 3), (4,), (6, 4, 3, 3), (6,),
                                               (6 * 2 * 2, 2), (2,)]  # fmt: skip
    flat = (Conv2d(2, 3), ReLU(), Flatten(), Dense(5), ReLU())
    reg = fit(CNNRegressor(layers=flat, max_iter=2, random_state=0), X, np.c_[score, -score])
    assert reg.network_.layers == (*flat, Dense(2))
    linear = fit(CNNRegressor(layers=(), max_iter=2, random_state=0), X, score)
    assert linear.network_.layers == (Flatten(), Dense(1))


@pytest.mark.parametrize("cls", [CNNClassifier, CNNRegressor])
def test_the_string_form_trains_exactly_the_tuple_form(cls):
    X, y, score = images()
    target = y if cls is CNNClassifier else score
    a = fit(cls(layers=STACK, max_iter=3, random_state=0), X, target)
    b = fit(cls(layers=STACK_TEXT, max_iter=3, random_state=0), X, target)
    assert a.network_ == b.network_
    for p, q in zip(a.params_, b.params_):
        np.testing.assert_array_equal(p, q)
    assert b.get_params()["layers"] == STACK_TEXT  # kept as given


def test_the_shorthand_is_the_one_conv_network_with_its_old_attributes():
    X, y, _ = images()
    clf = fit(CNNClassifier(n_filters=3, kernel_size=3, max_iter=2, random_state=0), X, y)
    assert isinstance(clf.params_, ConvNetParams)
    assert clf.spec_.n_filters == 3 and clf.spec_.pad == 1  # padding defaults to "same"
    assert clf.network_.layers == (Conv2d(3, 3, 1, 1), ReLU(), Flatten(), Dense(2))
    same = fit(CNNClassifier(layers=(Conv2d(3, 3, pad=1), ReLU()), max_iter=2, random_state=0),
               X, y)  # fmt: skip
    for p, q in zip(clf.params_, same.params_):  # the same network, the same draws
        np.testing.assert_array_equal(p, q)


def test_layers_and_the_shorthand_together_are_refused():
    X, y, _ = images()
    with pytest.raises(ValueError, match=r"either layers or the one-conv.*n_filters=4"):
        CNNClassifier(layers=STACK, n_filters=4).fit(X, y)


@pytest.mark.parametrize(
    "layers, error, message",
    [
        ("conv4k3-relu-max2-max2-max2", ValueError,
         r"layers do not fit 1x8x8 images: layer 4 \(MaxPool2d.*\) does not fit.*1x1"),
        ("conv4k9", ValueError, r"layer 0 \(Conv2d.*\) does not fit"),
        ("conv4k3-rleu", ValueError, r"token 2 of layers='conv4k3-rleu' \(at character 8\)"),
        ((Conv2d(2, 3), "relu"), TypeError, r"layers\[1\] is 'relu', not a layer"),
        (Conv2d(2, 3), TypeError, r"a tuple of layers, got one layer"),
        (3, TypeError, r"layers must be a tuple of layers or a string"),
    ],
)  # fmt: skip
def test_a_bad_or_misfit_stack_is_refused_before_any_training(layers, error, message):
    X, y, _ = images()
    clf = CNNClassifier(layers=layers, max_iter=1)
    with pytest.raises(error, match=message):
        clf.fit(X, y)
    assert not hasattr(clf, "params_")


def test_a_misfit_on_rows_without_image_shape_says_how_rows_are_read():
    X, y, _ = images()
    with pytest.raises(ValueError, match="taken as 1 x n_features images"):
        CNNClassifier(layers="conv2k3-relu-max2", max_iter=1).fit(X.reshape(40, -1), y)


def test_clone_get_set_params_pipelines_and_grid_search_over_stacks():
    X, y, _ = images(n=48)
    clf = CNNClassifier(layers=STACK, max_iter=2, random_state=0)
    twin = clone(clf)
    assert twin.get_params()["layers"] == STACK and twin.layers is not None
    twin.set_params(layers="conv2k3-relu")
    assert twin.get_params()["layers"] == "conv2k3-relu"
    pipe = make_pipeline(FunctionTransformer(lambda a: a / 2), clf)
    fit(pipe, X, y)
    assert pipe[-1].network_.layers[0] == Conv2d(4, 3, pad=1)
    grid = GridSearchCV(
        CNNClassifier(max_iter=2, random_state=0),
        {"layers": ["conv2k3-relu", (Conv2d(3, 3, pad=1), ReLU(), AvgPool2d(2))]},
        cv=2,
    )
    fit(grid, X, y)
    assert len(grid.cv_results_["params"]) == 2
    assert grid.best_estimator_.network_.layers[0] in (Conv2d(2, 3), Conv2d(3, 3, pad=1))


def test_a_warm_start_with_another_stack_is_refused():
    X, y, _ = images()
    clf = fit(CNNClassifier(layers=STACK, max_iter=1, random_state=0, warm_start=True), X, y)
    clf.set_params(layers="conv2k3-relu")
    with pytest.raises(ValueError, match="the network's shape changed since the last fit"):
        clf.fit(X, y)
    clf.set_params(layers=STACK_TEXT)  # the same stack in its other form goes on
    before = [p.copy() for p in clf.params_]
    fit(clf, X, y)
    assert not np.array_equal(before[0], clf.params_[0])


@pytest.mark.parametrize("cls", [CNNClassifier, CNNRegressor])
def test_layer_outputs_end_in_the_networks_outputs_and_objective_is_the_loss(cls):
    X, y, score = images()
    target = y if cls is CNNClassifier else score
    est = fit(cls(layers=STACK, max_iter=2, random_state=0), X, target)
    outputs = est.layer_outputs(X)
    assert [o.shape[1:] for o in outputs] == [
        (4, 8, 8), (4, 8, 8), (4, 4, 4), (6, 2, 2), (6, 2, 2), (24,), (est.n_outputs_,)
    ]  # fmt: skip
    assert (outputs[1] >= 0).all() and (outputs[1] == np.maximum(outputs[0], 0)).all()
    last = outputs[-1]
    if cls is CNNClassifier:
        np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), est.predict_proba(X))
        np.testing.assert_array_equal(est.classes_[last.argmax(1)], est.predict(X))
        z = last - last.max(1, keepdims=True)
        expected = -np.mean(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))
    else:
        np.testing.assert_allclose(last.ravel(), est.predict(X), rtol=1e-12)
        expected = np.mean((last.ravel() - score) ** 2)
    assert est.objective(X, target) == pytest.approx(expected, rel=1e-10)
    # the final epoch's training loss is measured before its last update; close, not equal
    assert est.objective(X, target) == pytest.approx(est.loss_curve_[-1], rel=0.2)


def test_standardising_block_by_block_gives_the_same_bits(monkeypatch):
    """Standardisation runs a block of samples at a time (no float64 copy of all the data):
    blocks of a few samples, including a short last one, change nothing."""
    import tinycnn.estimators._base as base

    X, y, _ = images(n=41)
    a = fit(CNNClassifier(layers=STACK, max_iter=2, random_state=0, dtype=np.float32), X, y)
    monkeypatch.setattr(base, "STANDARDIZE_BLOCK", 3 * 64)  # 3 images of 8x8 per block
    b = fit(CNNClassifier(layers=STACK, max_iter=2, random_state=0, dtype=np.float32), X, y)
    for p, q in zip(a.params_, b.params_):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(b._standardize(X, np.float32),
                                  ((X - b.input_mean_[0]) / b.input_std_[0]).astype(np.float32))
