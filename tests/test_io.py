"""Model files and checkpoints: exact round trips, atomic writes, exact resume, and a fuzz test
in which every damaged or crafted file is refused with ModelFileError naming it."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import fill_disk_while_writing

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

import tinycnn  # noqa: E402
from tinycnn import CNNClassifier, CNNRegressor, ModelFileError  # noqa: E402
from tinycnn.io import (  # noqa: E402
    SEAL_LENGTH,
    SEAL_PREFIX,
    ZIP_DATE,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from tinycnn.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def images(n=60, seed=0, shape=(1, 6, 6)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, *shape))
    score = X[:, 0, 1:3, 1:3].sum(axis=(1, 2))
    return X, (score > 0).astype(int), score


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def assert_same_weights(a, b):
    for p, q in zip(a.params_, b.params_):
        assert p.dtype == q.dtype
        np.testing.assert_array_equal(p, q)


@pytest.fixture(scope="module")
def classifier():
    X, y, _ = images()
    labels = np.array(["cat", "dog"])[y]
    return quiet(CNNClassifier(n_filters=4, max_iter=3, random_state=0).fit, X, labels), X


# ------------------------------------------------------------------------------ round trips


def test_save_load_gives_identical_predictions_and_attributes(classifier, tmp_path):
    clf, X = classifier
    path = tmp_path / "model.npz"
    clf.save(path)
    loaded = tinycnn.load(path)
    assert type(loaded) is CNNClassifier
    assert loaded.get_params() == clf.get_params()
    assert_same_weights(loaded, clf)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    for name in ("classes_", "input_mean_", "input_std_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(clf, name))
    names = "spec_ image_shape_ n_features_in_ n_outputs_ loss_curve_ n_iter_ best_loss_"
    for name in [*names.split(), "validation_scores_"]:
        assert getattr(loaded, name) == getattr(clf, name), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_regressor_round_trip_multi_output_and_float32(dtype, tmp_path):
    X, _, score = images(shape=(2, 5, 5))
    Y = np.stack([score, -2 * score], axis=1)
    reg = CNNRegressor(dtype=dtype, max_iter=2, random_state=1, early_stopping=True)
    quiet(reg.fit, X, Y)
    save_model(reg, tmp_path / "r.npz")
    loaded = load_model(tmp_path / "r.npz")
    assert_same_weights(loaded, reg)
    np.testing.assert_array_equal(loaded.predict(X), reg.predict(X))
    assert loaded.validation_scores_ == reg.validation_scores_
    save_model(loaded, tmp_path / "again.npz")  # a loaded model saves the same file
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "r.npz").read_bytes()


def test_feature_names_survive_a_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    X, y, _ = images()
    frame = pd.DataFrame(X.reshape(len(X), -1), columns=[f"px{i}" for i in range(36)])
    clf = quiet(CNNClassifier(image_shape=(1, 6, 6), max_iter=1, random_state=0).fit, frame, y)
    clf.save(tmp_path / "m.npz")
    loaded = tinycnn.load(tmp_path / "m.npz")
    assert list(loaded.feature_names_in_) == list(frame.columns)
    np.testing.assert_array_equal(loaded.predict(frame), clf.predict(frame))


def test_a_loaded_model_can_go_on_training(classifier, tmp_path):
    clf, X = classifier
    clf.save(tmp_path / "m.npz")
    loaded = tinycnn.load(tmp_path / "m.npz").set_params(warm_start=True, max_iter=2)
    quiet(loaded.fit, X, clf.predict(X))
    assert loaded.n_iter_ == 2
    loaded.partial_fit(X, clf.predict(X))
    assert loaded.n_iter_ == 3


def test_the_file_is_plain_npz_with_a_json_config(classifier, tmp_path):
    clf, _ = classifier
    path = tmp_path / "m.npz"
    clf.save(path)
    with np.load(path, allow_pickle=False) as npz:
        config = json.loads(npz["config"].tobytes())
        assert set(npz.files) == {"config", *config["arrays"]}
        for name, entry in config["arrays"].items():
            assert list(npz[name].shape) == entry["shape"]
            assert npz[name].dtype.str == entry["dtype"]
    # The shorthand's network is written as format 2 too: the whole stack, weights per layer.
    assert config["format"] == "tinycnn-model" and config["format_version"] == 2
    assert config["class"] == "CNNClassifier" and config["kind"] == "model"
    assert config["params"]["n_filters"] == 4 and config["params"]["dtype"] == "float64"
    network = {"layers": "conv4k5p2-relu-flatten-dense2", "input_shape": [1, 6, 6]}
    assert config["network"] == network
    weights = ["params.0.kernel", "params.0.bias", "params.3.W", "params.3.b"]
    assert sorted(config["arrays"]) == sorted([*weights, "input_mean", "input_std", "classes"])
    assert config["arrays"]["params.3.W"]["shape"] == [4 * 6 * 6, 2]


def test_same_model_same_bytes(classifier, tmp_path):
    clf, _ = classifier
    clf.save(tmp_path / "a.npz")
    clf.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


# ------------------------------------------------------------------------------ stacks

# Two conv layers, pooling and a hidden dense: weights of layers 0, 3 and 6 (and 8, the output).
STACK = "conv3k3p1-relu-max2-conv2k2-relu-flatten-dense5-relu"
STACK_LAYERS = (Conv2d(3, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(2, 2), ReLU(), Flatten(),
                Dense(5), ReLU())  # fmt: skip


@pytest.fixture(scope="module")
def stack_classifier():
    X, y, _ = images()
    labels = np.array(["cat", "dog"])[y]
    return quiet(CNNClassifier(layers=STACK, max_iter=3, random_state=0).fit, X, labels), X


def assert_same_model(loaded, est, X):
    assert type(loaded) is type(est)
    assert loaded.get_params() == est.get_params()
    assert type(loaded.layers) is type(est.layers)
    assert loaded.network_ == est.network_
    assert hasattr(loaded, "spec_") == hasattr(est, "spec_")
    assert_same_weights(loaded, est)
    assert type(loaded.params_) is type(est.params_)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    for name in ("input_mean_", "input_std_", "classes_"):
        if hasattr(est, name):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(est, name))
    names = "image_shape_ n_features_in_ n_outputs_ loss_curve_ n_iter_ best_loss_"
    for name in [*names.split(), "validation_scores_"]:
        assert getattr(loaded, name) == getattr(est, name), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layers", [STACK, STACK_LAYERS, "Conv3K3P1 - relu - max2"],
                         ids=["string", "tuple", "string as typed"])  # fmt: skip
@pytest.mark.parametrize("cls", [CNNClassifier, CNNRegressor])
def test_a_stack_round_trip_predicts_bit_identically(cls, layers, dtype, tmp_path):
    X, labels, score = images(shape=(2, 6, 6))
    y = labels if cls is CNNClassifier else np.stack([score, -score], axis=1)
    est = quiet(cls(layers=layers, dtype=dtype, max_iter=2, random_state=3).fit, X, y)
    est.save(tmp_path / "m.npz")
    loaded = tinycnn.load(tmp_path / "m.npz")
    assert_same_model(loaded, est, X)
    assert loaded.layers == layers  # a string stays that string, a tuple a tuple of equal layers
    if cls is CNNClassifier:
        np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    loaded.save(tmp_path / "again.npz")  # a loaded model saves the same file
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "m.npz").read_bytes()


def test_a_stack_file_holds_the_stack_and_weights_per_layer(stack_classifier, tmp_path):
    clf, _ = stack_classifier
    clf.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        config = json.loads(npz["config"].tobytes())
        shapes = {name: npz[name].shape for name in npz.files if name.startswith("params.")}
    assert config["network"] == {"layers": STACK + "-dense2", "input_shape": [1, 6, 6]}
    assert config["params"]["layers"] == STACK
    assert shapes == {
        "params.0.kernel": (3, 1, 3, 3), "params.0.bias": (3,),
        "params.3.kernel": (2, 3, 2, 2), "params.3.bias": (2,),
        "params.6.W": (2 * 2 * 2, 5), "params.6.b": (5,),
        "params.8.W": (5, 2), "params.8.b": (2,),
    }  # fmt: skip
    assert [list(s) for s in shapes.values()] == [list(s) for s in clf.network_.param_shapes]


def test_a_file_saved_under_another_default_network_loads_that_network(monkeypatch, tmp_path):
    """A model fitted with no network named holds the default of its version; once the default
    changes, loading names the stored stack as ``layers`` so it predicts, warm-starts and
    resumes with the network the file holds."""
    from tinycnn.estimators import _network

    X, y, _ = images(shape=(1, 6, 6))
    clf = quiet(CNNClassifier(max_iter=2, random_state=0).fit, X, y)
    clf.save(tmp_path / "m.npz")
    path = tmp_path / "c.npz"
    run_with_checkpoint(CNNClassifier, dict(max_iter=4, random_state=0), X, y, 2, path)
    assert tinycnn.load(tmp_path / "m.npz").layers is None  # today's default: nothing named

    monkeypatch.setattr(_network, "DEFAULT_UNITS", 7)  # a later version's default
    assert CNNClassifier().fit(X, y).network_ != clf.network_
    loaded = tinycnn.load(tmp_path / "m.npz")
    assert loaded.layers == "conv32k3p1-relu-max2-conv64k3p1-relu-flatten-dense128-relu"
    assert loaded.network_ == clf.network_
    assert_same_weights(loaded, clf)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    quiet(loaded.set_params(warm_start=True).fit, X, y)
    assert loaded.network_ == clf.network_
    est, state = load_checkpoint(path)
    assert est.layers == loaded.layers
    quiet(est.fit, X, y, resume=state)
    assert est.network_ == clf.network_ and est.n_iter_ == 4


def test_a_loaded_stack_goes_on_training_as_the_original_would(stack_classifier, tmp_path):
    clf, X = stack_classifier
    y = clf.predict(X)
    clf.save(tmp_path / "m.npz")
    loaded = tinycnn.load(tmp_path / "m.npz").set_params(warm_start=True, max_iter=2)
    original = copy.deepcopy(clf).set_params(warm_start=True, max_iter=2)
    quiet(loaded.fit, X, y)
    quiet(original.fit, X, y)  # a warm start: the same weights, a fresh optimizer
    assert loaded.n_iter_ == 2 and loaded.network_ == clf.network_
    assert_same_weights(loaded, original)
    loaded.partial_fit(X, y)
    assert loaded.n_iter_ == 3


# ------------------------------------------------------------------------------ atomic writes


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_a_failed_save_leaves_the_old_file_and_no_temporary(
    classifier, tmp_path, monkeypatch, failing
):
    clf, X = classifier
    path = tmp_path / "model.npz"
    clf.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    if failing == "write":
        fill_disk_while_writing(monkeypatch)
    else:
        monkeypatch.setattr(os, failing, boom)
    other = quiet(CNNClassifier(n_filters=2, max_iter=1, random_state=5).fit, X, clf.predict(X))
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]
    assert tinycnn.load(path).n_filters == 4


def test_save_refuses_what_load_would_refuse(classifier, tmp_path):
    clf, _ = classifier
    for attribute, bad in (("input_std_", np.inf), ("input_std_", 0.0), ("input_mean_", np.nan)):
        broken = copy.deepcopy(clf)
        setattr(broken, attribute, np.full_like(getattr(clf, attribute), bad))
        with pytest.raises(ValueError, match="would refuse it"):
            broken.save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_missing_file_and_directory(tmp_path, classifier):
    with pytest.raises(FileNotFoundError):
        tinycnn.load(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError):
        classifier[0].save(tmp_path / "no" / "such" / "dir.npz")


# ------------------------------------------------------------------------------ checkpoints


def run_with_checkpoint(cls, kw, X, y, stop_at, path):
    """Fit with a callback that checkpoints after epoch ``stop_at`` and stops there."""

    def callback(est, state):
        if state.epoch == stop_at:
            save_checkpoint(path, est, state)
            return True
        return False

    return quiet(cls(**kw).fit, X, y, callback=callback)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("cls", [CNNClassifier, CNNRegressor])
@pytest.mark.parametrize("stop_at", [1, 4])
def test_resumed_run_ends_with_the_uninterrupted_weights(cls, solver, stop_at, tmp_path):
    X, labels, score = images(n=70)
    y = labels if cls is CNNClassifier else score
    kw = dict(solver=solver, learning_rate_init=0.01, max_iter=9, n_filters=3, batch_size=16)
    kw.update(shuffle=True, early_stopping=True, n_iter_no_change=50, random_state=11)
    full = quiet(cls(**kw).fit, X, y)
    path = tmp_path / "checkpoint.npz"
    run_with_checkpoint(cls, kw, X, y, stop_at, path)
    est, state = load_checkpoint(path)
    assert state.epoch == stop_at and est.n_iter_ == stop_at
    quiet(est.fit, X, y, resume=state)
    assert_same_weights(est, full)
    assert est.loss_curve_ == full.loss_curve_
    assert est.validation_scores_ == full.validation_scores_
    assert est.n_iter_ == full.n_iter_ == 9


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("cls", [CNNClassifier, CNNRegressor])
def test_a_resumed_stack_run_ends_with_the_uninterrupted_weights(cls, solver, tmp_path):
    X, labels, score = images(n=70)
    y = labels if cls is CNNClassifier else score
    dtype = np.float32 if solver == "sgd" else np.float64
    kw = dict(layers=STACK, solver=solver, learning_rate_init=0.01, max_iter=6, batch_size=16)
    kw.update(early_stopping=True, n_iter_no_change=50, random_state=11, dtype=dtype)
    full = quiet(cls(**kw).fit, X, y)
    path = tmp_path / "checkpoint.npz"
    run_with_checkpoint(cls, kw, X, y, 3, path)
    est, state = load_checkpoint(path)
    assert state.epoch == 3 and isinstance(state.params, list) and len(state.params) == 8
    assert state.best_params is not None and est.get_params() == full.get_params()
    quiet(est.fit, X, y, resume=state)
    assert_same_weights(est, full)
    assert est.loss_curve_ == full.loss_curve_
    assert est.validation_scores_ == full.validation_scores_


def test_resume_reproduces_early_stopping_from_every_epoch(tmp_path):
    X, y, _ = images(n=70)
    kw = dict(max_iter=60, early_stopping=True, n_iter_no_change=3, learning_rate_init=0.05)
    kw.update(random_state=3)
    full = CNNClassifier(**kw).fit(X, y)
    assert full.n_iter_ < 60  # it did stop early
    for stop_at in range(1, full.n_iter_ + 1):
        path = tmp_path / f"c{stop_at}.npz"
        run_with_checkpoint(CNNClassifier, kw, X, y, stop_at, path)
        est, state = load_checkpoint(path)
        assert state.finished == (stop_at == full.n_iter_)
        est.fit(X, y, resume=state)
        assert_same_weights(est, full)
        assert est.n_iter_ == full.n_iter_


def test_a_checkpoint_loads_as_the_model_at_its_epoch(tmp_path):
    X, y, _ = images()
    seen = {}

    def callback(est, state):
        if state.epoch == 2:
            save_checkpoint(tmp_path / "c.npz", est, state)
            seen["proba"] = est.predict_proba(X)
        return False

    quiet(CNNClassifier(max_iter=5, random_state=0).fit, X, y, callback=callback)
    model = tinycnn.load(tmp_path / "c.npz")
    assert model.n_iter_ == 2
    np.testing.assert_array_equal(model.predict_proba(X), seen["proba"])


def test_resume_refuses_a_state_that_does_not_fit(tmp_path):
    X, y, _ = images()
    path = tmp_path / "c.npz"
    run_with_checkpoint(CNNClassifier, dict(max_iter=5, random_state=0), X, y, 2, path)
    est, state = load_checkpoint(path)
    with pytest.raises(ValueError, match="resume .*solver='sgd'"):
        est.set_params(solver="sgd").fit(X, y, resume=state)
    with pytest.raises(ValueError, match="resume.params"):
        CNNClassifier(n_filters=3).fit(X, y, resume=state)
    with pytest.raises(ValueError, match="resume.params"):
        CNNClassifier().fit(X, np.arange(len(X)) % 3, resume=state)


def test_load_checkpoint_refuses_a_model_file_and_bad_arguments(classifier, tmp_path):
    clf, _ = classifier
    clf.save(tmp_path / "m.npz")
    with pytest.raises(ModelFileError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "m.npz")
    with pytest.raises(TypeError, match="TrainingState"):
        save_checkpoint(tmp_path / "c.npz", clf, {"epoch": 1})


# ------------------------------------------------------------------------------ the fuzz test


class Payload:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def build(members: dict[str, bytes], seal=True, compress=False) -> bytes:
    """A ZIP of raw members; with ``seal`` it carries a valid tinycnn checksum, so only the
    structural checks stand between it and the loader."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are on purpose
        with zipfile.ZipFile(buffer, "w") as archive:
            if seal:
                archive.comment = b"\0" * SEAL_LENGTH
            for name, data in members.items() if isinstance(members, dict) else members:
                method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
                archive.writestr(zipfile.ZipInfo(name, ZIP_DATE), data, compress_type=method)
    raw = buffer.getvalue()
    if seal:
        body = raw[:-SEAL_LENGTH]
        raw = body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode()
    return raw


def sealed(body: bytes) -> bytes:
    return body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode()


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def config_of(members):
    return json.loads(np.load(io.BytesIO(members["config.npy"])).tobytes())


def with_config(members, config) -> dict[str, bytes]:
    out = dict(members)
    out["config.npy"] = npy_bytes(np.frombuffer(json.dumps(config).encode(), np.uint8))
    return out


def crafted_variants(good: bytes, marker) -> list[tuple[str, bytes]]:
    """Files with a valid checksum but broken structure, each labelled."""
    members = members_of(good)
    config = config_of(members)
    out = []

    def add(label, member_dict, **kw):
        out.append((label, build(member_dict, **kw)))

    def edit(label, change):
        cfg = json.loads(json.dumps(config))
        change(cfg)
        add(label, with_config(members, cfg))

    add("resealed original, compressed", members, compress=True)
    for name in members:
        add(f"member {name} removed", {k: v for k, v in members.items() if k != name})
        renamed = {(k + "x" if k == name else k): v for k, v in members.items()}
        add(f"member {name} renamed", renamed)
    add("extra member", {**members, "extra.npy": npy_bytes(np.zeros(3))})
    listed = {**config["arrays"], "extra": {"shape": [3], "dtype": "<f8"}}
    add("extra member, listed", with_config({**members, "extra.npy": npy_bytes(np.zeros(3))},
                                            {**config, "arrays": listed}))  # fmt: skip
    # The first conv kernel and the last bias: params.kernel/params.b_fc in format 1,
    # params.0.kernel/params.<i>.b in format 2.
    weights = [n[: -len(".npy")] for n in members if n.startswith("params.")]
    ndims = {n: np.load(io.BytesIO(members[n + ".npy"])).ndim for n in weights}
    kernel_name = next(n for n in weights if ndims[n] == 4)
    bias_name = [n for n in weights if ndims[n] == 1][-1]
    add("member twice", [*members.items(), (bias_name + ".npy", members[bias_name + ".npy"])])
    kernel = np.load(io.BytesIO(members[kernel_name + ".npy"]))
    for label, array in [
        ("kernel wrong shape", kernel.reshape(kernel.shape[0], -1)),
        ("kernel wrong dtype", kernel.astype(np.float32)),
        ("kernel as ints", kernel.astype(np.int64)),
        ("kernel with NaN", np.where(kernel > 0, np.nan, kernel)),
        ("kernel fortran", np.asfortranarray(kernel.reshape(kernel.shape[0], -1))),
        ("kernel big-endian", kernel.astype(">f8")),
        ("kernel as strings", kernel.astype(str)),
        ("kernel complex", kernel.astype(complex)),
        ("kernel structured", np.zeros(kernel.shape, dtype=[("a", "<f8")])),
    ]:
        add(f"{label}, config unchanged", {**members, kernel_name + ".npy": npy_bytes(array)})

        def same(cfg, array=array):
            cfg["arrays"][kernel_name] = {"shape": list(array.shape), "dtype": array.dtype.str}

        cfg = json.loads(json.dumps(config))
        same(cfg)
        add(
            f"{label}, config matching",
            with_config({**members, kernel_name + ".npy": npy_bytes(array)}, cfg),
        )
    payload = Payload(marker)
    obj = np.empty(kernel.shape, dtype=object)
    obj.flat[0] = payload
    add("object array with a pickle", {**members, kernel_name + ".npy": npy_bytes(obj, True)})
    cfg = json.loads(json.dumps(config))
    cfg["arrays"][kernel_name]["dtype"] = "|O"
    add(
        "object array listed as object",
        with_config({**members, kernel_name + ".npy": npy_bytes(obj, True)}, cfg),
    )
    add("raw pickle as a member", {**members, kernel_name + ".npy": pickle.dumps(payload)})
    add("raw pickle as the config", {**members, "config.npy": pickle.dumps(payload)})
    out.append(("a sealed pickle file", pickle.dumps(payload) + SEAL_PREFIX + b"0" * 64))
    body = pickle.dumps(payload)
    out.append(("a validly sealed pickle file", sealed(body)))
    out.append(("a validly sealed .npy", sealed(npy_bytes(kernel))))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(2))
    header["shape"] = (10**12,)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    huge = buffer.getvalue() + bytes(16)
    cfg = json.loads(json.dumps(config))
    cfg["arrays"][bias_name]["shape"] = [10**12]
    add("a header claiming 8 TB", with_config({**members, bias_name + ".npy": huge}, cfg))

    def text(raw: bytes) -> bytes:
        return npy_bytes(np.frombuffer(raw, np.uint8))

    add("config not JSON", {**members, "config.npy": text(b"{nope")})
    add("config not UTF-8", {**members, "config.npy": text(b"\xff\xfe")})
    add("config nested too deep", {**members, "config.npy": text(b"[" * 10**5 + b"]" * 10**5)})
    add("config as floats", {**members, "config.npy": npy_bytes(np.zeros(4))})
    add("config 2-D", {**members, "config.npy": npy_bytes(np.zeros((2, 2), np.uint8))})
    add("config a JSON list", with_config(members, [1, 2]))

    def setter(*keys, value):
        def change(cfg):
            target = cfg
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = value

        return change

    def deleter(*keys):
        def change(cfg):
            target = cfg
            for key in keys[:-1]:
                target = target[key]
            del target[keys[-1]]

        return change

    version = config["format_version"]
    for other in sorted({1, 2, 3} - {version}):  # read as the other format, or an unknown one
        edit(f"format_version {other}", setter("format_version", value=other))
    for label, change in [
        ("format foreign", setter("format", value="other")),
        ("format_version as a string", setter("format_version", value=str(version))),
        ("format_version true", setter("format_version", value=True)),
        ("format_version as a float", setter("format_version", value=float(version))),
        ("class SVC", setter("class", value="SVC")),
        ("class regressor", setter("class", value="CNNRegressor")),
        ("kind unknown", setter("kind", value="weights")),
        ("kind checkpoint without state", setter("kind", value="checkpoint")),
        ("no arrays", deleter("arrays")),
        ("no params", deleter("params")),
        ("arrays a list", setter("arrays", value=[])),
        ("array entry without dtype", deleter("arrays", kernel_name, "dtype")),
        ("array entry negative shape", setter("arrays", bias_name, "shape", value=[-2])),
        ("array entry float shape", setter("arrays", bias_name, "shape", value=[2.0])),
        ("unknown parameter", setter("params", "gamma", value=1)),
        ("bad parameter", setter("params", "n_filters", value=-1)),
        ("n_filters disagrees", setter("params", "n_filters", value=7)),
        ("padding disagrees", setter("params", "padding", value="valid")),
        ("image_shape parameter disagrees", setter("params", "image_shape", value=[1, 3, 12])),
        ("dtype parameter int8", setter("params", "dtype", value="int8")),
        ("dtype parameter float32", setter("params", "dtype", value="float32")),
        ("image_shape parameter odd", setter("params", "image_shape", value=[0])),
        ("image_shape disagrees", setter("fitted", "image_shape", value=[1, 36, 1])),
        ("n_features_in disagrees", setter("fitted", "n_features_in", value=35)),
        ("n_outputs disagrees", setter("fitted", "n_outputs", value=3)),
        ("n_iter disagrees", setter("fitted", "n_iter", value=99)),
        ("loss_curve strings", setter("fitted", "loss_curve", value=["a", "b", "c"])),
        ("feature names wrong length", setter("fitted", "feature_names_in", value=["a"])),
        ("layers unparsable", setter("params", "layers", value="conv3k3-bogus")),
        ("layers a number", setter("params", "layers", value=3)),
        ("layers tuple with a two-layer token", setter("params", "layers", value=["max2-relu"])),
        ("layers tuple of a non-string", setter("params", "layers", value=[{"relu": 1}])),
    ]:
        edit(label, change)
    if version == 1:
        for label, change in [
            ("spec missing field", deleter("fitted", "spec", "pad")),
            ("spec zero height", setter("fitted", "spec", "height", value=0)),
            ("spec huge kernel", setter("fitted", "spec", "kernel_size", value=99)),
            ("spec more outputs", setter("fitted", "spec", "n_outputs", value=3)),
            ("spec bool stride", setter("fitted", "spec", "stride", value=True)),
        ]:
            edit(label, change)
    else:
        stack = config["network"]["layers"]
        for label, change in [
            ("network missing", deleter("network")),
            ("network a string", setter("network", value=stack)),
            ("network without input_shape", deleter("network", "input_shape")),
            ("network layers unparsable", setter("network", "layers", value=stack + "-bogus7")),
            ("network layers empty", setter("network", "layers", value="")),
            ("network layers a list", setter("network", "layers", value=stack.split("-"))),
            ("network one more output", setter("network", "layers", value=stack[:-1] + "9")),
            ("network not fitting", setter("network", "layers", value="conv1k99-" + stack)),
            ("network not flat", setter("network", "layers", value="conv1k1")),
            ("network another conv width",
             setter("network", "layers", value=stack.replace("conv", "conv1", 1))),
            ("input_shape wider", setter("network", "input_shape", value=[1, 6, 7])),
            ("input_shape 2-D", setter("network", "input_shape", value=[6, 6])),
            ("input_shape zero", setter("network", "input_shape", value=[0, 6, 6])),
            ("input_shape floats", setter("network", "input_shape", value=[1.0, 6, 6])),
            ("fitted spec added", setter("fitted", "spec", value={})),
            ("config key added", setter("notes", value="hello")),
            ("tinycnn_version a number", setter("tinycnn_version", value=1)),
            ("model with a state", setter("state", value={})),
        ]:  # fmt: skip
            edit(label, change)
    std = np.load(io.BytesIO(members["input_std.npy"]))
    add("input_std zero", {**members, "input_std.npy": npy_bytes(np.zeros_like(std))})
    add("classes unsorted", {**members, "classes.npy": npy_bytes(np.array(["dog", "cat"]))})
    add("classes repeated", {**members, "classes.npy": npy_bytes(np.array(["cat", "cat"]))})
    return out


@pytest.fixture(params=["shorthand", "stack", "format 1"])
def good_file(request, classifier, stack_classifier, tmp_path):
    """``(path, X)``: a valid model file (the shorthand's and a stack's, written now, and one
    written by the first version) and images it predicts."""
    path = tmp_path / "good.npz"
    if request.param == "format 1":
        path.write_bytes((FIXTURES / "v1_model_classifier_f64.npz").read_bytes())
        with np.load(FIXTURES / "v1_expected.npz") as expected:
            return path, expected["X_probe"]
    est, X = classifier if request.param == "shorthand" else stack_classifier
    est.save(path)
    return path, X


def test_fuzz_every_damaged_or_crafted_file_is_refused_naming_it(good_file, tmp_path):
    good_path, X = good_file
    good = good_path.read_bytes()
    expected = tinycnn.load(good_path).predict(X)
    marker = tmp_path / "pickle-was-executed"
    rng = np.random.default_rng(0)

    variants = [("empty", b"")]
    tail = range(len(good) - 90, len(good))
    cuts = sorted(set(range(0, len(good), max(1, len(good) // 200))) | set(tail))
    variants += [(f"truncated at {n}", good[:n]) for n in cuts]
    for position in [*rng.choice(len(good), 250, replace=False), *range(len(good) - 80, len(good))]:
        flipped = bytearray(good)
        flipped[position] ^= int(rng.integers(1, 256))
        variants.append((f"byte {position} flipped", bytes(flipped)))
    variants.append(("junk appended", good + b"\0"))
    variants.append(("junk prepended", b"\0" + good))
    variants.append(("unsealed copy", build(members_of(good), seal=False)))
    unsealed = io.BytesIO()
    with np.load(good_path, allow_pickle=False) as npz:
        np.savez(unsealed, **{name: npz[name] for name in npz.files})
    variants.append(("np.savez of the same arrays", unsealed.getvalue()))
    variants.append(("text", b"hello, this is not a model" * 10))
    variants += crafted_variants(good, marker)
    assert len(variants) >= 500

    # the payload is live: unpickling it really would create the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()

    path = tmp_path / "damaged.npz"
    wrong = []
    for label, data in variants:
        path.write_bytes(data)
        for loader in (load_model, load_checkpoint):
            try:
                loader(path)
            except ModelFileError as exc:
                if str(path) not in str(exc):
                    wrong.append((label, f"message does not name the file: {exc}"))
            except Exception as exc:  # noqa: BLE001 - the point is to catch anything else
                wrong.append((label, f"{type(exc).__name__}: {exc}"))
            else:
                wrong.append((label, f"{loader.__name__} accepted it"))
    assert not wrong, wrong[:20]
    assert not marker.exists(), "a pickle was executed"
    np.testing.assert_array_equal(tinycnn.load(good_path).predict(X), expected)  # still fine


def test_fuzz_resealed_random_damage_loads_or_is_refused_never_crashes(good_file, tmp_path):
    """Random bytes changed inside members, the checksum then recomputed: the structural checks
    alone must either refuse the file with ModelFileError or give a working estimator (a
    changed weight is still a valid model)."""
    good_path, X = good_file
    members = members_of(good_path.read_bytes())
    names = sorted(members)
    rng = np.random.default_rng(1)
    path = tmp_path / "damaged.npz"
    outcomes = {"refused": 0, "loaded": 0}
    for _ in range(300):
        name = names[int(rng.integers(len(names)))]
        data = bytearray(members[name])
        for position in rng.choice(len(data), int(rng.integers(1, 4)), replace=False):
            data[position] ^= int(rng.integers(1, 256))
        path.write_bytes(build({**members, name: bytes(data)}))
        try:
            est = load_model(path)
        except ModelFileError as exc:
            assert str(path) in str(exc)
            outcomes["refused"] += 1
        else:
            est.predict(X)  # a file that loads gives a model that works
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 50


@pytest.mark.parametrize("layers", [None, STACK])
def test_checkpoint_state_damage_is_refused(layers, tmp_path):
    X, y, _ = images()
    path = tmp_path / "c.npz"
    kw = dict(layers=layers, max_iter=5, early_stopping=True, random_state=0)
    run_with_checkpoint(CNNClassifier, kw, X, y, 2, path)
    members = members_of(path.read_bytes())
    config = config_of(members)
    assert config["kind"] == "checkpoint"
    assert {"state.optimizer.m_0", "state.best.0.kernel"} <= set(config["arrays"])
    state_members = [n for n in members if n.startswith("state.")]

    def variant(change):
        cfg = json.loads(json.dumps(config))
        change(cfg)
        return build(with_config(members, cfg))

    variants = [
        ("state null", variant(lambda c: c.update(state=None))),
        ("state missing key", variant(lambda c: c["state"].pop("seed"))),
        ("rng_state bogus", variant(lambda c: c["state"].update(rng_state={"bit_generator": 1}))),
        ("epoch disagrees", variant(lambda c: c["state"].update(epoch=3))),
        ("history short", variant(lambda c: c["state"]["history"]["loss_curve"].pop())),
        ("optimizer scalars gone", variant(lambda c: c["state"]["optimizer"].update(scalars={}))),
        ("optimizer array bad name",
         variant(lambda c: c["state"]["optimizer"]["arrays"].update(w_9="state.best.kernel"))),
        ("best_params renamed", variant(lambda c: c["state"].update(best_params=["x"] * 4))),
        ("finished not bool", variant(lambda c: c["state"].update(finished="yes"))),
    ]  # fmt: skip
    for name in state_members:
        variants.append((f"{name} removed", build({k: v for k, v in members.items() if k != name})))
    moment = np.load(io.BytesIO(members["state.optimizer.m_0.npy"]))
    cfg = json.loads(json.dumps(config))
    cfg["arrays"]["state.optimizer.m_0"]["shape"] = [moment.size]
    flat_moment = {**members, "state.optimizer.m_0.npy": npy_bytes(moment.ravel())}
    variants.append(("moment of the wrong shape", build(with_config(flat_moment, cfg))))
    # No moments for the last parameter (Adam would silently never move it): refused.
    last = len(config["state"]["optimizer"]["arrays"]) // 2 - 1
    cfg = json.loads(json.dumps(config))
    partial = dict(members)
    for key in (f"m_{last}", f"v_{last}"):
        del cfg["arrays"][f"state.optimizer.{key}"], cfg["state"]["optimizer"]["arrays"][key]
        del partial[f"state.optimizer.{key}.npy"]
    variants.append(("moments of some parameters only", build(with_config(partial, cfg))))
    for label, data in variants:
        path.write_bytes(data)
        with pytest.raises(ModelFileError, match="c.npz"):
            load_checkpoint(path)
            pytest.fail(f"accepted: {label}")


def stack_file_edited(stack_classifier, tmp_path, change_config=None, change_members=None):
    """A stack's model file with its config or members changed, then sealed validly."""
    clf, _ = stack_classifier
    clf.save(tmp_path / "good.npz")
    members = members_of((tmp_path / "good.npz").read_bytes())
    config = config_of(members)
    if change_members is not None:
        change_members(members, config)
    if change_config is not None:
        change_config(config)
    path = tmp_path / "lie.npz"
    path.write_bytes(build(with_config(members, config)))
    return path


def _wrong_shape(members, config):
    members["params.3.kernel.npy"] = npy_bytes(np.zeros((2, 3, 3, 3)))
    config["arrays"]["params.3.kernel"] = {"shape": [2, 3, 3, 3], "dtype": "<f8"}


def _extra(members, config):
    members["params.4.kernel.npy"] = npy_bytes(np.zeros((2, 2, 2, 2)))
    config["arrays"]["params.4.kernel"] = {"shape": [2, 2, 2, 2], "dtype": "<f8"}


def _missing(members, config):
    for name in ("params.6.W", "params.6.b"):
        del members[name + ".npy"], config["arrays"][name]


def _set_network(layers):
    return lambda config: config["network"].update(layers=layers)


@pytest.mark.parametrize(
    "lie, change_config, change_members, reason",
    [
        ("stack that does not parse", _set_network("conv3k3p1-relu-maxpool2"), None,
         "network.layers.*'maxpool2'.*is not max<size>"),
        ("stack not fitting the input shape", _set_network("conv3k9-relu-flatten-dense2"), None,
         r"not a stack on \[1, 6, 6\].*does not fit"),
        ("stack other than the parameters'", _set_network("conv3k3p1-relu-flatten-dense2"), None,
         "stored network 'conv3k3p1-relu-flatten-dense2' is not the one the parameters give"),
        ("parameter of the wrong shape", None, _wrong_shape,
         r"params.3.kernel has shape \(2, 3, 3, 3\).*needs \(2, 3, 2, 2\)"),
        ("extra member", None, _extra, r"members not used by the model: \[.params.4.kernel.\]"),
        ("missing members", None, _missing, "member 'params.6.W' is missing"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)  # fmt: skip
def test_a_sealed_stack_file_that_lies_is_refused_naming_the_lie(
    lie, change_config, change_members, reason, stack_classifier, tmp_path
):
    path = stack_file_edited(stack_classifier, tmp_path, change_config, change_members)
    with pytest.raises(ModelFileError, match=reason) as info:
        load_model(path)
    assert str(path) in str(info.value)


KILLED_WRITER = """
import sys, warnings
import numpy as np
from tinycnn import CNNClassifier
from tinycnn.io import save_checkpoint
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 1, 6, 6)); y = np.arange(40) % 2
path = sys.argv[1]
states = []
CNNClassifier(max_iter=3, random_state=0).fit(X, y, callback=lambda e, s: states.append((e, s)))
est, state = states[-1]
save_checkpoint(path, est, state)
print("ready", flush=True)
while True:  # rewrite the checkpoint until killed
    save_checkpoint(path, est, state)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_writer_killed_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "checkpoint.npz"
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.05)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        est, state = load_checkpoint(path)
        assert state.epoch == 3 and est.n_iter_ == 3


def test_the_container_knows_nothing_of_estimators_or_training():
    """tinycnn.files.container imports only the writer rule, the header checks, the errors
    and the JSON helpers (besides the standard library and NumPy)."""
    import ast

    import tinycnn.files.container as container

    tree = ast.parse(Path(container.__file__).read_text())
    relative = {
        "." * node.level + (node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level
    }
    assert relative == {".._files", ".._npy", "..errors", "._json"}
