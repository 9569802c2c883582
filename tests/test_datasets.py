"""tinycnn.datasets: the built-in sets as they come, deterministic synthetic images, and a user's
.npz checked so that every malformed file is refused with a message naming it."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tinycnn import datasets
from tinycnn.datasets import DatasetError, infer_task, load_dataset, read_array_file


def test_digits_is_load_digits_exactly():
    from sklearn.datasets import load_digits

    X, y, info = load_dataset("digits")
    expected = load_digits()
    np.testing.assert_array_equal(X, expected.data)
    np.testing.assert_array_equal(y, expected.target)
    assert X.shape == (1797, 64) and X.min() == 0 and X.max() == 16
    assert info.image_shape == (1, 8, 8)
    assert info.task == "classification"
    assert info.n_samples == 1797


@pytest.mark.parametrize("name", ["shapes", "shapes-size"])
def test_synthetic_sets_are_deterministic(name):
    X1, y1, info1 = load_dataset(name)
    X2, y2, info2 = load_dataset(name)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert info1 == info2
    assert X1.shape == (datasets.SYNTHETIC_SAMPLES, 1, 12, 12)
    assert info1.image_shape == (1, 12, 12)
    assert np.isfinite(X1).all()


def test_shapes_is_a_balanced_classification_task():
    X, y, info = load_dataset("shapes")
    assert info.task == "classification"
    counts = np.bincount(y)
    assert len(counts) == len(datasets.SHAPE_NAMES)
    assert counts.min() == counts.max()


def test_shapes_differ_by_seed_and_images_differ_by_class():
    X0, y0 = datasets.make_shapes(n_samples=40, seed=0)
    X1, _ = datasets.make_shapes(n_samples=40, seed=1)
    assert not np.array_equal(X0, X1)
    # Noise-free, every class draws a different set of pixel counts: outline, cross, disk, bar.
    Xc, yc = datasets.make_shapes(n_samples=400, noise=0.0)
    ink = Xc.sum(axis=(1, 2, 3))
    for kind in range(4):
        assert ink[yc == kind].min() > 0
    # A filled disk of half-extent h covers more pixels than the cross of the same h (4h+1).
    assert np.median(ink[yc == 2]) > np.median(ink[yc == 1])


def test_shape_sizes_is_a_regression_on_the_radius():
    X, y, info = load_dataset("shapes-size")
    assert info.task == "regression"
    assert y.dtype == np.float64
    assert 1.0 <= y.min() and y.max() <= 4.0
    # Without noise the ink grows with the radius (about pi * r^2).
    Xc, r = datasets.make_shape_sizes(n_samples=200, noise=0.0)
    ink = Xc.sum(axis=(1, 2, 3))
    assert np.corrcoef(ink, np.pi * r**2)[0, 1] > 0.99


@pytest.mark.parametrize(
    ("y", "task"),
    [
        (np.array([0, 1, 2, 1, 0]), "classification"),
        (np.array([0.0, 1.0, 2.0, 1.0]), "classification"),
        (np.array([True, False, True]), "classification"),
        (np.array([-1, 1, 1, -1], dtype=np.int8), "classification"),
        (np.array([0.5, 1.0, 2.0]), "regression"),
        (np.arange(200), "regression"),
        (np.zeros((4, 2)), "regression"),
        (np.array([[0], [1], [0]]), "regression"),
    ],
)
def test_infer_task(y, task):
    assert infer_task(y) == task


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_task_can_be_overridden(tmp_path):
    path = _write_npz(tmp_path / "d.npz", X=np.zeros((6, 1, 4, 4)), y=np.array([0, 1, 2] * 2))
    _, y, info = load_dataset(path, task="regression")
    assert info.task == "regression" and y.dtype == np.float64
    _, _, info = load_dataset(path)
    assert info.task == "classification"
    assert info.source == os.path.abspath(path)


@pytest.mark.parametrize(
    ("X_shape", "extra", "image_shape"),
    [
        ((5, 2, 3, 4), {}, (2, 3, 4)),
        ((5, 6, 7), {}, (1, 6, 7)),
        ((5, 49), {}, (1, 7, 7)),
        ((5, 10), {}, (1, 1, 10)),
        ((5, 12), {"image_shape": np.array([3, 2, 2])}, (3, 2, 2)),
    ],
)
def test_npz_image_shapes(tmp_path, X_shape, extra, image_shape):
    X = np.random.default_rng(0).normal(size=X_shape)
    path = _write_npz(tmp_path / "d.npz", X=X, y=np.arange(5) % 2, **extra)
    X_read, y, info = load_dataset(path)
    np.testing.assert_array_equal(X_read, X)
    assert info.image_shape == image_shape
    assert info.n_samples == 5


def test_npz_integer_X_is_read_as_float(tmp_path):
    path = _write_npz(tmp_path / "d.npz", X=np.arange(32).reshape(2, 16), y=[0, 1])
    X, _, _ = load_dataset(path)
    assert X.dtype == np.float64


BAD_NPZ = {
    "missing X": (dict(y=np.zeros(3)), "missing X"),
    "missing y": (dict(X=np.zeros((3, 4))), "missing y"),
    "missing both": (dict(Z=np.zeros(3)), "missing X and y"),
    "string X": (dict(X=np.array([["1", "2"], ["3", "4"]]), y=[0, 1]), "real numbers"),
    "complex y": (dict(X=np.zeros((2, 4)), y=np.array([1j, 2j])), "real numbers"),
    "1-D X": (dict(X=np.zeros(4), y=np.zeros(4)), "X must be"),
    "5-D X": (dict(X=np.zeros((2, 1, 1, 2, 2)), y=[0, 1]), "X must be"),
    "3-D y": (dict(X=np.zeros((2, 4)), y=np.zeros((2, 1, 1))), "y must be"),
    "sample counts": (dict(X=np.zeros((3, 4)), y=[0, 1]), "different numbers of samples"),
    "empty X": (dict(X=np.zeros((0, 4)), y=np.zeros(0)), "empty"),
    "one sample": (dict(X=np.zeros((1, 4)), y=[0]), "too little data"),
    "NaN in X": (dict(X=np.array([[0.0, np.nan], [1, 2]]), y=[0, 1]), "NaN or infinity"),
    "inf in y": (dict(X=np.zeros((2, 4)), y=[0.5, np.inf]), "NaN or infinity"),
    "image_shape product": (
        dict(X=np.zeros((2, 12)), y=[0, 1], image_shape=np.array([1, 3, 3])),
        "holds 9 values",
    ),
    "image_shape floats": (
        dict(X=np.zeros((2, 4)), y=[0, 1], image_shape=np.array([1.0, 2.0, 2.0])),
        "three positive integers",
    ),
    "image_shape length": (
        dict(X=np.zeros((2, 4)), y=[0, 1], image_shape=np.array([2, 2])),
        "three positive integers",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_is_refused_naming_the_file(tmp_path, case):
    arrays, fragment = BAD_NPZ[case]
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=fragment) as info:
        load_dataset(path)
    assert path in str(info.value)


def test_object_array_is_refused_without_unpickling(tmp_path):
    path = str(tmp_path / "objects.npz")
    np.savez(path, X=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="pickle") as info:
        load_dataset(path)
    assert path in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not numpy", b"PK\x03\x04" + b"\x00" * 20],
    ids=["empty", "text", "broken zip"],
)
def test_damaged_files_are_refused(tmp_path, content):
    path = tmp_path / "damaged.npz"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_truncated_npz_is_refused(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, X=np.ones((20, 16)), y=np.arange(20) % 2)
    data = good.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(DatasetError) as info:
            load_dataset(str(path))
        assert str(path) in str(info.value)


def test_npy_is_not_a_data_set(tmp_path):
    path = str(tmp_path / "X.npy")
    np.save(path, np.zeros((3, 4)))
    with pytest.raises(DatasetError, match="needs X and y"):
        load_dataset(path)


def test_missing_file_raises_oserror_and_an_empty_folder_is_no_image_folder(tmp_path):
    missing = str(tmp_path / "nothing.npz")
    with pytest.raises(OSError, match="no such file") as info:
        load_dataset(missing)
    assert missing in str(info.value)
    folder = tmp_path / "folder.npz"  # a folder is read as a folder, whatever its name
    folder.mkdir()
    with pytest.raises(DatasetError, match="no class subfolders") as info:
        load_dataset(str(folder))
    assert str(folder) in str(info.value)


def test_unknown_name_lists_the_choices():
    with pytest.raises(DatasetError, match="unknown data set 'mnist-6k'") as info:
        load_dataset("mnist-6k")
    for name in datasets.BUILTIN_DATASETS:
        assert name in str(info.value)


def test_bad_task_and_classification_of_2d_y(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        load_dataset("digits", task="clustering")
    path = _write_npz(tmp_path / "d.npz", X=np.zeros((4, 4)), y=np.zeros((4, 2)))
    with pytest.raises(DatasetError, match="classification needs a 1-D y"):
        load_dataset(path, task="classification")


def test_read_array_file_npy_and_npz(tmp_path):
    X = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "X.npy", X)
    np.savez(tmp_path / "X.npz", X=X, other=np.zeros(2))
    np.testing.assert_array_equal(read_array_file(tmp_path / "X.npy"), X)
    np.testing.assert_array_equal(read_array_file(tmp_path / "X.npz"), X)
    np.savez(tmp_path / "noX.npz", data=X)
    with pytest.raises(DatasetError, match="no array named 'X'"):
        read_array_file(tmp_path / "noX.npz")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(DatasetError, match="real numbers"):
        read_array_file(tmp_path / "s.npy")


def test_held_out_split_is_a_stratified_quarter_fixed_by_the_seed():
    X, y, _ = load_dataset("digits")
    X_train, X_test, y_train, y_test = datasets.held_out_split(X, y, "classification", seed=5)
    assert len(y_test) == 450 and len(y_train) == 1347
    # Stratified: every class keeps its share to within one sample.
    for label in range(10):
        assert abs((y_test == label).sum() - 0.25 * (y == label).sum()) <= 1
    again = datasets.held_out_split(X, y, "classification", seed=5)
    np.testing.assert_array_equal(again[1], X_test)
    other = datasets.held_out_split(X, y, "classification", seed=6)
    assert not np.array_equal(other[1], X_test)
    # Regression targets are not stratified (a float y has no classes).
    _, _, _, r_test = datasets.held_out_split(X, y.astype(float) + 0.5, "regression", seed=5)
    assert len(r_test) == 450


def test_headers_that_do_not_fit_the_file_are_refused_before_reading(tmp_path):
    import zipfile

    good = tmp_path / "X.npy"
    np.save(good, np.arange(12.0).reshape(3, 4))
    data = good.read_bytes()
    for name, content, fragment in (
        ("short.npy", data[:-8], "(3, 4) of float64 (96 bytes), but the file holds 88 bytes"),
        ("long.npy", data + bytes(8), "(3, 4) of float64 (96 bytes), but the file holds 104 bytes"),
    ):
        (tmp_path / name).write_bytes(content)
        message = re.escape(f"{name}: its header claims shape {fragment}")
        with pytest.raises(DatasetError, match=message):
            read_array_file(tmp_path / name)
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(lying, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("X.npy", data)
    with pytest.raises(DatasetError, match="lying.npz: member 'X' uses ZIP compression method"):
        read_array_file(lying)
    np.savez_compressed(tmp_path / "fine.npz", X=np.arange(12.0).reshape(3, 4))
    assert read_array_file(tmp_path / "fine.npz").shape == (3, 4)
