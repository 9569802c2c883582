"""The estimators' default network (no ``layers``, no shorthand): the stack chosen on the suite
of ``examples/defaults_suite.py`` (docs/defaults.md), built for every image size from 1x1 up,
with pooling only where the pooled image keeps at least 2 pixels a side."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from tinycnn import AvgPool2d, CNNClassifier, CNNRegressor, Flatten, MaxPool2d, Sequential  # noqa: E402
from tinycnn.estimators._network import default_layers, network_of  # noqa: E402
from tinycnn.layer_string import layers_to_string, parse_layers  # noqa: E402

DIGITS_STACK = "conv32k3p1-relu-max2-conv64k3p1-relu-avg2-flatten-dense128-relu"


@pytest.mark.parametrize(
    "shape, text",
    [
        ((1, 1, 1), "conv32k3p1-relu-conv64k3p1-relu-flatten-dense128-relu"),
        ((1, 1, 64), "conv32k3p1-relu-conv64k3p1-relu-flatten-dense128-relu"),
        ((1, 3, 3), "conv32k3p1-relu-conv64k3p1-relu-flatten-dense128-relu"),
        ((1, 4, 9), "conv32k3p1-relu-max2-conv64k3p1-relu-flatten-dense128-relu"),
        ((1, 8, 8), DIGITS_STACK),
        ((1, 28, 28), DIGITS_STACK),
        ((3, 32, 32), DIGITS_STACK),
        ((3, 64, 64), "conv32k3p1-relu-max2-conv64k3p1-relu-avg2-avg2-flatten-dense128-relu"),
    ],
)
def test_the_default_stack_for_some_image_sizes(shape, text):
    assert layers_to_string(default_layers(shape)) == text


def test_the_default_builds_for_every_image_size_and_pools_only_where_there_is_room():
    for H in range(1, 41):
        for W in (1, 2, 3, H, H + 1, 2 * H):
            for channels in (1, 3):
                stack = network_of(CNNClassifier(), (channels, H, W), 3).stack
                assert stack.output_shape == (3,)
                before = dict(zip(stack.layers, stack.shapes))  # layer -> its input shape
                pooled = [s for layer, s in zip(stack.layers, stack.shapes)
                          if isinstance(layer, (MaxPool2d, AvgPool2d))]  # fmt: skip
                for _, h, w in pooled:  # every pooled image keeps at least 2 pixels a side
                    assert min(h, w) >= 4, (H, W, stack)
                if min(H, W) >= 8:  # room for both conv blocks to pool
                    assert len(pooled) >= 2, (H, W, stack)
                # large images are pooled further: the flattened images are at most 15 a side
                _, h, w = before[Flatten()]
                assert min(h, w) <= 15, (H, W, stack)


@pytest.mark.parametrize("cls", [CNNClassifier, CNNRegressor])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 5), (1, 2, 2), (3, 5, 4), (1, 8, 8)])
def test_default_estimators_fit_tiny_images_and_show_the_concrete_stack(cls, shape):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, *shape))
    y = (
        (X.reshape(12, -1).sum(axis=1) > 0).astype(int)
        if cls is CNNClassifier
        else X.sum(axis=(1, 2, 3))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = cls(max_iter=2, random_state=0).fit(X, y)
    n_out = 2 if cls is CNNClassifier else 1
    expected = Sequential((*default_layers(shape), *parse_layers(f"dense{n_out}")), shape)
    assert est.network_ == expected
    assert not hasattr(est, "spec_") and isinstance(est.params_, list)
    assert est.predict(X).shape == (12,)
