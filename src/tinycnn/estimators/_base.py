"""What the classifier and the regressor share: parameters, the checks of ``X``, the
standardisation, and one ``fit`` for ``fit``, ``partial_fit``, warm starts and resumed runs over
:func:`tinycnn.training.train`."""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import check_float_dtype, check_positive_float
from ..errors import DivergenceError
from ..inference import forward_pass
from ..model import Sequential
from ..optim import Optimizer, make_optimizer
from ..training import History, TrainingState, train
from ._checks import refuse_non_real, without_nan_advice
from ._network import Network, Params, copy_params, network_of

# batch_size="auto" takes min(AUTO_BATCH_SIZE, n_samples).
AUTO_BATCH_SIZE = 64
# Numbers standardised at a time (float64 scratch of 8 MiB).
STANDARDIZE_BLOCK = 1 << 20


def _samples_per_block(images: np.ndarray) -> int:
    """Samples of ``images`` ``(N, ...)`` in one block of :data:`STANDARDIZE_BLOCK` numbers."""
    return max(1, STANDARDIZE_BLOCK // max(1, int(np.prod(images.shape[1:]))))


def _blockwise_std(images: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-channel standard deviation ``(C,)`` float64 of ``images`` ``(N, C, H, W)`` about
    ``mean`` ``(C,)``: the squared deviations summed over blocks of samples in order, so that
    the float64 scratch is one block (8 MiB), not a float64 copy of the whole data as
    ``np.std`` makes (24 MiB for 4000 28x28 float32 images, the peak of a fit's memory). Equal
    to ``np.std`` up to the order of the sums (measured within 2e-15 relative)."""
    N, C, H, W = images.shape
    step = _samples_per_block(images)
    squares = np.zeros(C)
    for start in range(0, N, step):
        block = images[start : start + step].astype(np.float64, copy=True)
        block -= mean[None, :, None, None]
        block *= block
        squares += block.sum(axis=(0, 2, 3))
        del block  # before the next one is made
    return np.sqrt(squares / max(1, N * H * W))


# Marks "no y given" (None is a y, refused by scikit-learn's check with a clear message).
_NO_Y = object()


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

    params: Params
    optimizer: Optimizer
    history: History
    shuffle_rng: np.random.Generator
    best: Params | None


class _EpochHook:
    """Runs after every epoch of ``training.train``: keeps the weights to fall back to, prints
    progress, and hands a :class:`TrainingState` to the user's callback (True stops)."""

    def __init__(
        self, est, net: Network, start: _Start, seed, callback, stopping, incremental
    ) -> None:
        self.est, self.net, self.start, self.seed = est, net, start, seed
        self.callback, self.stopping, self.incremental = callback, stopping, incremental
        self.best = start.best  # best validation score so far (early stopping)
        # The weights to fall back to if training diverges: those of the completed epoch with
        # the lowest training loss (at first, the starting weights). The weights just before
        # the non-finite loss are finite but usually already blown up (losses like 1e48), so
        # they could not be trained on with a smaller rate.
        self.good, self.good_loss = copy_params(start.params), math.inf
        self.user_stopped = False

    def restore(self, weights: Params) -> None:
        for p, w in zip(self.start.params, weights):
            p[...] = w

    def __call__(self, history: History, live: Params) -> bool:
        if history.loss_curve[-1] <= self.good_loss:
            self.good, self.good_loss = copy_params(live), history.loss_curve[-1]
        scores = history.validation_scores
        if scores and (len(scores) == 1 or scores[-1] > max(scores[:-1])):
            self.best = copy_params(live)
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
            params=copy_params(live),
            optimizer=start.optimizer.state_dict(),
            rng_state=_copy_rng_state(start.shuffle_rng),
            history=_copy_history(history),
            input_mean=self.est.input_mean_.copy(),
            input_std=self.est.input_std_.copy(),
            best_params=None if self.best is None else copy_params(self.best),
            finished=bool(finished),
        )
        self.est._set_fitted(self.net, live, history, start.optimizer, self.seed, start.shuffle_rng)
        self.user_stopped = bool(self.callback(self.est, state))
        return self.user_stopped


class _BaseCNN(BaseEstimator):
    """Shared machinery of the classifier and the regressor; not for direct use."""

    _parameter_constraints: dict = {
        "n_filters": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "kernel_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "stride": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "padding": [
            Interval(numbers.Integral, 0, None, closed="left"),
            StrOptions({"same", "valid"}),
            None,
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
        "layers": "no_validation",  # checked by check_layers (a string or a tuple of layers)
    }

    _loss: str  # "softmax_cross_entropy" or "mse"

    def __init__(
        self,
        n_filters: int | None = None,
        kernel_size: int | None = None,
        stride: int | None = None,
        padding: int | str | None = None,
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
        layers: Any = None,
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
        self.layers = layers

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

    def _network(self, image_shape: tuple[int, int, int], n_outputs: int) -> Network:
        """The network for images ``(C, H, W)`` and ``n_outputs`` outputs; refuses a stack
        that does not fit them."""
        return network_of(self, image_shape, n_outputs)

    # ------------------------------------------------------------------ checks of data

    def _validate_X(self, X: Any, y: Any = _NO_Y, *, reset: bool) -> tuple[np.ndarray, Any]:
        """Validate ``X`` (and ``y`` when given) and return ``(images (N, C, H, W), y)``.

        On ``reset`` the image shape and ``n_features_in_`` (``C*H*W``) are learned; otherwise
        ``X`` must carry images of the fitted shape (or rows of ``n_features_in_`` features).
        The images are a view or a new array: ``X`` itself is never written to.
        """
        refuse_non_real("X", X)
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
            raise ValueError(without_nan_advice(str(exc), type(self).__name__)) from None
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

    def _standardize(
        self, images: np.ndarray, dtype: np.dtype, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``(images[rows] - mean[c]) / std[c]`` (all the images when ``rows`` is None) as a new
        ``(n, C, H, W)`` array of ``dtype``, computed in float64 a block of samples at a time:
        a float32 result never needs a float64 copy of the whole data beside it, nor a copy of
        the raw rows. Elementwise, so a sample's numbers do not depend on the others taken."""
        n = images.shape[0] if rows is None else len(rows)
        out = np.empty((n, *images.shape[1:]), dtype=dtype)
        mean = self.input_mean_[None, :, None, None]
        std = self.input_std_[None, :, None, None]
        step = _samples_per_block(images)
        for start in range(0, n, step):
            if rows is None:
                block = images[start : start + step].astype(np.float64, copy=True)
            else:  # fancy indexing already copied the block
                block = images[rows[start : start + step]].astype(np.float64, copy=False)
            block -= mean
            block /= std
            out[start : start + step] = block
        return out

    @staticmethod
    def _channel_stats(images: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std ``(C,)`` float64 (0 and 1 when not standardising)."""
        C = images.shape[1]
        if not standardize:
            return np.zeros(C), np.ones(C)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
            std = _blockwise_std(images, mean)
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

    def as_images(self, X: Any) -> np.ndarray:
        """The raw (unstandardised) images ``(N, C, H, W)`` of any accepted form of ``X``,
        checked against the fitted image shape, in the estimator's dtype."""
        check_is_fitted(self)
        images, _ = self._validate_X(X, reset=False)
        return images.astype(self.params_[0].dtype, copy=False)

    def layer_outputs(self, X: Any) -> list[np.ndarray]:
        """What every layer of ``network_`` outputs for ``X`` (standardised first): one array
        per layer, ``(N, *shape)`` with the layer's output shape (``(N, F, H', W')`` after a
        conv, ``(N, D)`` after a Flatten or Dense); the last is what ``predict`` turns into
        labels or values."""
        check_is_fitted(self)
        images, _ = self._validate_X(X, reset=False)
        inputs = self._standardize(images, self.params_[0].dtype)
        return self.network_.layer_outputs(list(self.params_), inputs)

    def objective(self, X: Any, y: Any) -> float:
        """The training loss of the fitted weights on ``X``, ``y`` without the L2 penalty:
        softmax cross-entropy (mean over samples) for the classifier, the mean squared error
        over all outputs for the regressor. Labels not seen in ``fit`` are refused."""
        check_is_fitted(self)
        images, y = self._validate_X(X, y, reset=False)
        T, _, _ = self._targets(y, reset=False, classes=None)
        outputs = _forward(self.network_, self.params_, self._standardize(images, T.dtype))
        from ..ops.losses import mse_loss, softmax_cross_entropy

        loss = softmax_cross_entropy if self._loss == "softmax_cross_entropy" else mse_loss
        value, _ = loss(outputs, T.astype(outputs.dtype, copy=False), outputs.shape[0])
        return float(value)

    def _outputs(self, X: Any) -> np.ndarray:
        """Network outputs ``(N, n_outputs_)`` (logits for the classifier) for ``X``."""
        check_is_fitted(self)
        images, _ = self._validate_X(X, reset=False)
        inputs = self._standardize(images, self.params_[0].dtype)
        return _forward(self.network_, self.params_, inputs)

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
        net = self._network(self.image_shape_, T.shape[1])
        if reuse and net.stack != self.network_:
            raise ValueError(
                f"the network's shape changed since the last fit ({self.network_} -> "
                f"{net.stack}); "
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
            self.input_mean_, self.input_std_ = _checked_stats(resume, net.stack)
        elif not reuse:
            fit_images = images if split is None else images[split[0]]
            self.input_mean_, self.input_std_ = self._channel_stats(fit_images, self.standardize)

        if resume is not None:
            start = self._resumed_start(resume, net, dtype, lr)
        else:
            start = self._fresh_start(net, dtype, lr, seed, T, incremental, reuse)
        if split is not None:
            train_idx, val_idx = split
            fit_T = T[train_idx]
            validation_score = self._validation_scorer(
                net.stack, self._standardize(images, dtype, val_idx), targets_meta[val_idx]
            )
        else:
            train_idx, fit_T, validation_score = None, T, None
        # No standardised copy of the training set: each mini-batch is standardised as train
        # draws it (full-batch training draws all of it once).
        fit_inputs = _StandardizedRows(self, images, train_idx, dtype)
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

        hook = _EpochHook(self, net, start, seed, callback, stopping, incremental)
        try:
            train(
                net.stack,
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
            self._set_fitted(net, start.params, history, None, seed, start.shuffle_rng)
            raise
        if hook.best is not None and not hook.user_stopped:
            # scikit-learn's rule: early stopping keeps the weights of the best validation score.
            hook.restore(hook.best)
        self._set_fitted(net, start.params, history, start.optimizer, seed, start.shuffle_rng)
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
        net: Network,
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
            params = copy_params(self.params_)
        else:
            params = net.init_params(init_rng, dtype)
            self._init_output_bias(params, T)
        optimizer = getattr(self, "_optimizer", None) if incremental and reuse else None
        if optimizer is None:
            optimizer = make_optimizer(self.solver, lr, self.momentum)
        history = self._previous_history() if incremental and reuse else History()
        return _Start(params, optimizer, history, shuffle_rng, None)

    def _resumed_start(
        self, resume: TrainingState, net: Network, dtype: np.dtype, lr: float
    ) -> _Start:
        """Weights, optimizer, history, shuffling stream and best weights from ``resume``."""
        params = net.checked_params(resume.params, dtype, "resume.params")
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
            best = net.checked_params(resume.best_params, dtype, "resume.best_params")
        return _Start(params, optimizer, _copy_history(resume.history), shuffle_rng, best)

    def _previous_history(self) -> History:
        """The history partial_fit continues (rebuilt from the attributes after a load)."""
        previous = getattr(self, "_history", None)
        if previous is not None:
            return _copy_history(previous)
        return History(epochs_run=self.n_iter_, loss_curve=list(self.loss_curve_))

    def _set_fitted(
        self,
        net: Network,
        params: Params,
        history: History,
        optimizer: Optimizer | None,
        seed: int,
        shuffle_rng: np.random.Generator,
    ) -> None:
        self.network_ = net.stack
        if net.spec is not None:
            self.spec_ = net.spec
        elif hasattr(self, "spec_"):
            del self.spec_  # a stack has no one-conv-layer spec
        self.params_ = params
        self.n_outputs_ = net.stack.n_outputs
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

    def _init_output_bias(self, params: Params, T: np.ndarray) -> None:
        """Starting value of the dense bias; zeros unless a subclass knows better."""

    def _validation_scorer(self, network: Sequential, inputs: np.ndarray, y_val: np.ndarray):
        raise NotImplementedError

    # ------------------------------------------------------------------ files and export

    def save(self, path: Any) -> None:
        """Write the fitted model to ``path`` (an .npz of arrays + JSON config; see
        :func:`tinycnn.io.save_model`)."""
        from ..io import save_model

        save_model(self, path)

    def to_torch(self):
        """A float32 ``torch.nn.Module`` taking raw ``(N, C, H, W)`` images (see
        :func:`tinycnn.export.to_torch`)."""
        from ..export import to_torch

        return to_torch(self)

    def to_onnx(self, path: Any):
        """Write an ONNX model with input ``x`` float32 ``(batch, C, H, W)`` (see
        :func:`tinycnn.export.to_onnx`)."""
        from ..export import to_onnx

        return to_onnx(self, path)


class _StandardizedRows:
    """The training images ``images[rows]`` ``(n, C, H, W)`` (all of them when ``rows`` is
    None) as a :class:`tinycnn.training.BatchSource`: ``source[idx]`` standardises the samples
    ``idx`` into a new array of ``dtype`` when the training loop draws them."""

    def __init__(
        self, est: _BaseCNN, images: np.ndarray, rows: np.ndarray | None, dtype: np.dtype
    ) -> None:
        self.est, self.images, self.rows, self.dtype = est, images, rows, dtype
        self.shape = (images.shape[0] if rows is None else len(rows), *images.shape[1:])

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        rows = idx if self.rows is None else self.rows[idx]
        return self.est._standardize(self.images, self.dtype, rows)


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


def _check_optimizer_shapes(state: dict, params: Params) -> None:
    """The optimizer's per-parameter arrays (``m_i``, ``v_i``, ``velocity_i``) match ``params``."""
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            index = int(key.rpartition("_")[2])
            if index >= len(params) or value.shape != params[index].shape:
                raise ValueError(
                    f"resume.optimizer[{key!r}] has shape {value.shape}, but the parameter it "
                    f"belongs to has {params[index].shape if index < len(params) else 'none'}"
                )


def _checked_stats(state: TrainingState, network: Sequential) -> tuple[np.ndarray, np.ndarray]:
    channels = network.input_shape[0]
    mean = np.array(state.input_mean, dtype=np.float64)
    std = np.array(state.input_std, dtype=np.float64)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(
            f"resume.input_mean/input_std have shapes {mean.shape}/{std.shape}, but the images "
            f"have {channels} channels"
        )
    return mean, std


def _forward(network: Sequential, params: Params, inputs: np.ndarray) -> np.ndarray:
    """``network``'s outputs ``(N, O)`` for standardised ``inputs`` ``(N, C, H, W)``."""
    return forward_pass(network, list(params), inputs)
