"""tinycnn.datasets.idx: MNIST-format files read exactly, gzipped or not, folders of them read
with their own test split, and every damaged file refused naming it before any large
allocation."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import DAMAGED_IDX_FOLDERS, damage_idx_folder, idx_bytes, idx_set, make_idx_folder

from tinycnn.datasets import DatasetError, load_dataset, read_idx, split_dataset


@pytest.mark.parametrize(
    ("type_code", "dtype"),
    [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
     (0x0D, np.float32), (0x0E, np.float64)],
)  # fmt: skip
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, type_code, dtype, gz):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        array = array + 5
    data = idx_bytes(array, type_code)
    path = tmp_path / "x-idx3-ubyte"  # the name says nothing: gzip is told by its first bytes
    path.write_bytes(gzip.compress(data) if gz else data)
    read = read_idx(path)
    assert read.dtype == dtype and read.dtype.isnative
    np.testing.assert_array_equal(read, array)


def test_idx_folder_trains_on_train_and_tests_on_t10k(tmp_path):
    folder = make_idx_folder(tmp_path / "idx", gz=False, n_train=30, n_test=12)
    arrays = idx_set(n_train=30, n_test=12)
    X, y, info = load_dataset(folder)
    assert X.shape == (42, 1, 8, 8) and X.dtype == np.float64
    assert (info.n_test, info.split, info.task) == (12, "t10k", "classification")
    X_train, X_test, y_train, y_test, record = split_dataset(X, y, info, seed=123)
    np.testing.assert_array_equal(X_train[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(X_test[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert record == {"split": "t10k", "n_train": 30, "n_test": 12}


def test_an_unpacked_file_is_preferred_to_its_gz(tmp_path):
    folder = make_idx_folder(tmp_path / "idx", gz=True, n_train=9, n_test=3)
    labels = np.array([2, 1, 0], dtype=np.uint8)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    _, y, _ = load_dataset(folder)
    np.testing.assert_array_equal(y[-3:], labels)


@pytest.mark.parametrize("case", DAMAGED_IDX_FOLDERS)
def test_damaged_idx_files_are_refused_naming_the_file(tmp_path, case):
    folder = make_idx_folder(tmp_path / "idx", gz=False)
    named = damage_idx_folder(folder, case)
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    for path in named:
        assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [10, 100, -8])
def test_a_truncated_gzip_is_refused_naming_it(tmp_path, cut):
    folder = make_idx_folder(tmp_path / "idx", gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    assert str(path) in str(info.value)


def test_read_idx_of_a_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(OSError, match="no such file"):
        read_idx(tmp_path / "nothing-idx1-ubyte")
