"""``CNNClassifier``: softmax cross-entropy over the network's logits."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets

from .._validation import check_float_dtype
from ..model import Sequential
from ..ops.losses import log_softmax, softmax
from ..training import TrainingState
from ._base import _BaseCNN, _forward
from ._checks import refuse_complex
from ._network import Params


class CNNClassifier(ClassifierMixin, _BaseCNN):
    """A convolutional network classifier: a stack of layers, then a dense layer of one logit
    per class and softmax.

    Trained by minimising softmax cross-entropy (plus ``alpha``-weighted L2 on the weights) with
    Adam or SGD on mini-batches.

    Parameters
    ----------
    layers : tuple of layers, str or None, default=None
        The hidden stack, e.g. ``(Conv2d(8, 3, pad=1), ReLU(), MaxPool2d(2))`` or the same as a
        string, ``"conv8k3p1-relu-max2"`` (grammar: :mod:`tinycnn.layer_string`). The output
        ``Dense(n_classes)`` is appended, after a ``Flatten`` when the stack ends in images.
        A stack that does not fit the images is refused in ``fit``, naming the layer.
        With None and none of the four shorthand parameters below, the default network, which
        adapts to the image size (docs/defaults.md): on 8x8 or 28x28 images
        ``"conv32k3p1-relu-max2-conv64k3p1-relu-avg2-flatten-dense128-relu"``, without the
        pooling where an image has no room for it (down to 1x1). ``network_`` shows it.
    n_filters, kernel_size, stride, padding : the one-conv-layer shorthand, default=None
        When any is given (and ``layers`` is not), the network is conv(``n_filters`` kernels of
        ``kernel_size`` square, every ``stride`` pixels, ``padding``) -> ReLU -> flatten ->
        dense; the ones not given take 16, 5, 1 and "same". ``padding`` is "same" (odd
        ``kernel_size``, ``stride=1``: keeps H and W), "valid" (0) or an int of zeros on every
        side. Output size: ``(H + 2*pad - k) // stride + 1``.
    image_shape : (C, H, W), (H, W) or None, default=None
        How to read a 2-D ``X`` ``(N, C*H*W)``. Without it a 2-D ``X`` is ``(N, 1, 1,
        n_features)``.
    solver : "adam" or "sgd", default="adam"
    learning_rate_init : float, default=0.001
    momentum : float, default=0.9
        SGD momentum (PyTorch's form).
    batch_size : int or "auto", default="auto"
        "auto" is ``min(64, n_samples)``.
    max_iter : int, default=200
        Maximum number of epochs.
    alpha : float, default=0.0001
        L2 penalty: ``loss += 0.5 * alpha * ||weights||^2 / batch``.
    shuffle : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified) and stop when its accuracy has
        not improved by ``tol`` for ``n_iter_no_change`` epochs; keep the best weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
        Without early stopping, the training loss is watched instead.
    tol : float, default=1e-4
    warm_start : bool, default=False
        Start ``fit`` from the current weights (and standardisation).
    random_state : int, RandomState or None, default=None
        Seed of the initialisation, the validation split and the shuffles.
    verbose : bool or int, default=False
    dtype : np.float64 or np.float32, default=np.float64
    standardize : bool, default=True
        Standardise each image channel with the training mean and std.

    Attributes
    ----------
    classes_ : (n_classes,) the labels.
    network_ : Sequential, the whole stack trained (output layer included).
    params_ : its weights, two arrays per conv or dense layer in order (``Sequential``'s
        convention): a list; for the shorthand network a ``ConvNetParams`` of kernel
        (F, C, k, k), bias_conv (F,), W_fc (F*H'*W', n_classes), b_fc (n_classes,).
    spec_ : ConvNetSpec, for the shorthand network only.
    input_mean_, input_std_ : (C,) float64.
    image_shape_ : (C, H, W).
    n_features_in_ : int, C*H*W.
    n_outputs_ : int, n_classes.
    loss_curve_ : list of the training loss per epoch.
    validation_scores_ : list of validation accuracies per epoch, or None.
    best_loss_ : float. best_validation_score_ : float or None.
    n_iter_ : int, epochs run.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from tinycnn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = CNNClassifier(image_shape=(1, 8, 8), max_iter=5, random_state=0).fit(X / 16, y)
    >>> clf.predict(X[:3] / 16)
    array([0, 1, 2])
    """

    _loss = "softmax_cross_entropy"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags

    def fit(self, X: Any, y: Any, callback: Any = None, resume: TrainingState | None = None):
        """Train on ``X`` (see the class docstring for its forms) and labels ``y`` ``(N,)``.

        ``callback(est, state)`` runs after every epoch with a :class:`TrainingState`; returning
        True stops training. ``resume=state`` continues the run ``state`` came from, ending with
        the weights an uninterrupted run would have (same data and parameters).
        A non-finite loss raises :class:`tinycnn.DivergenceError` naming the epoch; the
        estimator then keeps the last good weights, those of the completed epoch with the lowest
        training loss (the starting weights if the first epoch diverged), and ``loss_curve_``
        and ``n_iter_`` of the completed epochs, ready for a warm start with a smaller rate.
        """
        return self._fit(X, y, incremental=False, callback=callback, resume=resume)

    def partial_fit(self, X: Any, y: Any, classes: Any = None):
        """One epoch over ``X``, ``y``; ``classes`` (all labels) is required on the first call."""
        return self._fit(X, y, incremental=True, classes=classes)

    def _y_check_params(self) -> dict:
        return {"multi_output": False, "y_numeric": False}

    def _precheck_y(self, y: Any) -> None:
        refuse_complex("y", y)

    def _targets(self, y: Any, *, reset: bool, classes: Any):
        check_classification_targets(y)
        if reset:
            if classes is not None:
                labels = np.unique(np.asarray(classes))
                unknown = np.setdiff1d(np.unique(y), labels)
                if unknown.size:
                    raise ValueError(
                        f"y contains labels {unknown.tolist()[:10]} that are not in "
                        f"classes={labels.tolist()[:10]}"
                    )
            else:
                labels = np.unique(y)
            if len(labels) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs at least 2 classes, but y has only one "
                    f"class: {labels.tolist()!r}"
                )
            self.classes_ = labels
        else:
            if classes is not None and not np.array_equal(
                np.unique(np.asarray(classes)), self.classes_
            ):
                raise ValueError(
                    f"classes={np.asarray(classes).tolist()[:10]} differs from the classes of "
                    f"the first call, {self.classes_.tolist()[:10]}"
                )
            unknown = np.setdiff1d(np.unique(y), self.classes_)
            if unknown.size:
                raise ValueError(
                    f"y contains labels {unknown.tolist()[:10]} not seen in the first fit "
                    f"(classes_={self.classes_.tolist()[:10]})"
                )
        codes = np.searchsorted(self.classes_, y)
        T = np.zeros((y.shape[0], len(self.classes_)), dtype=check_float_dtype("dtype", self.dtype))
        T[np.arange(y.shape[0]), codes] = 1.0
        return T, codes, codes

    def _validation_scorer(self, network: Sequential, inputs: np.ndarray, codes: np.ndarray):
        def accuracy(params: Params) -> float:
            return float(np.mean(_forward(network, params, inputs).argmax(axis=1) == codes))

        return accuracy

    def predict(self, X: Any) -> np.ndarray:
        """Labels ``(N,)``: the class of largest logit."""
        logits = self._outputs(X)
        return self.classes_[logits.argmax(axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` (softmax of the logits), float64."""
        return softmax(self._outputs(X).astype(np.float64, copy=False))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log(predict_proba(X))`` ``(N, n_classes)``, computed without ``log(0)``."""
        return log_softmax(self._outputs(X).astype(np.float64, copy=False))
