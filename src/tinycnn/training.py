"""The training loop: batches, loss history, L2, early stopping, divergence, progress hooks.

It trains any :class:`tinycnn.Sequential` stack, knowing it only through an
:class:`tinycnn.engine.Engine`'s ``loss_and_grads``, and the optimizer only through ``step``; it
knows nothing of scikit-learn or files. Everything needed to continue a run exactly
(the optimizer's state, the :class:`History`, the random generator's state) is explicit, so a
caller can checkpoint it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .engine import Engine
from .errors import DivergenceError
from .model import Sequential
from .optim import Optimizer

# The parameters of a stack: two arrays per layer with parameters (see Sequential), updated in
# place (a list, or a NamedTuple of arrays such as the estimators' ConvNetParams).
Params = Sequence[np.ndarray]


@dataclass
class History:
    """What training has seen so far; ``epochs_run`` counts completed epochs."""

    epochs_run: int = 0
    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    no_improvement_count: int = 0
    stopped_early: bool = False


@dataclass
class TrainingState:
    """Everything needed to continue a run bit for bit after ``epoch`` completed epochs.

    ``params`` are the weights after that epoch (the live ones, not the best-so-far);
    ``optimizer`` is the optimizer's ``state_dict()``; ``rng_state`` is the shuffling
    generator's ``bit_generator.state`` (``None`` when nothing is shuffled); ``seed`` is the root
    seed the run's other random streams (initialisation, validation split) derive from;
    ``input_mean``/``input_std`` ``(C,)`` are the input standardisation of the run;
    ``best_params`` are the weights with the best validation score so far (early stopping only);
    ``finished`` says the run had already stopped (early stopping or ``max_iter``) at ``epoch``.
    """

    epoch: int
    seed: int
    params: Params
    optimizer: dict[str, Any]
    rng_state: dict[str, Any] | None
    history: History
    input_mean: np.ndarray
    input_std: np.ndarray
    best_params: Params | None = None
    finished: bool = False

    def copy(self) -> TrainingState:
        """A deep copy: later training never changes it."""
        return copy.deepcopy(self)


class BatchSource(Protocol):
    """Training samples made as they are drawn instead of held in one array (the estimators
    standardise each mini-batch this way): ``shape`` is ``(N, C, H, W)``, and ``source[idx]``
    for an index array ``idx`` is the batch ``(len(idx), C, H, W)`` of those samples, a new
    array in the parameters' dtype."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, idx: np.ndarray) -> np.ndarray: ...


def _add_l2(params: Params, grads: Params, l2: float, n: int) -> float:
    """scikit-learn's convention: ``loss += 0.5 * l2 * ||weights||^2 / n`` over the weights
    (the first array of each layer's pair); biases are not decayed."""
    penalty = 0.0
    for w, g in zip(params[0::2], grads[0::2]):
        # Not np.vdot/np.dot: OpenBLAS threads dot products of > 10^4 entries, and on a busy
        # machine waiting for its threads cost ~20 ms per batch; this sum stays in NumPy.
        penalty += 0.5 * l2 * float(np.square(w).sum()) / n
        g += (l2 / n) * w
    return penalty


def run_epoch(
    params: Params,
    engine: Engine,
    X: np.ndarray | BatchSource,
    T: np.ndarray,
    optimizer: Optimizer,
    epoch: int,
    loss: str = "mse",
    batch_size: int | None = None,
    rng: np.random.Generator | None = None,
    l2: float = 0.0,
) -> float:
    """One pass over ``X`` ``(N, C, H, W)``/``T`` ``(N, O)``, updating ``params`` in place.
    ``X`` is an array, or with mini-batches a :class:`BatchSource` that makes each batch.

    ``batch_size=None`` (or ``>= N``) is full-batch gradient descent: one step on the whole set,
    and the returned loss is the loss *before* that step (the seed's). With smaller batches, the
    order is shuffled by ``rng`` when one is given, and the returned loss is the sample-weighted
    mean of the batch losses. A non-finite loss raises :class:`DivergenceError` naming ``epoch``
    before that batch's update is applied.
    """
    N = X.shape[0]
    args = (params, engine, optimizer, epoch, loss, l2)
    if batch_size is None or batch_size >= N:
        return _step(X, T, *args)
    order = rng.permutation(N) if rng is not None else np.arange(N)
    total = 0.0
    for start in range(0, N, batch_size):
        idx = order[start : start + batch_size]
        total += _step(X[idx], T[idx], *args) * len(idx)
    return total / N


def _step(X, T, params, engine, optimizer, epoch, loss, l2) -> float:
    """One update on the batch ``X``/``T``; returns its loss, measured before the update.

    A non-finite loss raises :class:`DivergenceError` before the update is applied.
    """
    value, grads = engine.loss_and_grads(params, X, T, loss)
    if l2:
        value += _add_l2(params, grads, l2, X.shape[0])
    if not math.isfinite(value):
        raise DivergenceError(epoch, value, optimizer.lr)
    optimizer.step(params, grads)
    return value


# Runs of fewer calls than this (epochs in full-batch training, batches with mini-batches) are
# run without helper processes (forking one and warming it up costs about as much as a call of
# digits), unless one call is large (MIN_NUMBERS_FOR_HELPERS); the chunks are shared out the
# same way, so the numbers do not change.
MIN_CALLS_FOR_HELPERS = 8
# ...where a call is large: its samples take at least this many numbers of the engine's
# buffers (samples x Sequential.numbers_per_sample). Alternated train_cnn calls of 1 and 2
# epochs, helpers / without: digits (1.2M numbers) 2 epochs 1.25x float32, 1.0x float64; four
# times the digits (4.8M) 0.65-0.79x; C (79M) 0.92 and 1.08x float32 (quiet machine), 0.55 and
# 0.93x float64; L (242M) 0.27-0.84x. Without helpers one process threads its products over
# both cores, and on this machine that is what slows down, 2-4x, for minutes at a time (C
# float32, 2 epochs: 460-550 ms against 200-300; one BLAS thread: 280): shared calls, one BLAS
# thread in each process, held steady through it (1 epoch of L float32: 283-310 ms against
# 1039-1064).
MIN_NUMBERS_FOR_HELPERS = 1 << 22


def make_engine(
    net: Sequential,
    dtype: Any,
    X: np.ndarray,
    batch_size: int | None = None,
    epochs: int | None = None,
) -> Engine:
    """The engine :func:`train` uses for ``X`` ``(N, C, H, W)``: bound to ``X`` itself in
    full-batch training (``batch_size`` None or ``>= N``), else sized for one batch. For a run
    of fewer than :data:`MIN_CALLS_FOR_HELPERS` calls in its ``epochs`` it forks no helper
    process, unless a call holds :data:`MIN_NUMBERS_FOR_HELPERS` numbers."""
    N = X.shape[0]
    full_batch = batch_size is None or batch_size >= N
    calls = None if epochs is None else epochs * (1 if full_batch else -(-N // batch_size))
    per_call = N if full_batch else batch_size
    helpers = (
        calls is None
        or calls >= MIN_CALLS_FOR_HELPERS
        or per_call * net.numbers_per_sample(dtype) >= MIN_NUMBERS_FOR_HELPERS
    )
    if full_batch:
        return Engine(net, dtype, N, fixed_inputs=X, fork_helpers=helpers)
    return Engine(net, dtype, batch_size, fork_helpers=helpers)


# Called after each epoch with (history, params); returning True stops training.
EpochCallback = Callable[[History, Params], "bool | None"]


def all_finite(params: Params) -> bool:
    """True when no parameter holds an infinity or NaN."""
    return all(np.isfinite(p).all() for p in params)


# Overflow on the way to divergence is reported as DivergenceError, not as NumPy warnings.
@np.errstate(over="ignore", invalid="ignore")
def train(
    net: Sequential,
    params: Params,
    X: np.ndarray | BatchSource,
    T: np.ndarray,
    optimizer: Optimizer,
    epochs: int,
    *,
    loss: str = "mse",
    batch_size: int | None = None,
    rng: np.random.Generator | None = None,
    l2: float = 0.0,
    history: History | None = None,
    validation_score: Callable[[Params], float] | None = None,
    n_iter_no_change: int | None = None,
    tol: float = 1e-4,
    restore_on_divergence: bool = False,
    callback: EpochCallback | None = None,
    engine: Engine | None = None,
) -> History:
    """Run up to ``epochs`` more epochs; return the (updated) :class:`History`.

    Early stopping (scikit-learn's rule) is on when ``n_iter_no_change`` is given: training stops
    once the validation score (if ``validation_score`` is given; higher is better) or else the
    training loss has not improved by more than ``tol`` for ``n_iter_no_change`` epochs in a row.
    With ``restore_on_divergence`` the parameters are put back to the start of the diverging epoch
    (the last finite ones) before :class:`DivergenceError` propagates.

    ``params`` (a list of arrays, see :class:`~tinycnn.Sequential`) are updated in place. The
    gradients are computed in an :class:`~tinycnn.engine.Engine` that this call builds and
    drops (in full-batch training it keeps ``X``'s unfolded windows across epochs); pass one
    from :func:`make_engine` to keep it across calls (``X`` must then not change). ``X`` is
    used in the parameters' dtype. ``X`` may be a :class:`BatchSource` instead of an array:
    mini-batches are then made as they are drawn, and full-batch training draws all of ``X``
    once (every epoch uses all of it).
    """
    history = history if history is not None else History()
    dtype = params[0].dtype
    if not isinstance(X, np.ndarray) and (batch_size is None or batch_size >= X.shape[0]):
        X = X[np.arange(X.shape[0])]
    if isinstance(X, np.ndarray) and X.dtype != dtype:
        X = X.astype(dtype)
    if engine is None and epochs > 0:
        engine = make_engine(net, dtype, X, batch_size, epochs)
    for _ in range(epochs):
        epoch = history.epochs_run + 1
        snapshot = [p.copy() for p in params] if restore_on_divergence else None
        try:
            value = run_epoch(params, engine, X, T, optimizer, epoch, loss, batch_size, rng, l2)
            if snapshot is not None and not all_finite(params):
                raise DivergenceError(
                    epoch, value, optimizer.lr, reason="its update made the weights non-finite"
                )
        except DivergenceError:
            if snapshot is not None:
                for p, s in zip(params, snapshot):
                    p[...] = s
            raise
        history.epochs_run = epoch
        history.loss_curve.append(value)
        if n_iter_no_change is not None:
            if validation_score is not None:
                score = float(validation_score(params))
                history.validation_scores.append(score)
                improved = score > history.best_validation_score + tol
                history.best_validation_score = max(history.best_validation_score, score)
            else:
                improved = value < history.best_loss - tol
            history.best_loss = min(history.best_loss, value)
            history.no_improvement_count = 0 if improved else history.no_improvement_count + 1
        stop = callback(history, params) if callback is not None else False
        if n_iter_no_change is not None and history.no_improvement_count >= n_iter_no_change:
            history.stopped_early = True
            stop = True
        if stop:
            break
    return history
