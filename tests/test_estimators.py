"""CNNClassifier / CNNRegressor: scikit-learn's own checks, the input forms, incremental and warm
training, divergence, determinism, and a table of bad inputs each refused with a clear message."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import tinycnn  # noqa: E402
from tinycnn import CNNClassifier, CNNRegressor, DivergenceError  # noqa: E402
from tinycnn.estimators import TrainingState  # noqa: E402

ESTIMATORS = (CNNClassifier, CNNRegressor)


# A multi-layer stack that fits every image the checks use (2-D X: 1 x n_features images).
CHECKED_STACK = "conv4k3p1-relu-conv6k3p1-relu-flatten-dense8-relu"


@parametrize_with_checks(
    [
        CNNClassifier(),
        CNNRegressor(),
        CNNClassifier(layers=CHECKED_STACK),
        CNNRegressor(layers=CHECKED_STACK),
    ]
)
def test_sklearn_check_estimator_passes_with_default_parameters(estimator, check, monkeypatch):
    # Every check scikit-learn has, with the defaults (the default network adapts to each
    # check's image size) and with a multi-layer stack, no expected failures declared.
    # scikit-learn skips its array-API input check (with NumPy arrays) unless this is set.
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


def small_images(n=48, seed=0, shape=(1, 6, 6)):
    """Images whose label depends on a local pattern (what a conv can see)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, *shape))
    score = X[:, 0, 1:3, 1:3].sum(axis=(1, 2))
    return X, (score > 0).astype(int), score


def weights_digest(est) -> str:
    h = hashlib.sha256()
    for p in est.params_:
        h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()


def quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# ------------------------------------------------------------------------------ input forms


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_all_forms_of_X_train_the_same_network(cls):
    X4, labels, score = small_images()
    y = labels if cls is CNNClassifier else score
    kw = dict(max_iter=3, random_state=0)
    est4 = quiet_fit(cls(**kw), X4, y)
    est3 = quiet_fit(cls(**kw), X4[:, 0], y)
    est2 = quiet_fit(cls(image_shape=(1, 6, 6), **kw), X4.reshape(len(X4), -1), y)
    est2hw = quiet_fit(cls(image_shape=(6, 6), **kw), X4.reshape(len(X4), -1), y)
    for other in (est3, est2, est2hw):
        assert other.image_shape_ == (1, 6, 6) and other.n_features_in_ == 36
        for a, b in zip(est4.params_, other.params_):
            np.testing.assert_array_equal(a, b)
    # a fitted model takes any form of the same images
    expected = est4.predict(X4)
    np.testing.assert_array_equal(est4.predict(X4[:, 0]), expected)
    np.testing.assert_array_equal(est4.predict(X4.reshape(len(X4), -1)), expected)


def test_two_dimensional_X_without_image_shape_is_one_row_images():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 7))
    y = (X[:, 2] > 0).astype(int)
    clf = quiet_fit(CNNClassifier(max_iter=2, random_state=0), X, y)
    assert clf.image_shape_ == (1, 1, 7)
    # the default network's 3x3 convs (pad 1) run along the features, with no pooling
    assert clf.network_.shapes[1:4] == [(32, 1, 7), (32, 1, 7), (64, 1, 7)]
    assert clf.as_images(X).shape == (30, 1, 1, 7)


def test_multichannel_images_and_float32():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3, 5, 5)).astype(np.float32)
    Y = np.stack([X[:, 0].mean(axis=(1, 2)), X[:, 2, 1:3, 1:3].sum(axis=(1, 2))], axis=1)
    reg = quiet_fit(CNNRegressor(dtype=np.float32, max_iter=5, random_state=0), X, Y)
    kernel = reg.params_[0]  # the default network's first conv
    assert kernel.dtype == np.float32 and kernel.shape == (32, 3, 3, 3)
    assert all(p.dtype == np.float32 for p in reg.params_)
    assert reg.input_mean_.dtype == np.float64 and reg.input_mean_.shape == (3,)
    pred = reg.predict(X)
    assert pred.shape == (40, 2) and pred.dtype == np.float64


def test_standardisation_is_per_channel_and_learned_in_fit():
    rng = np.random.default_rng(3)
    X = (
        rng.normal(size=(32, 2, 4, 4)) * np.array([1.0, 50.0])[:, None, None]
        + np.array([5.0, -7.0])[:, None, None]
    )
    y = np.arange(32) % 2
    clf = quiet_fit(CNNClassifier(max_iter=1, random_state=0), X, y)
    np.testing.assert_allclose(clf.input_mean_, X.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(clf.input_std_, X.std(axis=(0, 2, 3)))
    raw = quiet_fit(CNNClassifier(max_iter=1, random_state=0, standardize=False), X, y)
    np.testing.assert_array_equal(raw.input_mean_, [0.0, 0.0])
    np.testing.assert_array_equal(raw.input_std_, [1.0, 1.0])


def test_data_whose_statistics_overflow_is_refused_naming_the_fix():
    X, y, _ = small_images()
    with pytest.raises(ValueError, match="too large to standardise.*rescale"):
        CNNClassifier(max_iter=1, random_state=0).fit(X * 1e200, y)


def test_the_nan_error_is_short_and_about_tinycnn():
    X, y, _ = small_images()
    X = X.copy()
    X[0, 0, 0, 0] = np.nan
    for est in (CNNClassifier(max_iter=1), CNNRegressor(max_iter=1)):
        with pytest.raises(ValueError, match="contains NaN") as info:
            est.fit(X, y)
        message = str(info.value)
        assert len(message) < 200 and "HistGradientBoosting" not in message, message
        assert type(est).__name__ in message and "impute" in message


def test_the_regressor_docstring_examples_run_and_show_target_scaling():
    import doctest

    from tinycnn import estimators

    assert "TransformedTargetRegressor" in CNNRegressor.__doc__
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(estimators.CNNRegressor, "CNNRegressor", module=estimators):
        if test.examples:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                runner.run(test)
    assert runner.failures == 0 and runner.tries >= 6


def test_X_is_never_written_and_may_be_read_only():
    X, y, _ = small_images()
    X.setflags(write=False)
    before = X.copy()
    clf = quiet_fit(CNNClassifier(max_iter=2, random_state=0), X, y)
    clf.predict(X)
    np.testing.assert_array_equal(X, before)


def test_predict_proba_and_log_proba_agree():
    X, y, _ = small_images()
    clf = quiet_fit(CNNClassifier(max_iter=3, random_state=0), X, np.array(["a", "b"])[y])
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(X), rtol=1e-12)
    assert set(clf.predict(X)) <= {"a", "b"}
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))


# ------------------------------------------------------------------------------ sklearn usage


def test_works_in_pipeline_and_grid_search():
    X, y, _ = small_images(n=60)
    flat = X.reshape(len(X), -1)
    pipe = make_pipeline(
        FunctionTransformer(lambda a: a * 2.0),
        CNNClassifier(image_shape=(1, 6, 6), max_iter=5, random_state=0),
    )
    search = GridSearchCV(pipe, {"cnnclassifier__n_filters": [2, 4]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(flat, y)
    assert search.best_params_["cnnclassifier__n_filters"] in (2, 4)
    assert search.predict(flat).shape == (60,)
    assert 0.0 <= search.score(flat, y) <= 1.0


def test_clone_keeps_parameters_and_drops_fitted_state():
    clf = quiet_fit(CNNClassifier(n_filters=3, max_iter=1, random_state=0), *small_images()[:2])
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "params_")


# ------------------------------------------------------------------------------ training modes


def test_partial_fit_runs_one_epoch_per_call_and_needs_classes_first():
    X, y, _ = small_images()
    clf = CNNClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y[::-1] * 0)  # one class, no classes= given
    clf = CNNClassifier(random_state=0)
    for _ in range(4):
        clf.partial_fit(X, y, classes=[0, 1])
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    clf.partial_fit(X[:5], y[:5])  # later calls may see a subset of the classes
    assert clf.n_iter_ == 5
    with pytest.raises(ValueError, match="not seen"):
        clf.partial_fit(X[:4], np.array([0, 1, 2, 1]))


def test_partial_fit_regressor_continues_the_optimizer():
    X, _, score = small_images()
    reg = CNNRegressor(batch_size=16, random_state=0)
    for _ in range(3):
        reg.partial_fit(X, score)
    assert reg._optimizer.state_dict()["t"] == 3 * 3  # 48 samples in batches of 16


def test_warm_start_continues_from_the_fitted_weights():
    X, _, score = small_images()
    cold = quiet_fit(CNNRegressor(max_iter=5, random_state=0), X, score)
    first = list(cold.loss_curve_)
    warm = quiet_fit(cold.set_params(warm_start=True), X, score)
    assert warm.loss_curve_[0] < first[0]
    restarted = quiet_fit(clone(cold).set_params(warm_start=False), X, score)
    assert restarted.loss_curve_ == first


def test_convergence_warning_when_max_iter_is_reached():
    X, y, _ = small_images()
    with pytest.warns(ConvergenceWarning, match="maximum iterations \\(2\\)"):
        CNNClassifier(max_iter=2, random_state=0).fit(X, y)


def test_stops_when_the_loss_stops_improving():
    X, y, _ = small_images()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = CNNClassifier(max_iter=500, n_iter_no_change=2, tol=10.0, random_state=0).fit(X, y)
    assert clf.n_iter_ == 3  # epoch 1 sets the best; 2 and 3 fail to beat it by tol


def test_early_stopping_keeps_the_best_validation_weights():
    X, y, _ = small_images(n=80)
    states = []
    clf = quiet_fit(
        CNNClassifier(
            early_stopping=True,
            n_iter_no_change=3,
            max_iter=60,
            random_state=0,
            learning_rate_init=0.05,
        ),
        X,
        y,
        callback=lambda est, state: states.append(state),
    )
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ and clf.best_validation_score_ == max(scores)
    best_epoch = int(np.argmax(scores)) + 1
    for a, b in zip(clf.params_, states[best_epoch - 1].params):
        np.testing.assert_array_equal(a, b)


def test_verbose_prints_the_loss_per_epoch(capsys):
    X, y, _ = small_images()
    quiet_fit(CNNClassifier(max_iter=2, verbose=True, random_state=0), X, y)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Iteration 2, loss = " in out


def test_callback_sees_each_epoch_and_can_stop_training():
    X, y, _ = small_images()
    seen = []

    def callback(est, state):
        assert isinstance(state, TrainingState)
        assert est.n_iter_ == state.epoch and est.loss_curve_ == state.history.loss_curve
        seen.append(state.epoch)
        return state.epoch == 3

    clf = CNNClassifier(max_iter=50, random_state=0).fit(X, y, callback=callback)
    assert seen == [1, 2, 3] and clf.n_iter_ == 3


# ------------------------------------------------------------------------------ divergence


def test_divergence_names_the_epoch_and_keeps_the_last_good_weights():
    X, _, score = small_images(n=40, shape=(1, 5, 5))
    y = score * 10
    states = []
    reg = CNNRegressor(solver="sgd", learning_rate_init=0.02, max_iter=50, batch_size=32)
    reg.set_params(kernel_size=3, random_state=0)
    with pytest.raises(DivergenceError, match="epoch 7") as info:
        reg.fit(X, y, callback=lambda est, state: states.append(state))
    assert info.value.epoch == 7 and len(states) == 6
    assert reg.n_iter_ == 6 and len(reg.loss_curve_) == 6
    assert reg.loss_curve_[-1] > 1e40  # the last finite weights were blown up ...
    best = int(np.argmin(reg.loss_curve_))
    for a, b in zip(reg.params_, states[best].params):  # ... so the best epoch's are kept
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(reg.predict(X)).all()
    # and training goes on from them with a smaller rate
    reg.set_params(warm_start=True, learning_rate_init=1e-3, max_iter=20)
    quiet_fit(reg, X, y)
    assert all(np.isfinite(p).all() for p in reg.params_)
    assert max(reg.loss_curve_) < 1e4


def test_divergence_in_the_first_epoch_keeps_the_initial_weights():
    X, _, score = small_images(n=40, shape=(1, 5, 5))
    reg = CNNRegressor(solver="sgd", learning_rate_init=1e200, batch_size=32, random_state=0)
    with pytest.raises(DivergenceError, match="epoch 1"):
        reg.fit(X, score * 10)
    assert reg.n_iter_ == 0 and reg.loss_curve_ == []
    # an epoch at a negligible rate leaves (to 1e-290) the weights it starts from
    start = CNNRegressor(max_iter=1, random_state=0, solver="sgd", learning_rate_init=1e-300)
    start.fit(X, score * 10, callback=lambda e, s: True)
    for a, b in zip(reg.params_, start.params_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-290)


# ------------------------------------------------------------------------------ determinism

DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib, warnings
    import numpy as np
    from tinycnn import CNNClassifier
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 1, 6, 6))
    y = (X[:, 0, 1:3, 1:3].sum(axis=(1, 2)) > 0).astype(int)
    clf = CNNClassifier(max_iter=4, random_state=7, early_stopping=True).fit(X, y)
    h = hashlib.sha256()
    for p in clf.params_:
        h.update(np.ascontiguousarray(p).tobytes())
    print(h.hexdigest())
    """
)


def test_same_random_state_gives_bit_identical_weights_across_runs_and_processes():
    X, y, _ = small_images()
    kw = dict(max_iter=4, random_state=7, early_stopping=True)
    digests = {weights_digest(quiet_fit(CNNClassifier(**kw), X, y)) for _ in range(2)}
    assert len(digests) == 1
    out = subprocess.run(
        [sys.executable, "-c", DETERMINISM_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    assert out.stdout.strip() == digests.pop()


def test_different_random_states_give_different_weights():
    X, y, _ = small_images()
    a = quiet_fit(CNNClassifier(max_iter=1, random_state=0), X, y)
    b = quiet_fit(CNNClassifier(max_iter=1, random_state=1), X, y)
    assert weights_digest(a) != weights_digest(b)


# ------------------------------------------------------------------------------ bad input

X_OK, Y_OK, SCORE_OK = small_images(n=24)
FLAT_OK = X_OK.reshape(24, -1)


def fitted_classifier():
    return quiet_fit(CNNClassifier(max_iter=1, random_state=0), X_OK, Y_OK)


# fmt: off
BAD_FITS = [
    # (id, estimator, X, y, exception, words the message must contain)
    ("one class", CNNClassifier(), X_OK, np.zeros(24), ValueError, ["class"]),
    ("image_shape vs n_features", CNNClassifier(image_shape=(1, 5, 5)),
     FLAT_OK, Y_OK, ValueError, ["image_shape", "36"]),
    ("image_shape vs images", CNNClassifier(image_shape=(1, 5, 5)),
     X_OK, Y_OK, ValueError, ["image_shape"]),
    ("image_shape zero", CNNClassifier(image_shape=(0, 6, 6)),
     FLAT_OK, Y_OK, ValueError, ["image_shape"]),
    ("image_shape 4 values", CNNClassifier(image_shape=(1, 1, 6, 6)),
     FLAT_OK, Y_OK, ValueError, ["image_shape"]),
    ("zero filters", CNNClassifier(n_filters=0), X_OK, Y_OK, ValueError, ["n_filters", "0"]),
    (
        "more filters than memory",
        CNNClassifier(n_filters=10**12),
        X_OK,
        Y_OK,
        ValueError,
        ["n_filters=1000000000000", "too large"],
    ),
    ("kernel larger than padded image", CNNClassifier(kernel_size=7, padding="valid"),
     X_OK, Y_OK, ValueError, ["kernel_size=7", "6x6"]),
    ("kernel larger with int padding", CNNRegressor(kernel_size=9, padding=1),
     X_OK, SCORE_OK, ValueError, ["kernel_size=9", "8x8"]),
    ("kernel larger than one-row image", CNNClassifier(kernel_size=3, padding="valid"),
     FLAT_OK, Y_OK, ValueError, ["kernel_size=3", "image_shape"]),
    ("same with even kernel", CNNClassifier(kernel_size=4),
     X_OK, Y_OK, ValueError, ["padding='same'", "kernel_size=4"]),
    ("same with stride 2", CNNClassifier(stride=2),
     X_OK, Y_OK, ValueError, ["padding='same'", "stride=2"]),
    ("negative padding", CNNClassifier(padding=-1), X_OK, Y_OK, ValueError, ["padding", "-1"]),
    ("padding word", CNNClassifier(padding="full"), X_OK, Y_OK, ValueError, ["padding"]),
    ("stride 0", CNNClassifier(stride=0, padding=0), X_OK, Y_OK, ValueError, ["stride"]),
    ("solver", CNNClassifier(solver="lbfgs"), X_OK, Y_OK, ValueError, ["solver", "lbfgs"]),
    ("lr zero", CNNClassifier(learning_rate_init=0.0),
     X_OK, Y_OK, ValueError, ["learning_rate_init"]),
    ("lr nan", CNNClassifier(learning_rate_init=float("nan")),
     X_OK, Y_OK, ValueError, ["learning_rate_init"]),
    ("lr inf", CNNClassifier(learning_rate_init=float("inf")),
     X_OK, Y_OK, ValueError, ["learning_rate_init"]),
    ("lr string", CNNClassifier(learning_rate_init="0.1"),
     X_OK, Y_OK, TypeError, ["learning_rate_init"]),
    ("max_iter zero", CNNClassifier(max_iter=0), X_OK, Y_OK, ValueError, ["max_iter"]),
    ("max_iter float", CNNClassifier(max_iter=2.5), X_OK, Y_OK, TypeError, ["max_iter"]),
    ("momentum 1", CNNClassifier(momentum=1.0), X_OK, Y_OK, ValueError, ["momentum"]),
    ("batch_size 0", CNNClassifier(batch_size=0), X_OK, Y_OK, ValueError, ["batch_size"]),
    ("alpha negative", CNNClassifier(alpha=-1.0), X_OK, Y_OK, ValueError, ["alpha"]),
    ("validation_fraction 1", CNNClassifier(validation_fraction=1.0),
     X_OK, Y_OK, ValueError, ["validation_fraction"]),
    ("tiny validation set", CNNClassifier(early_stopping=True, validation_fraction=0.01),
     X_OK[:10], Y_OK[:10], ValueError, ["validation_fraction"]),
    ("dtype int", CNNClassifier(dtype=np.int32), X_OK, Y_OK, ValueError, ["dtype", "int32"]),
    ("dtype nonsense", CNNClassifier(dtype="banana"), X_OK, Y_OK, TypeError, ["dtype"]),
    ("NaN in X", CNNClassifier(), np.where(X_OK > 2, np.nan, X_OK), Y_OK, ValueError, ["X", "NaN"]),
    ("inf in X", CNNRegressor(),
     np.where(X_OK > 2, np.inf, X_OK), SCORE_OK, ValueError, ["X", "inf"]),
    ("NaN in y", CNNRegressor(),
     X_OK, np.where(SCORE_OK > 1, np.nan, SCORE_OK), ValueError, ["y", "NaN"]),
    ("strings of digits", CNNClassifier(),
     FLAT_OK.astype(int).astype(str), Y_OK, TypeError, ["X", "string"]),
    ("list of strings", CNNClassifier(),
     [["1", "2"], ["3", "4"]], [0, 1], TypeError, ["X", "string"]),
    ("object array with a string", CNNClassifier(),
     np.array([[1, "2"], [3, 4]], dtype=object), [0, 1], TypeError, ["X", "string"]),
    ("objects", CNNClassifier(),
     np.array([[{}, 1.0], [2.0, 3.0]], dtype=object), [0, 1], TypeError, ["number"]),
    ("complex X", CNNRegressor(), FLAT_OK + 1j, SCORE_OK, ValueError, ["X", "omplex"]),
    ("complex y", CNNRegressor(), FLAT_OK, SCORE_OK + 1j, ValueError, ["y", "omplex"]),
    ("string y for a regressor", CNNRegressor(),
     FLAT_OK, SCORE_OK.astype(str), TypeError, ["y", "string"]),
    ("continuous y for a classifier", CNNClassifier(),
     X_OK, SCORE_OK, ValueError, ["Unknown label type"]),
    ("1-D X", CNNClassifier(), FLAT_OK[0], np.arange(36) % 2, ValueError, ["2D", "X"]),
    ("5-D X", CNNClassifier(), X_OK[:, None], Y_OK, ValueError, ["X", "5 dimensions"]),
    ("empty X", CNNClassifier(), FLAT_OK[:0], Y_OK[:0], ValueError, ["0 sample"]),
    ("no features", CNNClassifier(), FLAT_OK[:, :0], Y_OK, ValueError, ["0 feature"]),
    ("X and y lengths", CNNRegressor(), X_OK, SCORE_OK[:-1], ValueError, ["inconsistent"]),
    ("y missing", CNNRegressor(), X_OK, None, ValueError, ["requires y"]),
    ("sparse X", CNNClassifier(), None, Y_OK, TypeError, ["parse"]),
]
# fmt: on


@pytest.mark.parametrize(
    "est, X, y, exc, words", [case[1:] for case in BAD_FITS], ids=[case[0] for case in BAD_FITS]
)
def test_bad_fit_input_is_refused_naming_the_argument(est, X, y, exc, words):
    if X is None:  # built here so the table stays importable without scipy at collection
        from scipy import sparse

        X = sparse.csr_matrix(FLAT_OK)
    with pytest.raises(exc) as info:
        clone(est).fit(X, y)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


BAD_PREDICTS = [
    ("other image size", np.zeros((3, 1, 5, 5)), ["(1, 5, 5)", "(1, 6, 6)"]),
    ("other channel count", np.zeros((3, 2, 6, 6)), ["(2, 6, 6)"]),
    ("other n_features", np.zeros((3, 35)), ["35 features", "36"]),
    ("1-D", np.zeros(36), ["2D"]),
    ("NaN", np.full((2, 36), np.nan), ["NaN"]),
]


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba", "as_images"])
@pytest.mark.parametrize(
    "X, words", [c[1:] for c in BAD_PREDICTS], ids=[c[0] for c in BAD_PREDICTS]
)
def test_bad_predict_input_is_refused(method, X, words):
    clf = fitted_classifier()
    with pytest.raises(ValueError) as info:
        getattr(clf, method)(X)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("method", ["predict", "as_images", "save"])
def test_not_fitted_error_before_fit(cls, method, tmp_path):
    arg = tmp_path / "m.npz" if method == "save" else X_OK
    with pytest.raises(NotFittedError):
        getattr(cls(), method)(arg)


def test_partial_fit_bad_classes_and_bad_resume():
    with pytest.raises(ValueError, match="classes"):
        CNNClassifier().partial_fit(X_OK, Y_OK, classes=[0, 5])  # 1 is not in classes
    with pytest.raises(ValueError, match="n_features|features"):
        clf = CNNClassifier().partial_fit(FLAT_OK, Y_OK, classes=[0, 1])
        clf.partial_fit(FLAT_OK[:, :-1], Y_OK)
    with pytest.raises(TypeError, match="resume"):
        CNNClassifier().fit(X_OK, Y_OK, resume={"epoch": 1})
    with pytest.raises(TypeError, match="callback"):
        CNNClassifier().fit(X_OK, Y_OK, callback="print")


def test_warm_start_refuses_a_changed_network():
    clf = fitted_classifier()
    clf.set_params(warm_start=True, n_filters=5)
    with pytest.raises(ValueError, match="shape changed"):
        clf.fit(X_OK, Y_OK)


# ------------------------------------------------------------------------------ package wiring

NO_SKLEARN_SCRIPT = textwrap.dedent(
    """
    import sys
    for name in ("sklearn", "scipy", "torch", "onnx"):
        sys.modules[name] = None  # any import of these now fails
    import numpy as np
    import tinycnn
    X = np.random.default_rng(0).normal(size=(4, 1, 5, 5)); y = np.ones((4, 1))
    out = tinycnn.train_cnn(X, y, epochs=2, lr=0.01)
    assert len(out) == 5
    try:
        tinycnn.CNNClassifier
    except ImportError as exc:
        assert "scikit-learn" in str(exc), exc
    else:
        raise AssertionError("CNNClassifier imported without scikit-learn")
    print("ok")
    """
)


def test_import_tinycnn_needs_numpy_only():
    out = subprocess.run(
        [sys.executable, "-c", NO_SKLEARN_SCRIPT], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_lazy_names_are_the_real_objects():
    from tinycnn import estimators, io

    assert tinycnn.CNNClassifier is estimators.CNNClassifier
    assert tinycnn.CNNRegressor is estimators.CNNRegressor
    assert tinycnn.load is io.load_model
    assert {"CNNClassifier", "CNNRegressor", "load", "from_torch"} <= set(dir(tinycnn))
    with pytest.raises(AttributeError):
        tinycnn.no_such_name  # noqa: B018


def test_export_methods_delegate_to_tinycnn_export(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("tinycnn.export")
    fake.to_torch = lambda est: calls.append(("to_torch", est)) or "module"
    fake.to_onnx = lambda est, path: calls.append(("to_onnx", est, path))
    fake.from_torch = lambda module, like: ("from_torch", module, like)
    monkeypatch.setitem(sys.modules, "tinycnn.export", fake)
    monkeypatch.delitem(tinycnn.__dict__, "from_torch", raising=False)
    clf = fitted_classifier()
    assert clf.to_torch() == "module"
    clf.to_onnx(tmp_path / "m.onnx")
    assert calls == [("to_torch", clf), ("to_onnx", clf, tmp_path / "m.onnx")]
    assert tinycnn.from_torch("m", like=clf) == ("from_torch", "m", clf)
    # A plain pop: monkeypatch.delitem would put the fake back at teardown, leaking it into
    # later tests in this process.
    tinycnn.__dict__.pop("from_torch", None)
