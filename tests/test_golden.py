"""Golden outputs recorded with the one-topology engine (commit f824b5a) before the layer engine
replaced it: ``train_cnn``, ``predict_cnn``, the deep-ml entry point and the estimators (every
training setting given explicitly) must keep reproducing them. See ``fixtures/record_v1.py``."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinycnn
from tests.conftest import rel_error

FIXTURES = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("record_v1", FIXTURES / "record_v1.py")
record_v1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record_v1)

FIELDS = ("kernel", "bias_conv", "W_fc", "b_fc")


@pytest.fixture(scope="module")
def golden_train_cnn():
    with np.load(FIXTURES / "golden_train_cnn.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", record_v1.TRAIN_CNN_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("recorded", ["one", "helpers"])
def test_train_cnn_reproduces_the_recorded_runs(case, recorded, golden_train_cnn):
    name, N, C, H, W, F, k, s, p, O, epochs = case
    X, y = record_v1.train_cnn_inputs(name, N, C, H, W, O)
    np.random.seed(7)
    result = tinycnn.train_cnn(X, y, epochs, 0.01, n_filters=F, kernel_size=k, stride=s, pad=p)
    g = {f: golden_train_cnn[f"{recorded}.{name}.{f}"] for f in (*FIELDS, "loss", "predict")}
    for field, value in zip(FIELDS, result):
        assert rel_error(value, g[field]) <= 1e-9, f"{name} {field}"
    assert abs(result[4] - float(g["loss"])) <= 1e-9 * abs(float(g["loss"]))
    # The global random state is left where the seed's draws leave it.
    assert np.array_equal(np.random.get_state()[1], golden_train_cnn[f"{recorded}.{name}.state"])
    predicted = tinycnn.predict_cnn(X, *(g[f] for f in FIELDS), stride=s, pad=p)
    assert rel_error(predicted, g["predict"]) <= 1e-12


@pytest.mark.parametrize("case", record_v1.DEEPML_CASES, ids=lambda c: c[0])
def test_deepml_reproduces_the_recorded_runs(case):
    from tinycnn.deepml import train_simple_cnn_with_backprop

    name, n, H, W, K, k, F, epochs, lr = case
    rs = np.random.RandomState(99 + n)
    X = rs.randn(n, H, W)
    y = np.eye(K)[rs.randint(0, K, n)]
    np.random.seed(3)
    out = train_simple_cnn_with_backprop(X, y, epochs, lr, kernel_size=k, num_filters=F)
    with np.load(FIXTURES / "golden_deepml.npz") as z:
        for field, value in zip(("W_conv", "b_conv", "W_dense", "b_dense"), out):
            assert rel_error(value, z[f"{name}.{field}"]) <= 1e-9, f"{name} {field}"


@pytest.mark.parametrize("name", sorted(record_v1.ESTIMATOR_CASES))
def test_estimators_with_explicit_settings_reproduce_the_recorded_fits(name):
    case = record_v1.ESTIMATOR_CASES[name]
    X_train, X_test, y_train, _ = record_v1.digits_split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = record_v1.make_estimator(case).fit(
            X_train, record_v1.estimator_targets(case["kind"], y_train)
        )
    tol = 1e-4 if case["dtype"] == "float32" else 1e-9
    with np.load(FIXTURES / "golden_estimators.npz") as z:
        params = [z[f"{name}.param{i}"] for i in range(4)]
        for i, (p, g) in enumerate(zip(est.params_, params)):
            assert p.dtype == g.dtype
            assert rel_error(p, g) <= tol, f"{name} param {i}"
        assert rel_error(est.loss_curve_, z[f"{name}.loss_curve"]) <= tol
        if case["kind"] == "classifier":
            assert rel_error(est.predict_proba(X_test), z[f"{name}.output"]) <= tol
            assert np.array_equal(est.predict(X_test), z[f"{name}.predict"])
        else:
            assert rel_error(est.predict(X_test), z[f"{name}.output"]) <= tol
