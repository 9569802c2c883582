"""Model files and checkpoints written by the first version (format 1, commit f824b5a) load and
predict as they did then, and a format-1 checkpoint still resumes to the run's recorded end.
The files and what they predicted were recorded by ``fixtures/record_v1.py``."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinycnn
from tests.conftest import rel_error
from tinycnn.io import load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("record_v1", FIXTURES / "record_v1.py")
record_v1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record_v1)


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "v1_expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def copy_of(tmp_path):
    """A fixture file copied to a temporary folder (the tests never touch the originals)."""

    def copy(name: str) -> Path:
        return Path(shutil.copy(FIXTURES / name, tmp_path / name))

    return copy


@pytest.mark.parametrize(
    "name, tol", [("classifier_f64", 1e-12), ("classifier_f32", 1e-6)]
)
def test_v1_classifiers_load_and_predict_as_recorded(name, tol, expected, copy_of):
    est = tinycnn.load(copy_of(f"v1_model_{name}.npz"))
    X = expected["X_probe"]
    assert rel_error(est.predict_proba(X), expected[f"{name}.proba"]) <= tol
    if f"{name}.predict" in expected:
        assert np.array_equal(est.predict(X), expected[f"{name}.predict"])
    assert np.array_equal(est.predict(X), expected[f"{name}.proba"].argmax(1))


def test_v1_regressor_loads_and_predicts_as_recorded(expected, copy_of):
    est = tinycnn.load(copy_of("v1_model_regressor.npz"))
    assert rel_error(est.predict(expected["X_probe"]), expected["regressor.predict"]) <= 1e-12


def test_v1_model_with_string_classes_loads_and_predicts_as_recorded(expected, copy_of):
    est = tinycnn.load(copy_of("v1_model_images_strings.npz"))
    X = expected["X_probe"].reshape(-1, 8, 8)
    assert rel_error(est.predict_proba(X), expected["images_strings.proba"]) <= 1e-12
    assert list(est.predict(X)) == list(expected["images_strings.predict"])


def test_v1_checkpoint_loads_as_its_model_and_resumes_to_the_recorded_end(expected, copy_of):
    path = copy_of("v1_checkpoint_epoch3.npz")
    assert tinycnn.load(path).n_iter_ == 3
    est, state = load_checkpoint(path)
    assert state.epoch == 3 and not state.finished
    X_train, _, y_train, _ = record_v1.digits_split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X_train, y_train, resume=state)
    assert est.n_iter_ == 6
    flat = np.concatenate([np.ravel(p) for p in est.params_])
    assert rel_error(flat, expected["checkpoint_epoch3.resumed_params"]) <= 1e-9
    proba = est.predict_proba(expected["X_probe"])
    assert rel_error(proba, expected["checkpoint_epoch3.resumed_proba"]) <= 1e-9


def test_v1_finished_checkpoint_with_best_weights_loads(copy_of):
    est, state = load_checkpoint(copy_of("v1_checkpoint_finished_es.npz"))
    assert state.best_params is not None
    assert est.n_iter_ == state.epoch
    assert est.validation_scores_ is not None and len(est.validation_scores_) == state.epoch


def test_files_saved_with_default_parameters_keep_their_one_conv_network(copy_of):
    # Saved before the default network changed (fixtures/record_default_params_3f2c0dc.py):
    # their parameters say "the default", which then meant 16 5x5 filters. They load, predict
    # as recorded, and a warm start trains that same network on.
    with np.load(FIXTURES / "v1_default_params_expected.npz") as z:
        X, proba, predict = z["X_probe"], z["proba"], z["predict"]
    clf = tinycnn.load(copy_of("v1_model_default_params_classifier.npz"))
    reg = tinycnn.load(copy_of("v1_model_default_params_regressor.npz"))
    assert rel_error(clf.predict_proba(X), proba) <= 1e-12
    assert rel_error(reg.predict(X), predict) <= 1e-12
    for est in (clf, reg):
        assert est.spec_.n_filters == 16 and est.spec_.kernel_size == 5
        y = est.predict(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.set_params(warm_start=True, max_iter=1).fit(X, y)
        assert est.spec_.n_filters == 16
