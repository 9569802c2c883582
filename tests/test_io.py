"""Model files and checkpoints: exact round trips, atomic writes, exact resume, and a fuzz test
in which every damaged or crafted file is refused with ModelFileError naming it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import warnings
import zipfile

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
    assert config["format"] == "tinycnn-model" and config["format_version"] == 1
    assert config["class"] == "CNNClassifier" and config["kind"] == "model"
    assert config["params"]["n_filters"] == 4 and config["params"]["dtype"] == "float64"


def test_same_model_same_bytes(classifier, tmp_path):
    clf, _ = classifier
    clf.save(tmp_path / "a.npz")
    clf.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


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
    import copy

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
    add("member without .npy", {**members, "notes.txt": b"hello"})
    add("member twice", [*members.items(), ("params.b_fc.npy", members["params.b_fc.npy"])])
    kernel = np.load(io.BytesIO(members["params.kernel.npy"]))
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
        add(f"{label}, config unchanged", {**members, "params.kernel.npy": npy_bytes(array)})

        def same(cfg, array=array):
            cfg["arrays"]["params.kernel"] = {"shape": list(array.shape), "dtype": array.dtype.str}

        cfg = json.loads(json.dumps(config))
        same(cfg)
        add(
            f"{label}, config matching",
            with_config({**members, "params.kernel.npy": npy_bytes(array)}, cfg),
        )
    payload = Payload(marker)
    obj = np.empty(kernel.shape, dtype=object)
    obj.flat[0] = payload
    add("object array with a pickle", {**members, "params.kernel.npy": npy_bytes(obj, True)})
    cfg = json.loads(json.dumps(config))
    cfg["arrays"]["params.kernel"]["dtype"] = "|O"
    add(
        "object array listed as object",
        with_config({**members, "params.kernel.npy": npy_bytes(obj, True)}, cfg),
    )
    add("raw pickle as a member", {**members, "params.kernel.npy": pickle.dumps(payload)})
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
    cfg["arrays"]["params.b_fc"]["shape"] = [10**12]
    add("a header claiming 8 TB", with_config({**members, "params.b_fc.npy": huge}, cfg))

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

    for label, change in [
        ("format foreign", setter("format", value="other")),
        ("format_version 2", setter("format_version", value=2)),
        ("format_version '1'", setter("format_version", value="1")),
        ("format_version true", setter("format_version", value=True)),
        ("format_version 1.0", setter("format_version", value=1.0)),
        ("class SVC", setter("class", value="SVC")),
        ("class regressor", setter("class", value="CNNRegressor")),
        ("kind unknown", setter("kind", value="weights")),
        ("kind checkpoint without state", setter("kind", value="checkpoint")),
        ("no arrays", deleter("arrays")),
        ("no params", deleter("params")),
        ("arrays a list", setter("arrays", value=[])),
        ("array entry without dtype", deleter("arrays", "params.kernel", "dtype")),
        ("array entry negative shape", setter("arrays", "params.b_fc", "shape", value=[-2])),
        ("array entry float shape", setter("arrays", "params.b_fc", "shape", value=[2.0])),
        ("unknown parameter", setter("params", "gamma", value=1)),
        ("bad parameter", setter("params", "n_filters", value=-1)),
        ("n_filters disagrees", setter("params", "n_filters", value=7)),
        ("padding disagrees", setter("params", "padding", value="valid")),
        ("image_shape parameter disagrees", setter("params", "image_shape", value=[1, 3, 12])),
        ("dtype parameter int8", setter("params", "dtype", value="int8")),
        ("dtype parameter float32", setter("params", "dtype", value="float32")),
        ("image_shape parameter odd", setter("params", "image_shape", value=[0])),
        ("spec missing field", deleter("fitted", "spec", "pad")),
        ("spec zero height", setter("fitted", "spec", "height", value=0)),
        ("spec huge kernel", setter("fitted", "spec", "kernel_size", value=99)),
        ("spec more outputs", setter("fitted", "spec", "n_outputs", value=3)),
        ("spec bool stride", setter("fitted", "spec", "stride", value=True)),
        ("image_shape disagrees", setter("fitted", "image_shape", value=[1, 36, 1])),
        ("n_features_in disagrees", setter("fitted", "n_features_in", value=35)),
        ("n_iter disagrees", setter("fitted", "n_iter", value=99)),
        ("loss_curve strings", setter("fitted", "loss_curve", value=["a", "b", "c"])),
        ("feature names wrong length", setter("fitted", "feature_names_in", value=["a"])),
    ]:
        edit(label, change)
    std = np.load(io.BytesIO(members["input_std.npy"]))
    add("input_std zero", {**members, "input_std.npy": npy_bytes(np.zeros_like(std))})
    add("classes unsorted", {**members, "classes.npy": npy_bytes(np.array(["dog", "cat"]))})
    add("classes repeated", {**members, "classes.npy": npy_bytes(np.array(["cat", "cat"]))})
    return out


def test_fuzz_every_damaged_or_crafted_file_is_refused_naming_it(classifier, tmp_path):
    clf, X = classifier
    good_path = tmp_path / "good.npz"
    clf.save(good_path)
    good = good_path.read_bytes()
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
    assert tinycnn.load(good_path).n_filters == 4  # the original is fine


def test_fuzz_resealed_random_damage_loads_or_is_refused_never_crashes(classifier, tmp_path):
    """Random bytes changed inside members, the checksum then recomputed: the structural checks
    alone must either refuse the file with ModelFileError or give a working estimator (a
    changed weight is still a valid model)."""
    clf, X = classifier
    clf.save(tmp_path / "good.npz")
    members = members_of((tmp_path / "good.npz").read_bytes())
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


def test_checkpoint_state_damage_is_refused(tmp_path):
    X, y, _ = images()
    path = tmp_path / "c.npz"
    run_with_checkpoint(
        CNNClassifier, dict(max_iter=5, early_stopping=True, random_state=0), X, y, 2, path
    )
    members = members_of(path.read_bytes())
    config = config_of(members)
    assert config["kind"] == "checkpoint"
    assert {"state.optimizer.m_0", "state.best.kernel"} <= set(config["arrays"])
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
    for label, data in variants:
        path.write_bytes(data)
        with pytest.raises(ModelFileError, match="c.npz"):
            load_checkpoint(path)
            pytest.fail(f"accepted: {label}")


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
