"""The defaults are good without tuning, on scikit-learn's digits as they come (raw pixels 0-16,
stratified 25% test split, random_state=0), mean test accuracy over random_state 0, 1, 2:

* CNNClassifier with every setting at its default reaches at least 98.5% (99.0% measured; the
  issue asks 98%, which the former one-conv default also reached, 98.2%; a plain scikit-learn
  MLP gets 98.0%; the suite of examples/defaults_suite.py has the rest);
* a LeNet-like stack of two conv/ReLU/max-pool blocks with otherwise default settings at least
  97.5% (98.4% measured).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from tinycnn import CNNClassifier, Conv2d, MaxPool2d, ReLU  # noqa: E402


def mean_accuracy(**params) -> float:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    accuracies = [
        CNNClassifier(image_shape=(1, 8, 8), random_state=seed, **params)
        .fit(X_train, y_train)
        .score(X_test, y_test)
        for seed in (0, 1, 2)
    ]
    return float(np.mean(accuracies))


def test_default_classifier_reaches_98_5_percent_on_digits():
    assert mean_accuracy() >= 0.985


def test_a_lenet_like_stack_with_default_settings_reaches_97_5_percent_on_digits():
    layers = (Conv2d(8, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(16, 3, pad=1), ReLU(), MaxPool2d(2))
    assert mean_accuracy(layers=layers) >= 0.975
