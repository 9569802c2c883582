"""scikit-learn estimators over the engine: :class:`CNNClassifier` and :class:`CNNRegressor`.

The network is conv(``n_filters`` of ``kernel_size``) -> ReLU -> flatten -> dense, trained by the
engine (``tinycnn.training.train``) with Adam or SGD on mini-batches. These classes only add what
scikit-learn users expect: one table of parameter constraints checked in ``fit``, input
validation through ``sklearn.utils.validation``, learned attributes ending in ``_``, warm starts,
``partial_fit``, early stopping on a held-out fraction, and a ``ConvergenceWarning``.

Accepted ``X``: ``(N, C, H, W)`` images, ``(N, H, W)`` one-channel images, ``(N, n_features)``
rows with ``image_shape=(C, H, W)``, or ``(N, n_features)`` without ``image_shape``, taken as
``(N, 1, 1, n_features)`` images (so the default 3x3 "same" convolution runs along the features).

Each image channel is standardised with the mean and standard deviation learned in ``fit``
(``input_mean_``, ``input_std_``, ``(C,)`` float64): ``x' = (x - mean[c]) / std[c]``.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Any, NamedTuple

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tinycnn's estimators need scikit-learn: pip install 'tinycnn[sklearn]'"
    ) from exc

from ._validation import check_float_dtype, check_positive_float
from .errors import DivergenceError
from .network import ConvNetParams, ConvNetSpec, init_params_he, predict
from .ops.losses import log_softmax, softmax
from .optim import Optimizer, make_optimizer
from .training import History, TrainingState, train

__all__ = ["CNNClassifier", "CNNRegressor", "TrainingState"]

# batch_size="auto" takes min(AUTO_BATCH_SIZE, n_samples).
AUTO_BATCH_SIZE = 64


# Marks "no y given" (None is a y, refused by scikit-learn's check with a clear message).
_NO_Y = object()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse_non_real(name: str, value: Any) -> None:
    """Refuse strings (even of digits) and complex numbers before scikit-learn would convert
    them, with a message naming ``name``. Object arrays of numbers pass (scikit-learn converts
    them); object arrays holding strings do not."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got a string {_short(value)}")
    if not isinstance(value, np.ndarray) and (
        hasattr(value, "dtypes") or hasattr(value, "__array_namespace__")
    ):
        return  # data frames and other libraries' arrays: scikit-learn checks them
    if not hasattr(value, "dtype") and isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError):
            return  # ragged: scikit-learn reports it
    dtype = getattr(value, "dtype", None)
    if not isinstance(dtype, np.dtype):
        return
    if dtype.kind in "USV":
        raise TypeError(
            f"{name} must hold real numbers, got dtype {dtype}; strings are never converted, "
            "not even strings of digits"
        )
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has complex dtype {dtype}")
    if dtype.kind == "O" and isinstance(value, np.ndarray):
        for item in value.flat:
            if isinstance(item, (str, bytes)):
                raise TypeError(
                    f"{name} must hold real numbers, got the string {_short(item)} in an "
                    "object array; strings are never converted"
                )


def _resolve_seed(random_state: Any) -> int:
    """The run's root seed: the int itself, one drawn from a ``RandomState``, or fresh entropy."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    raise TypeError(f"random_state must be None, an int or a RandomState, got {random_state!r}")


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for (initialisation, validation split, shuffling).

    Separate streams make the split and the shuffles independent of whether the weights were
    drawn (warm start, resume), so a resumed run sees exactly the batches it would have seen.
    """
    init_ss, split_ss, shuffle_ss = np.random.SeedSequence(seed).spawn(3)
    return (
        np.random.default_rng(init_ss),
        np.random.default_rng(split_ss),
        np.random.default_rng(shuffle_ss),
    )


class _Start(NamedTuple):
    """Where a run starts: weights (trained in place), optimizer, history, shuffling stream,
    and the best weights so far (early stopping)."""

    params: ConvNetParams
    optimizer: Optimizer
    history: History
    shuffle_rng: np.random.Generator
    best: ConvNetParams | None


class _EpochHook:
    """Runs after every epoch of ``training.train``: keeps the weights to fall back to, prints
    progress, and hands a :class:`TrainingState` to the user's callback (True stops)."""

    def __init__(self, est, spec, start: _Start, seed, callback, stopping, incremental) -> None:
        self.est, self.spec, self.start, self.seed = est, spec, start, seed
        self.callback, self.stopping, self.incremental = callback, stopping, incremental
        self.best = start.best  # best validation score so far (early stopping)
        # The weights to fall back to if training diverges: those of the completed epoch with
        # the lowest training loss (at first, the starting weights). The weights just before
        # the non-finite loss are finite but usually already blown up (losses like 1e48), so
        # they could not be trained on with a smaller rate.
        self.good, self.good_loss = start.params.copy(), math.inf
        self.user_stopped = False

    def restore(self, weights: ConvNetParams) -> None:
        for p, w in zip(self.start.params, weights):
            p[...] = w

    def __call__(self, history: History, live: ConvNetParams) -> bool:
        if history.loss_curve[-1] <= self.good_loss:
            self.good, self.good_loss = live.copy(), history.loss_curve[-1]
        scores = history.validation_scores
        if scores and (len(scores) == 1 or scores[-1] > max(scores[:-1])):
            self.best = live.copy()
        if self.est.verbose:
            line = f"Iteration {history.epochs_run}, loss = {history.loss_curve[-1]:.8f}"
            if scores:
                line += f", validation score = {scores[-1]:.6f}"
            print(line, file=sys.stdout)
        if self.callback is None:
            return False
        finished = not self.incremental and (
            history.epochs_run >= int(self.est.max_iter)
            or history.no_improvement_count >= self.stopping
        )
        start = self.start
        state = TrainingState(
            epoch=history.epochs_run,
            seed=self.seed,
            params=live.copy(),
            optimizer=start.optimizer.state_dict(),
            rng_state=_copy_rng_state(start.shuffle_rng),
            history=_copy_history(history),
            input_mean=self.est.input_mean_.copy(),
            input_std=self.est.input_std_.copy(),
            best_params=None if self.best is None else self.best.copy(),
            finished=bool(finished),
        )
        self.est._set_fitted(
            self.spec, live, history, start.optimizer, self.seed, start.shuffle_rng
        )
        self.user_stopped = bool(self.callback(self.est, state))
        return self.user_stopped


class _BaseCNN(BaseEstimator):
    """Shared machinery of the classifier and the regressor; not for direct use."""

    _parameter_constraints: dict = {
        "n_filters": [Interval(numbers.Integral, 1, None, closed="left")],
        "kernel_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "stride": [Interval(numbers.Integral, 1, None, closed="left")],
        "padding": [
            Interval(numbers.Integral, 0, None, closed="left"),
            StrOptions({"same", "valid"}),
        ],
        "image_shape": ["array-like", None],
        "solver": [StrOptions({"adam", "sgd"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "batch_size": [
            Interval(numbers.Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "shuffle": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "dtype": "no_validation",  # checked by check_float_dtype (accepts np.dtype objects too)
        "standardize": ["boolean"],
    }

    _loss: str  # "softmax_cross_entropy" or "mse"

    def __init__(
        self,
        n_filters: int = 16,
        kernel_size: int = 5,
        stride: int = 1,
        padding: int | str = "same",
        image_shape: tuple[int, ...] | None = None,
        solver: str = "adam",
        learning_rate_init: float = 0.001,
        momentum: float = 0.9,
        batch_size: int | str = "auto",
        max_iter: int = 200,
        alpha: float = 0.0001,
        shuffle: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 0.0001,
        warm_start: bool = False,
        random_state: Any = None,
        verbose: bool | int = False,
        dtype: Any = np.float64,
        standardize: bool = True,
    ) -> None:
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.image_shape = image_shape
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.alpha = alpha
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.dtype = dtype
        self.standardize = standardize

    # ------------------------------------------------------------------ scikit-learn protocol

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "params_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ checks of parameters

    def _check_image_shape(self) -> tuple[int, int, int] | None:
        """``image_shape`` as ``(C, H, W)`` (an ``(H, W)`` pair means one channel), or None."""
        shape = self.image_shape
        if shape is None:
            return None
        try:
            items = list(shape)
        except TypeError:
            raise TypeError(f"image_shape must be (C, H, W) or (H, W), got {shape!r}") from None
        if len(items) not in (2, 3) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= 1
            for v in items
        ):
            raise ValueError(
                f"image_shape must be (C, H, W) or (H, W) of integers >= 1, got {shape!r}"
            )
        items = [int(v) for v in items]
        return tuple(items) if len(items) == 3 else (1, items[0], items[1])

    def _spec(self, image_shape: tuple[int, int, int], n_outputs: int) -> ConvNetSpec:
        """The network's shape for images ``(C, H, W)``; refuses impossible geometry."""
        C, H, W = image_shape
        k, stride, padding = int(self.kernel_size), int(self.stride), self.padding
        if padding == "same":
            if k % 2 == 0 or stride != 1:
                raise ValueError(
                    f"padding='same' needs an odd kernel_size and stride=1 (it keeps H and W), "
                    f"got kernel_size={k}, stride={stride}; use padding='valid' or an int"
                )
            pad = (k - 1) // 2
        elif padding == "valid":
            pad = 0
        else:
            pad = int(padding)
        if k > H + 2 * pad or k > W + 2 * pad:
            raise ValueError(
                f"kernel_size={k} is larger than the padded image: images are {H}x{W}, with "
                f"padding={padding!r} {H + 2 * pad}x{W + 2 * pad}"
                + (
                    "; a 2-D X without image_shape is taken as 1 x n_features images"
                    if self.image_shape is None and H == 1
                    else ""
                )
            )
        return ConvNetSpec(C, H, W, int(self.n_filters), k, stride, pad, n_outputs)

    # ------------------------------------------------------------------ checks of data

    def _validate_X(self, X: Any, y: Any = _NO_Y, *, reset: bool) -> tuple[np.ndarray, Any]:
        """Validate ``X`` (and ``y`` when given) and return ``(images (N, C, H, W), y)``.

        On ``reset`` the image shape and ``n_features_in_`` (``C*H*W``) are learned; otherwise
        ``X`` must carry images of the fitted shape (or rows of ``n_features_in_`` features).
        The images are a view or a new array: ``X`` itself is never written to.
        """
        _refuse_non_real("X", X)
        if y is not _NO_Y and y is not None:
            self._precheck_y(y)
        common = dict(
            accept_sparse=False,
            dtype=[np.float64, np.float32],
            ensure_2d=False,  # we check dimensions ourselves: images are 3-D or 4-D
            allow_nd=True,
            ensure_min_samples=1,
        )
        try:
            if y is _NO_Y:
                X = validate_data(self, X, reset=reset, **common)
            else:
                X, y = validate_data(self, X, y, reset=reset, **common, **self._y_check_params())
        except ValueError as exc:
            raise ValueError(_without_nan_advice(str(exc), type(self).__name__)) from None
        if X.ndim < 2:
            raise ValueError(
                f"Expected 2D array, got {'scalar' if X.ndim == 0 else '1D'} array instead: "
                f"X has shape {X.shape}. Reshape your data to (n_samples, n_features), or pass "
                "images (N, H, W) / (N, C, H, W)"
            )
        if X.ndim > 4:
            raise ValueError(
                f"X must be 2-, 3- or 4-dimensional, got {X.ndim} dimensions with shape {X.shape}"
            )
        image_shape = self._image_shape_of(X, reset)
        if reset:
            self.n_features_in_ = int(np.prod(image_shape))
            self.image_shape_ = image_shape
        return X.reshape((X.shape[0], *image_shape)), y

    def _image_shape_of(self, X: np.ndarray, reset: bool) -> tuple[int, int, int]:
        name = type(self).__name__
        if X.ndim == 2:
            n_features = X.shape[1]
            if not reset:
                if n_features != self.n_features_in_:
                    raise ValueError(
                        f"X has {n_features} features, but {name} is expecting "
                        f"{self.n_features_in_} features as input (images {self.image_shape_})."
                    )
                return self.image_shape_
            declared = self._check_image_shape()
            if declared is None:
                return (1, 1, n_features)
            if int(np.prod(declared)) != n_features:
                raise ValueError(
                    f"image_shape={self.image_shape!r} holds {int(np.prod(declared))} values per "
                    f"image but X has {n_features} features (shape {X.shape})"
                )
            return declared
        shape = (1, *X.shape[1:]) if X.ndim == 3 else tuple(X.shape[1:])
        shape = tuple(int(v) for v in shape)
        if not reset:
            if shape != self.image_shape_:
                raise ValueError(
                    f"X has images of shape {shape} (C, H, W), but {name} was fitted on images "
                    f"of shape {self.image_shape_}"
                )
            return shape
        declared = self._check_image_shape()
        if declared is not None and declared != shape:
            raise ValueError(
                f"image_shape={self.image_shape!r} does not match the images in X of shape "
                f"{shape} (C, H, W)"
            )
        return shape

    def _standardize(self, images: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``(images - mean[c]) / std[c]`` as a new ``(N, C, H, W)`` array of ``dtype``."""
        out = images.astype(np.float64, copy=True)
        out -= self.input_mean_[None, :, None, None]
        out /= self.input_std_[None, :, None, None]
        return out.astype(dtype, copy=False)

    @staticmethod
    def _channel_stats(images: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std ``(C,)`` float64 (0 and 1 when not standardising)."""
        C = images.shape[1]
        if not standardize:
            return np.zeros(C), np.ones(C)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
            std = images.std(axis=(0, 2, 3), dtype=np.float64)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            c = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))[0])
            largest = float(np.abs(images[:, c]).max())
            raise ValueError(
                f"X is too large to standardise: channel {c} has mean {mean[c]:.3g} and "
                f"standard deviation {std[c]:.3g} (its largest |value| is {largest:.3g}, whose "
                "square overflows float64); rescale the data first, e.g. divide X by its "
                "largest absolute value"
            )
        # A constant channel carries no information; dividing by 1 keeps it finite.
        std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
        return mean.astype(np.float64), std.astype(np.float64)

    def _images(self, X: Any) -> np.ndarray:
        """The raw (unstandardised) images ``(N, C, H, W)`` of any accepted form of ``X``,
        in the estimator's dtype."""
        check_is_fitted(self)
        images, _ = self._validate_X(X, reset=False)
        return images.astype(self.params_.W_fc.dtype, copy=False)

    def _outputs(self, X: Any) -> np.ndarray:
        """Network outputs ``(N, n_outputs_)`` (logits for the classifier) for ``X``."""
        check_is_fitted(self)
        images, _ = self._validate_X(X, reset=False)
        inputs = self._standardize(images, self.params_.W_fc.dtype)
        return predict(self.params_, self.spec_, inputs)

    # ------------------------------------------------------------------ training

    def _fit(
        self,
        X: Any,
        y: Any,
        *,
        incremental: bool,
        classes: Any = None,
        callback: Any = None,
        resume: TrainingState | None = None,
    ):
        """fit (``incremental=False``), partial_fit (True) and resumed fits, in one place."""
        self._validate_params()
        dtype = check_float_dtype("dtype", self.dtype)
        lr = check_positive_float("learning_rate_init", self.learning_rate_init)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable(est, state) or None, got {callback!r}")
        if resume is not None and not isinstance(resume, TrainingState):
            raise TypeError(f"resume must be a TrainingState, got {type(resume).__name__}")
        reuse = resume is None and self.__sklearn_is_fitted__() and (incremental or self.warm_start)

        images, y = self._validate_X(X, y, reset=not reuse)
        T, y_codes, targets_meta = self._targets(y, reset=not reuse, classes=classes)
        spec = self._spec(self.image_shape_, T.shape[1])
        if reuse and spec != self.spec_:
            raise ValueError(
                f"the network's shape changed since the last fit ({self.spec_} -> {spec}); "
                "set warm_start=False (or call fit instead of partial_fit) to start afresh"
            )
        if resume is not None:
            seed = int(resume.seed)
        elif incremental and reuse and hasattr(self, "_shuffle_rng"):
            seed = self._seed
        else:
            seed = _resolve_seed(self.random_state)
        split = self._split(y_codes, seed) if self.early_stopping and not incremental else None

        # Standardisation: learned on the training part once, kept by warm starts and resumes.
        if resume is not None:
            self.input_mean_, self.input_std_ = _checked_stats(resume, spec)
        elif not reuse:
            fit_images = images if split is None else images[split[0]]
            self.input_mean_, self.input_std_ = self._channel_stats(fit_images, self.standardize)
        inputs = self._standardize(images, dtype)

        if resume is not None:
            start = self._resumed_start(resume, spec, dtype, lr)
        else:
            start = self._fresh_start(spec, dtype, lr, seed, T, incremental, reuse)
        if split is not None:
            train_idx, val_idx = split
            fit_inputs, fit_T = inputs[train_idx], T[train_idx]
            validation_score = self._validation_scorer(spec, inputs[val_idx], targets_meta[val_idx])
        else:
            fit_inputs, fit_T, validation_score = inputs, T, None
        n_train = fit_inputs.shape[0]
        batch_size = min(AUTO_BATCH_SIZE, n_train) if self.batch_size == "auto" else self.batch_size
        stopping = None if incremental else int(self.n_iter_no_change)
        history = start.history
        if incremental:
            epochs = 1
        elif history.no_improvement_count >= int(self.n_iter_no_change):
            history.stopped_early, epochs = True, 0  # the resumed run had already stopped
        else:
            epochs = int(self.max_iter) - history.epochs_run

        hook = _EpochHook(self, spec, start, seed, callback, stopping, incremental)
        try:
            train(
                spec.sequential(),
                start.params,
                fit_inputs,
                fit_T,
                start.optimizer,
                epochs,
                loss=self._loss,
                batch_size=min(int(batch_size), n_train),
                rng=start.shuffle_rng if self.shuffle else None,
                l2=float(self.alpha),
                history=history,
                validation_score=validation_score,
                n_iter_no_change=stopping,
                tol=float(self.tol),
                restore_on_divergence=True,
                callback=hook,
            )
        except DivergenceError:
            # Keep the last good weights, so that a warm start with a smaller learning rate
            # can go on from there; the optimizer's moments may be non-finite: drop it.
            hook.restore(hook.good)
            self._set_fitted(spec, start.params, history, None, seed, start.shuffle_rng)
            raise
        if hook.best is not None and not hook.user_stopped:
            # scikit-learn's rule: early stopping keeps the weights of the best validation score.
            hook.restore(hook.best)
        self._set_fitted(spec, start.params, history, start.optimizer, seed, start.shuffle_rng)
        if (
            not incremental
            and not hook.user_stopped
            and not history.stopped_early
            and history.epochs_run >= int(self.max_iter)
        ):
            warnings.warn(
                f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _fresh_start(
        self,
        spec: ConvNetSpec,
        dtype: np.dtype,
        lr: float,
        seed: int,
        T: np.ndarray,
        incremental: bool,
        reuse: bool,
    ) -> _Start:
        """New weights (or the fitted ones, for warm starts and partial_fit), optimizer and
        history; partial_fit continues its optimizer, history and shuffling stream."""
        init_rng, _, shuffle_rng = _streams(seed)
        if incremental and reuse and hasattr(self, "_shuffle_rng"):
            shuffle_rng = self._shuffle_rng
        if reuse:
            params = self.params_.copy()
        else:
            params = init_params_he(spec, init_rng, dtype)
            self._init_output_bias(params, T)
        optimizer = getattr(self, "_optimizer", None) if incremental and reuse else None
        if optimizer is None:
            optimizer = make_optimizer(self.solver, lr, self.momentum)
        history = self._previous_history() if incremental and reuse else History()
        return _Start(params, optimizer, history, shuffle_rng, None)

    def _resumed_start(
        self, resume: TrainingState, spec: ConvNetSpec, dtype: np.dtype, lr: float
    ) -> _Start:
        """Weights, optimizer, history, shuffling stream and best weights from ``resume``."""
        params = _checked_params(resume.params, spec, dtype, "resume.params")
        shuffle_rng = _streams(int(resume.seed))[2]
        optimizer = make_optimizer(self.solver, lr, self.momentum)
        try:
            if resume.rng_state is not None:
                shuffle_rng.bit_generator.state = resume.rng_state
            optimizer.load_state_dict(resume.optimizer)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"resume does not fit this estimator (solver={self.solver!r}): its "
                f"optimizer or random state cannot be loaded ({type(exc).__name__}: {exc})"
            ) from None
        _check_optimizer_shapes(optimizer.state_dict(), params)
        best = None
        if resume.best_params is not None:
            best = _checked_params(resume.best_params, spec, dtype, "resume.best_params")
        return _Start(params, optimizer, _copy_history(resume.history), shuffle_rng, best)

    def _previous_history(self) -> History:
        """The history partial_fit continues (rebuilt from the attributes after a load)."""
        previous = getattr(self, "_history", None)
        if previous is not None:
            return _copy_history(previous)
        return History(epochs_run=self.n_iter_, loss_curve=list(self.loss_curve_))

    def _set_fitted(
        self,
        spec: ConvNetSpec,
        params: ConvNetParams,
        history: History,
        optimizer: Optimizer | None,
        seed: int,
        shuffle_rng: np.random.Generator,
    ) -> None:
        self.spec_ = spec
        self.params_ = params
        self.n_outputs_ = spec.n_outputs
        self.loss_curve_ = list(history.loss_curve)
        self.n_iter_ = int(history.epochs_run)
        self.best_loss_ = float(min(history.loss_curve)) if history.loss_curve else math.inf
        if self.early_stopping and history.validation_scores:
            self.validation_scores_ = list(history.validation_scores)
            self.best_validation_score_ = float(max(history.validation_scores))
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
        self._history = _copy_history(history)
        self._optimizer = optimizer
        self._seed = seed
        self._shuffle_rng = shuffle_rng

    def _split(self, y_codes: np.ndarray, seed: int):
        """Indices ``(train, validation)`` drawn from the run's split stream (stratified for a
        classifier when every class has at least two samples)."""
        split_rng = _streams(seed)[1]
        n = y_codes.shape[0]
        n_val = int(math.ceil(self.validation_fraction * n))
        if n_val < 2 or n - n_val < 1:
            raise ValueError(
                f"early_stopping needs a validation set of at least 2 samples and a training "
                f"set of at least 1: validation_fraction={self.validation_fraction} of "
                f"{n} samples gives {n_val}"
            )
        stratify = None
        if self._loss == "softmax_cross_entropy":
            counts = np.bincount(y_codes)
            if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
                stratify = y_codes
        train_idx, val_idx = train_test_split(
            np.arange(n),
            test_size=n_val,
            random_state=int(split_rng.integers(np.iinfo(np.int32).max)),
            stratify=stratify,
        )
        return np.sort(train_idx), np.sort(val_idx)

    # ------------------------------------------------------------------ hooks for subclasses

    def _y_check_params(self) -> dict:
        raise NotImplementedError

    def _precheck_y(self, y: Any) -> None:
        """Refuse kinds of ``y`` scikit-learn would silently convert."""

    def _targets(self, y: Any, *, reset: bool, classes: Any):
        raise NotImplementedError

    def _init_output_bias(self, params: ConvNetParams, T: np.ndarray) -> None:
        """Starting value of the dense bias; zeros unless a subclass knows better."""

    def _validation_scorer(self, spec: ConvNetSpec, inputs: np.ndarray, y_val: np.ndarray):
        raise NotImplementedError

    # ------------------------------------------------------------------ files and export

    def save(self, path: Any) -> None:
        """Write the fitted model to ``path`` (an .npz of arrays + JSON config; see
        :func:`tinycnn.io.save_model`)."""
        from .io import save_model

        save_model(self, path)

    def to_torch(self):
        """A float32 ``torch.nn.Module`` taking raw ``(N, C, H, W)`` images (see
        :func:`tinycnn.export.to_torch`)."""
        from .export import to_torch

        return to_torch(self)

    def to_onnx(self, path: Any):
        """Write an ONNX model with input ``x`` float32 ``(batch, C, H, W)`` (see
        :func:`tinycnn.export.to_onnx`)."""
        from .export import to_onnx

        return to_onnx(self, path)


def _copy_history(history: History) -> History:
    return History(
        epochs_run=history.epochs_run,
        loss_curve=list(history.loss_curve),
        validation_scores=list(history.validation_scores),
        best_loss=history.best_loss,
        best_validation_score=history.best_validation_score,
        no_improvement_count=history.no_improvement_count,
        stopped_early=history.stopped_early,
    )


def _copy_rng_state(rng: np.random.Generator) -> dict:
    state = rng.bit_generator.state
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}


def _checked_params(params: Any, spec: ConvNetSpec, dtype: np.dtype, name: str) -> ConvNetParams:
    """Copies of ``params`` as :class:`ConvNetParams` of ``dtype`` after checking their shapes."""
    try:
        arrays = [np.array(p, dtype=dtype, copy=True) for p in params]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be four real arrays: {exc}") from None
    shapes = list(spec.param_shapes.values())
    if len(arrays) != 4 or [a.shape for a in arrays] != [tuple(s) for s in shapes]:
        raise ValueError(
            f"{name} has shapes {[a.shape for a in arrays]}, but this estimator on this data "
            f"needs {shapes}"
        )
    return ConvNetParams(*arrays)


def _check_optimizer_shapes(state: dict, params: ConvNetParams) -> None:
    """The optimizer's per-parameter arrays (``m_i``, ``v_i``, ``velocity_i``) match ``params``."""
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            index = int(key.rpartition("_")[2])
            if index >= len(params) or value.shape != params[index].shape:
                raise ValueError(
                    f"resume.optimizer[{key!r}] has shape {value.shape}, but the parameter it "
                    f"belongs to has {params[index].shape if index < len(params) else 'none'}"
                )


def _checked_stats(state: TrainingState, spec: ConvNetSpec) -> tuple[np.ndarray, np.ndarray]:
    mean = np.array(state.input_mean, dtype=np.float64)
    std = np.array(state.input_std, dtype=np.float64)
    if mean.shape != (spec.in_channels,) or std.shape != (spec.in_channels,):
        raise ValueError(
            f"resume.input_mean/input_std have shapes {mean.shape}/{std.shape}, but the images "
            f"have {spec.in_channels} channels"
        )
    return mean, std


class CNNClassifier(ClassifierMixin, _BaseCNN):
    """A convolutional network classifier: conv -> ReLU -> flatten -> dense -> softmax.

    Trained by minimising softmax cross-entropy (plus ``alpha``-weighted L2 on the weights) with
    Adam or SGD on mini-batches.

    Parameters
    ----------
    n_filters : int, default=16
        Number of convolution filters F.
    kernel_size : int, default=5
        Side k of the square kernels.
    stride : int, default=1
    padding : "same", "valid" or int, default="same"
        "same" (odd ``kernel_size``, ``stride=1``) keeps H and W; an int pads that many zeros on
        every side. Output size: ``(H + 2*pad - k) // stride + 1``.
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
    params_ : ConvNetParams, kernel (F, C, k, k), bias_conv (F,), W_fc (F*H'*W', n_classes),
        b_fc (n_classes,).
    spec_ : ConvNetSpec.
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
        _refuse_complex("y", y)

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

    def _validation_scorer(self, spec: ConvNetSpec, inputs: np.ndarray, codes: np.ndarray):
        def accuracy(params: ConvNetParams) -> float:
            return float(np.mean(predict(params, spec, inputs).argmax(axis=1) == codes))

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


class CNNRegressor(RegressorMixin, _BaseCNN):
    """A convolutional network regressor: conv -> ReLU -> flatten -> dense, mean squared error.

    Parameters are those of :class:`CNNClassifier`; early stopping watches the validation R^2.
    ``y`` may be ``(N,)`` or ``(N, n_outputs)``. The dense bias starts at the mean of ``y``.
    The input is standardised, but the targets are NOT scaled: targets far from unit size (say
    prices in the thousands) train slowly or diverge. Scale them the scikit-learn way, with
    ``sklearn.compose.TransformedTargetRegressor`` (second example), which also maps the
    predictions back.

    Attributes
    ----------
    params_, spec_, input_mean_, input_std_, image_shape_, n_features_in_, n_outputs_,
    loss_curve_, validation_scores_, best_loss_, best_validation_score_, n_iter_ : as in
    :class:`CNNClassifier` (``W_fc`` is ``(F*H'*W', n_outputs)``).

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
        _refuse_non_real("y", y)

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

    def _init_output_bias(self, params: ConvNetParams, T: np.ndarray) -> None:
        # Starting at the targets' mean spares the first epochs the work of finding the offset.
        params.b_fc[...] = T.mean(axis=0)

    def _validation_scorer(self, spec: ConvNetSpec, inputs: np.ndarray, T_val: np.ndarray):
        def r2(params: ConvNetParams) -> float:
            return float(r2_score(T_val, predict(params, spec, inputs)))

        return r2

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``(N,)`` for one output, else ``(N, n_outputs)``; float64."""
        out = self._outputs(X).astype(np.float64, copy=False)
        return out.ravel() if self.n_outputs_ == 1 else out


def _without_nan_advice(message: str, name: str) -> str:
    """scikit-learn's NaN error without its 400 characters of advice about other estimators."""
    advice = f"\n{name} does not accept missing values encoded as NaN natively."
    if advice not in message:
        return message
    return (
        message.split(advice)[0]
        + f" {name} does not accept missing values: impute them (sklearn.impute) or drop "
        "those samples first"
    )


def _refuse_complex(name: str, value: Any) -> None:
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has complex dtype {dtype}")
