"""tinycnn.plots: valid PNGs of the right content, written atomically, bad input refused."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tinycnn import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path) -> np.ndarray:
    """The file starts with the PNG signature and both Pillow and matplotlib decode it."""
    from matplotlib.image import imread
    from PIL import Image

    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    # Not a blank canvas: something was drawn.
    assert pixels[..., :3].std() > 0.01
    return pixels


def no_temporaries(folder) -> bool:
    return not [name for name in os.listdir(folder) if name.startswith(".tinycnn-tmp-")]


def test_loss_plot(tmp_path):
    path = tmp_path / "loss.png"
    plots.plot_loss(path, np.linspace(2, 0.1, 15), np.linspace(2.1, 0.3, 15))
    assert_valid_png(path)
    assert no_temporaries(tmp_path)


def test_loss_plot_without_validation_and_with_nonpositive_values(tmp_path):
    path = tmp_path / "loss.png"
    plots.plot_loss(path, [0.5, 0.0, -0.1])  # linear scale: the log scale would drop values
    assert_valid_png(path)
    plots.plot_loss(path, [3.0])
    assert_valid_png(path)


@pytest.mark.parametrize("shape", [(1, 1, 3, 3), (8, 1, 3, 3), (4, 3, 5, 5)])
def test_filters_plot(tmp_path, shape):
    path = tmp_path / "filters.png"
    plots.plot_filters(path, np.random.default_rng(0).normal(size=shape))
    assert_valid_png(path)
    assert no_temporaries(tmp_path)


def test_filters_plot_grid_grows_with_filters(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    plots.plot_filters(small, np.ones((2, 1, 3, 3)))
    plots.plot_filters(large, np.ones((12, 1, 3, 3)))
    assert assert_valid_png(large).shape[1] > assert_valid_png(small).shape[1]


def test_many_filters_wrap_into_rows(tmp_path):
    eight, many = tmp_path / "eight.png", tmp_path / "many.png"
    plots.plot_filters(eight, np.ones((8, 1, 3, 3)))
    plots.plot_filters(many, np.ones((64, 2, 3, 3)))
    eight_px, many_px = assert_valid_png(eight), assert_valid_png(many)
    assert many_px.shape[1] == eight_px.shape[1]  # as wide as one row of 8
    assert many_px.shape[0] > 8 * eight_px.shape[0] // 2  # 8 rows of filters, 2 channels each


@pytest.mark.parametrize(("C", "F"), [(1, 1), (1, 8), (3, 12)])
def test_feature_maps_plot(tmp_path, C, F):
    rng = np.random.default_rng(1)
    path = tmp_path / "maps.png"
    plots.plot_feature_maps(path, rng.normal(size=(C, 8, 8)), np.abs(rng.normal(size=(F, 6, 6))))
    assert_valid_png(path)
    assert no_temporaries(tmp_path)


def test_feature_maps_of_several_layers_take_a_row_each(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.normal(size=(1, 12, 12))
    first, second = np.abs(rng.normal(size=(4, 12, 12))), np.abs(rng.normal(size=(6, 6, 6)))
    heights = {}
    for name, layers in {"one": [first], "two": [first, second],
                         "wide": [first, np.ones((32, 3, 3))]}.items():  # fmt: skip
        plots.plot_feature_maps(tmp_path / f"{name}.png", image, layers, [f"l{i}" for i in
                                range(len(layers))])  # fmt: skip
        heights[name] = assert_valid_png(tmp_path / f"{name}.png").shape[0]
    assert heights["one"] < heights["two"] < heights["wide"]  # 32 maps wrap into 4 lines
    # Beyond MAX_MAPS_PER_LAYER, the first ones are shown: the picture grows no further.
    plots.plot_feature_maps(tmp_path / "more.png", image, [first, np.ones((200, 3, 3))])
    assert assert_valid_png(tmp_path / "more.png").shape[0] == heights["wide"]
    assert plots.MAX_MAPS_PER_LAYER == 32
    assert no_temporaries(tmp_path)


def test_confusion_plot_counts_true_against_predicted(tmp_path):
    path = tmp_path / "confusion.png"
    y_true = np.array(["cat", "cat", "dog", "owl", "owl", "owl"])
    y_pred = np.array(["cat", "dog", "dog", "owl", "cat", "owl"])
    counts = plots.plot_confusion(path, y_true, y_pred, ["cat", "dog", "owl"])
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert_valid_png(path)
    many = np.arange(40) % 40  # beyond 30 classes: colours and a colour bar, no numbers
    assert plots.plot_confusion(path, many, many, np.arange(40)).trace() == 40
    assert_valid_png(path)
    assert no_temporaries(tmp_path)


@pytest.mark.parametrize("C", [1, 3])
def test_errors_plot_shows_the_misclassified_images(tmp_path, C):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(50, C, 9, 7))
    y_true, y_pred = np.arange(50) % 5, np.arange(50) % 5
    y_pred[[3, 10, 11]] = 4 - y_pred[[3, 10, 11]]
    path = tmp_path / "errors.png"
    assert plots.plot_errors(path, images, y_true, y_pred, names={0: "zero"}) == 3
    assert_valid_png(path)
    y_pred[:] = 0
    assert plots.plot_errors(path, images, y_true, y_pred, max_images=4) == 40
    assert_valid_png(path)
    assert plots.plot_errors(path, images, y_true, y_true) == 0  # says so in the picture
    assert_valid_png(path)


def test_predicted_vs_true_plot(tmp_path):
    path = tmp_path / "p.png"
    y = np.linspace(0, 1, 30)
    plots.plot_predicted_vs_true(path, y, y + 0.1)
    assert_valid_png(path)
    plots.plot_predicted_vs_true(path, np.c_[y, 2 * y], np.c_[y, y])  # two outputs
    assert_valid_png(path)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: plots.plot_confusion(p, [0, 1], [0], [0, 1]), "y_true and y_pred"),
        (lambda p: plots.plot_confusion(p, [0, 1], [0, 1], [0, 1], ["a"]), "names"),
        (lambda p: plots.plot_errors(p, np.zeros((2, 2, 4, 4)), [0, 1], [1, 0]), "C 1 or 3"),
        (lambda p: plots.plot_errors(p, np.zeros((2, 1, 4, 4)), [0], [1]), "images must be"),
        (
            lambda p: plots.plot_errors(p, np.zeros((1, 1, 4, 4)), [0], [1], max_images=0),
            "max_images",
        ),
        (lambda p: plots.plot_predicted_vs_true(p, np.zeros(3), np.zeros(4)), "y_true and y_pred"),
        (lambda p: plots.plot_loss(p, []), "train_loss"),
        (lambda p: plots.plot_loss(p, [1.0, 2.0], [1.0]), "validation_loss"),
        (lambda p: plots.plot_filters(p, np.zeros((3, 3))), "kernel"),
        (lambda p: plots.plot_filters(p, np.zeros((0, 1, 3, 3))), "kernel"),
        (lambda p: plots.plot_feature_maps(p, np.zeros((8, 8)), np.zeros((1, 6, 6))), "image"),
        (lambda p: plots.plot_feature_maps(p, np.zeros((1, 8, 8)), np.zeros(6)), "feature_maps"),
        (lambda p: plots.plot_feature_maps(p, np.zeros((1, 8, 8)), []), "feature_maps"),
        (
            lambda p: plots.plot_feature_maps(
                p, np.zeros((1, 8, 8)), [np.zeros((1, 6, 6))], ["a", "b"]
            ),
            "titles",
        ),  # fmt: skip
    ],
)
def test_bad_input_is_refused(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path / "x.png")
    assert not os.listdir(tmp_path)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "filters.png"
    plots.plot_filters(path, np.ones((2, 1, 3, 3)))
    before = path.read_bytes()

    def broken_savefig(self, handle, **kwargs):
        handle.write(b"half a picture")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_filters(path, np.zeros((2, 1, 3, 3)))
    assert path.read_bytes() == before
    assert no_temporaries(tmp_path)


def test_missing_matplotlib_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'tinycnn\[plot\]'"):
        plots.plot_loss(tmp_path / "loss.png", [1.0, 0.5])


def test_plotting_leaves_pyplot_alone(tmp_path):
    # Drawing must not import pyplot or pick a GUI backend in the caller's process.
    code = (
        "import sys, numpy as np\n"
        "from tinycnn import plots\n"
        f"plots.plot_filters({str(tmp_path / 'f.png')!r}, np.ones((2, 1, 3, 3)))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert_valid_png(tmp_path / "f.png")
