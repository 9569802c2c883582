"""scikit-learn estimators over the engine: :class:`CNNClassifier` and :class:`CNNRegressor`.

The network is a stack of layers (``layers``, or the one-conv-layer shorthand ``n_filters``/
``kernel_size``/``stride``/``padding``, or with neither the default stack, which adapts to the
image size) with an output ``Dense`` sized from ``y``, trained by the
engine (``tinycnn.training.train``) with Adam or SGD on mini-batches. These classes only add what
scikit-learn users expect: one table of parameter constraints checked in ``fit``, input
validation through ``sklearn.utils.validation``, learned attributes ending in ``_``, warm starts,
``partial_fit``, early stopping on a held-out fraction, and a ``ConvergenceWarning``.

Accepted ``X``: ``(N, C, H, W)`` images, ``(N, H, W)`` one-channel images, ``(N, n_features)``
rows with ``image_shape=(C, H, W)``, or ``(N, n_features)`` without ``image_shape``, taken as
``(N, 1, 1, n_features)`` images.

Each image channel is standardised with the mean and standard deviation learned in ``fit``
(``input_mean_``, ``input_std_``, ``(C,)`` float64): ``x' = (x - mean[c]) / std[c]``.

Modules: ``_checks`` (input checks scikit-learn does not make), ``_network`` (the stack from the
parameters), ``_base`` (parameters, standardisation, one ``fit``), ``classifier``, ``regressor``.
"""

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tinycnn's estimators need scikit-learn: pip install 'tinycnn[sklearn]'"
    ) from exc

from ..training import TrainingState
from .classifier import CNNClassifier
from .regressor import CNNRegressor

__all__ = ["CNNClassifier", "CNNRegressor", "TrainingState"]
