"""``CNNRegressor``: mean squared error over the network's outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score

from .._validation import check_float_dtype
from ..model import Sequential
from ..training import TrainingState
from ._base import _BaseCNN, _forward
from ._checks import refuse_non_real
from ._network import Params


class CNNRegressor(RegressorMixin, _BaseCNN):
    """A convolutional network regressor: a stack of layers, then a dense layer of the outputs,
    trained on the mean squared error.

    Parameters are those of :class:`CNNClassifier`; early stopping watches the validation R^2.
    ``y`` may be ``(N,)`` or ``(N, n_outputs)``. The output layer's bias starts at the mean of
    ``y``.
    The input is standardised, but the targets are NOT scaled: targets far from unit size (say
    prices in the thousands) train slowly or diverge. Scale them the scikit-learn way, with
    ``sklearn.compose.TransformedTargetRegressor`` (second example), which also maps the
    predictions back.

    Attributes
    ----------
    network_, params_, spec_, input_mean_, input_std_, image_shape_, n_features_in_,
    n_outputs_, loss_curve_, validation_scores_, best_loss_, best_validation_score_, n_iter_ :
    as in :class:`CNNClassifier` (the last layer has ``n_outputs`` units).

    Examples
    --------
    >>> import numpy as np
    >>> from tinycnn import CNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(64, 1, 6, 6)); y = X[:, 0, 2:4, 2:4].sum(axis=(1, 2))
    >>> reg = CNNRegressor(random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.9)
    True
    >>> from sklearn.compose import TransformedTargetRegressor
    >>> from sklearn.preprocessing import StandardScaler
    >>> scaled = TransformedTargetRegressor(
    ...     CNNRegressor(random_state=0), transformer=StandardScaler()
    ... )
    >>> bool(scaled.fit(X, 1000 * y).score(X, 1000 * y) > 0.9)
    True
    """

    _loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def fit(self, X: Any, y: Any, callback: Any = None, resume: TrainingState | None = None):
        """Train on ``X`` and targets ``y`` ``(N,)`` or ``(N, n_outputs)``; see
        :meth:`CNNClassifier.fit` for ``callback`` and ``resume``."""
        return self._fit(X, y, incremental=False, callback=callback, resume=resume)

    def partial_fit(self, X: Any, y: Any):
        """One epoch over ``X``, ``y``."""
        return self._fit(X, y, incremental=True)

    def _y_check_params(self) -> dict:
        return {"multi_output": True, "y_numeric": True}

    def _precheck_y(self, y: Any) -> None:
        refuse_non_real("y", y)

    def _targets(self, y: Any, *, reset: bool, classes: Any):
        dtype = check_float_dtype("dtype", self.dtype)
        T = np.asarray(y, dtype=dtype)
        T = T.reshape(T.shape[0], -1)
        if T.shape[1] == 0:
            raise ValueError(f"y must have at least one output column, got shape {y.shape}")
        if not reset and T.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {T.shape[1]} outputs, but {type(self).__name__} was fitted with "
                f"{self.n_outputs_}"
            )
        return T, np.zeros(T.shape[0], dtype=np.intp), T

    def _init_output_bias(self, params: Params, T: np.ndarray) -> None:
        # Starting at the targets' mean spares the first epochs the work of finding the offset.
        params[-1][...] = T.mean(axis=0)

    def _validation_scorer(self, network: Sequential, inputs: np.ndarray, T_val: np.ndarray):
        def r2(params: Params) -> float:
            return float(r2_score(T_val, _forward(network, params, inputs)))

        return r2

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``(N,)`` for one output, else ``(N, n_outputs)``; float64."""
        out = self._outputs(X).astype(np.float64, copy=False)
        return out.ravel() if self.n_outputs_ == 1 else out
