"""The ``tinycnn`` command on real data: image folders (PNG and JPEG, grayscale and colour, mixed
sizes), IDX folders, mnist-5k and a fetched set; predictions on image files to CSV; the pictures
of a run; and every damaged input ending in one line on stderr, exit 1, naming the file."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    DAMAGED_IDX_FOLDERS,
    DAMAGED_IMAGE_FOLDERS,
    LocalServer,
    damage_idx_folder,
    damaged_image_folder,
    idx_bytes,
    idx_set,
    make_idx_folder,
    make_image_folder,
)
from test_cli import FAST, assert_one_line_error, assert_valid_png, run_main, run_tinycnn

import tinycnn
from tinycnn import cli
from tinycnn.datasets import download as dl
from tinycnn.datasets import load_dataset, split_dataset

CLASSIFICATION_FILES = ("confusion.png", "errors.png")


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> tuple[Path, Path]:
    """``tinycnn train`` through the interpreter on a colour folder of PNG and JPEG files of
    mixed sizes, with junk beside the images. Returns (image folder, run folder)."""
    base = tmp_path_factory.mktemp("colour")
    pics = make_image_folder(base / "pics", classes=("cat", "dog", "owl"), per_class=8,
                             sizes=((12, 12), (12, 12), (20, 15)), colour=True)  # fmt: skip
    (pics / "dog" / "Thumbs.db").write_bytes(b"junk")
    (pics / ".DS_Store").write_bytes(b"junk")
    out = base / "run"
    result = run_tinycnn("train", "--data", str(pics), "--out", str(out), *FAST, "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "skipped 2 files" in result.stdout
    return pics, out


def test_train_on_an_image_folder_writes_the_run_and_its_pictures(colour_run):
    pics, out = colour_run
    for name in ("model.npz", "metrics.json", "run.json", *CLASSIFICATION_FILES):
        assert (out / name).is_file(), name
    for name in CLASSIFICATION_FILES:
        assert_valid_png(out / name)
    assert not (out / "predicted_vs_true.png").exists()
    est = tinycnn.load(out / "model.npz")
    assert est.classes_.tolist() == ["cat", "dog", "owl"]  # the class names are in the model
    assert tuple(est.image_shape_) == (3, 12, 12)  # colour; the most common size
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_test"], metrics["split"]) == (18, 6, "held-out")
    record = json.loads((out / "run.json").read_text())
    assert record["split"]["split"] == "held-out" and record["split"]["n_test"] == 6
    assert record["data"]["class_names"] == ["cat", "dog", "owl"]
    assert record["data"]["skipped"] == 2


def test_predict_on_image_files_writes_names_and_probabilities(colour_run, tmp_path):
    pics, out = colour_run
    single = pics / "cat" / "cat_2.png"  # one of the 20x15 files: resized as in training
    output = tmp_path / "predictions.csv"
    result = run_tinycnn("predict", "--model", str(out / "model.npz"), "--input",
                         str(pics / "owl"), str(single), "--output", str(output))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 9 predictions" in result.stdout
    header, rows = read_csv(output)
    assert header == ["path", "label", "p_cat", "p_dog", "p_owl"]
    paths = [row[0] for row in rows]
    assert paths == [str(pics / "owl" / f"owl_{i}.{'png' if i % 2 == 0 else 'jpg'}")
                     for i in range(8)] + [str(single)]  # fmt: skip
    proba = np.array([[float(v) for v in row[2:]] for row in rows])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert [row[1] for row in rows] == np.array(["cat", "dog", "owl"])[proba.argmax(1)].tolist()
    # The same reading as training: the folder read at the model's size gives the same answers.
    X, y, _ = load_dataset(pics, image_size=(12, 12), channels=3)
    est = tinycnn.load(out / "model.npz")
    owl = np.flatnonzero(y == "owl")
    np.testing.assert_allclose(proba[:8], est.predict_proba(X[owl]), rtol=1e-12)
    cat2 = np.flatnonzero(y == "cat")[2]
    np.testing.assert_allclose(proba[8], est.predict_proba(X[cat2 : cat2 + 1])[0], rtol=1e-12)


def test_evaluate_an_image_folder_and_draw_its_pictures(colour_run, tmp_path, capsys):
    pics, out = colour_run
    metrics = json.loads((out / "metrics.json").read_text())
    argv = ["evaluate", "--model", out / "model.npz", "--data", pics, "--split", "test",
            "--seed", "1", "--json", "--plots", tmp_path]  # fmt: skip
    code, stdout, err = run_main(argv, capsys)
    assert code == 0, err
    scores = json.loads(stdout)
    assert scores["n_samples"] == 6 and scores["accuracy"] == metrics["test_accuracy"]
    for name in CLASSIFICATION_FILES:
        assert_valid_png(tmp_path / name)
    code, _, err = run_main([*argv[:-1], tmp_path / "missing"], capsys)
    assert_one_line_error(code, err, "missing")


def test_grayscale_folder_with_image_size(tmp_path, capsys):
    pics = make_image_folder(tmp_path / "gray", classes=("a", "b"), per_class=6,
                             sizes=((9, 9), (14, 11)), formats=("png", "jpeg", "bmp"))  # fmt: skip
    out = tmp_path / "run"
    code, stdout, err = run_main(
        ["train", "--data", pics, "--out", out, *FAST, "--image-size", "7", "8"], capsys
    )
    assert code == 0, err
    assert "skipped" not in stdout
    est = tinycnn.load(out / "model.npz")
    assert tuple(est.image_shape_) == (1, 7, 8)
    record = json.loads((out / "run.json").read_text())
    assert record["options"]["image_size"] == [7, 8]
    code, _, err = run_main(
        ["predict", "--model", out / "model.npz", "--input", pics / "a" / "a_1.jpeg",
         "--output", tmp_path / "p.csv"], capsys)  # fmt: skip
    assert code == 0, err
    header, rows = read_csv(tmp_path / "p.csv")
    assert header == ["path", "label", "p_a", "p_b"] and len(rows) == 1
    # evaluate reads the folder as training did: at the model's size, not the files' own.
    code, stdout, err = run_main(["evaluate", "--model", out / "model.npz", "--data", pics,
                                  "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["n_samples"] == 12


def test_idx_folder_trains_on_train_and_tests_on_t10k(tmp_path, capsys):
    folder = make_idx_folder(tmp_path / "idx", gz=True)
    out = tmp_path / "run"
    code, _, err = run_main(["train", "--data", folder, "--out", out, *FAST, "--quiet"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_test"], metrics["split"]) == (60, 20, "t10k")
    record = json.loads((out / "run.json").read_text())
    assert record["split"] == {"split": "t10k", "n_train": 60, "n_test": 20}
    est = tinycnn.load(out / "model.npz")
    t10k = idx_set()
    expected = est.score(t10k["t10k-images-idx3-ubyte"][:, None] * 1.0,
                         t10k["t10k-labels-idx1-ubyte"])  # fmt: skip
    assert metrics["test_accuracy"] == expected
    code, stdout, err = run_main(["evaluate", "--model", out / "model.npz", "--data", folder,
                                  "--split", "test", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == metrics["test_accuracy"]
    assert json.loads(stdout)["n_samples"] == 20


def test_mnist_5k_is_offline_with_its_fixed_split():
    # `tinycnn train --data mnist-5k` itself runs in tests/test_examples.py (the README's table).
    X, y, info = load_dataset("mnist-5k")
    assert X.shape == (5000, 1, 28, 28) and X.max() == 255
    X_train, X_test, y_train, y_test, split = split_dataset(X, y, info, seed=7)
    assert split == {"split": "mnist-5k-test", "n_train": 4000, "n_test": 1000}
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10


@pytest.fixture
def fashion_server(monkeypatch, tmp_path):
    """'fashion-mnist' in the table pointed at a local server of a small set; the cache in
    tmp_path through $TINYCNN_DATA."""
    import gzip

    files = {f"{n}.gz": gzip.compress(idx_bytes(a), mtime=0) for n, a in idx_set().items()}
    local = LocalServer(files)
    table = {n: dl.Checked(len(d), ("md5", hashlib.md5(d).hexdigest())) for n, d in files.items()}
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", dl.Source(local.url, table))
    monkeypatch.setenv("TINYCNN_DATA", str(tmp_path / "cache"))
    yield local
    local.stop()


def test_a_fetched_set_by_name_downloads_once(fashion_server, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", "fashion-mnist", "--out", out, *FAST, "--quiet"]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    assert len(fashion_server.requests) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_test"], metrics["split"]) == (20, "t10k")
    fashion_server.stop()  # the second run reads the cache, without the network
    code, _, err = run_main([*argv, "--overwrite"], capsys)
    assert code == 0, err
    # Fashion-MNIST's class names in the pictures come from the data set.
    assert_valid_png(out / "confusion.png")


def test_a_failed_download_is_one_line_naming_the_url(fashion_server, tmp_path, capsys):
    fashion_server.behaviour["t10k-images-idx3-ubyte.gz"] = "drop"
    code, _, err = run_main(["train", "--data", "fashion-mnist", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, fashion_server.url + "t10k-images-idx3-ubyte.gz", "by hand")
    assert code == cli.EXIT_FAILURE
    assert not (tmp_path / "cache" / "fashion-mnist").exists()


# ---------------------------------------------------------------- damaged inputs


@pytest.mark.parametrize("case", DAMAGED_IMAGE_FOLDERS)
def test_damaged_image_folder_is_one_line_naming_it(case, tmp_path, capsys):
    root, bad = damaged_image_folder(tmp_path, case)
    out = tmp_path / "out"
    code, stdout, err = run_main(["train", "--data", root, "--out", out], capsys)
    assert_one_line_error(code, err, str(bad))
    assert code == cli.EXIT_FAILURE and stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("case", DAMAGED_IDX_FOLDERS)
def test_damaged_idx_folder_is_one_line_naming_it(case, tmp_path, capsys):
    folder = make_idx_folder(tmp_path / "idx", gz=False)
    named = damage_idx_folder(folder, case)
    code, _, err = run_main(["train", "--data", folder, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, *(str(p) for p in named))
    assert code == cli.EXIT_FAILURE


def test_damaged_input_through_the_interpreter_has_no_traceback(tmp_path):
    root, bad = damaged_image_folder(tmp_path, "bomb")
    result = run_tinycnn("train", "--data", str(root), "--out", str(tmp_path / "out"))
    assert_one_line_error(result.returncode, result.stderr, str(bad), "decompression bomb")
    assert result.returncode == cli.EXIT_FAILURE


def test_predict_refuses_bad_image_inputs(colour_run, tmp_path, capsys):
    pics, out = colour_run
    model = out / "model.npz"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    output = tmp_path / "p.csv"
    cases = [
        ([pics / "cat", broken], output, str(broken)),
        ([notes], output, "not an image file"),
        ([empty], output, "no image files"),
        ([tmp_path / "nothing.png"], output, "no such file"),
        ([pics / "cat"], tmp_path / "p.npy", "CSV"),
    ]
    for inputs, target, fragment in cases:
        code, _, err = run_main(["predict", "--model", model, "--input", *inputs,
                                 "--output", target], capsys)  # fmt: skip
        assert_one_line_error(code, err, fragment)
        assert code == cli.EXIT_FAILURE
        assert not output.exists() and not (tmp_path / "p.npy").exists()


def test_image_size_is_refused_for_other_data(tmp_path, capsys):
    argv = ["train", "--data", "digits", "--out", tmp_path / "o", "--image-size", "8", "8"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "--image-size applies to folders of image files")
    code, _, err = run_main([*argv[:-2], "0", "8"], capsys)
    assert_one_line_error(code, err, "--image-size")
    assert code == cli.EXIT_USAGE


def test_test_labels_the_training_split_lacks_are_one_line(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, array in idx_set().items():
        if name == "t10k-labels-idx1-ubyte":
            array = array.copy()
            array[:2] = 7  # a class that training never sees
        (folder / name).write_bytes(idx_bytes(array))
    out = tmp_path / "run"
    code, _, err = run_main(["train", "--data", folder, "--out", out, *FAST], capsys)
    assert_one_line_error(code, err, "test split holds labels", "(7)")
    assert not (out / "checkpoint.npz").exists()  # refused before any training


def test_data_too_small_for_a_test_split_is_one_line(tmp_path, capsys):
    data = tmp_path / "tiny.npz"
    np.savez(data, X=np.arange(16.0).reshape(4, 4), y=np.array([0, 1, 0, 1]))
    code, _, err = run_main(["train", "--data", data, "--out", tmp_path / "run", *FAST], capsys)
    assert_one_line_error(code, err, "cannot hold out a test split of its 4 samples")
