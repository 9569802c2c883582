"""tinycnn.training: mini-batches and shuffling, history, early stopping, callbacks, divergence
(with restoring the last finite weights), and the L2 penalty's gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, uniform

from tinycnn import DivergenceError
from tinycnn.engine import Engine
from tinycnn.gradcheck import numerical_gradient
from tinycnn.network import ConvNetParams, ConvNetSpec, init_params_he
from tinycnn.optim import SGD, Adam, Optimizer
from tinycnn.training import History, run_epoch, train

SPEC = ConvNetSpec(1, 6, 6, n_filters=2, kernel_size=3, stride=1, pad=1, n_outputs=2)


def problem(seed=0, N=10, spec=SPEC):
    rng = np.random.default_rng(seed)
    X = uniform(rng, N, spec.in_channels, spec.height, spec.width)
    T = uniform(rng, N, spec.n_outputs)
    return init_params_he(spec, rng), X, T


def assert_same_params(a, b):
    for name, x, y in zip(ConvNetParams._fields, a, b):
        assert np.array_equal(x, y), name


def test_shuffled_mini_batches_are_reproducible_from_the_generator():
    params, X, T = problem()
    runs = []
    for seed in (7, 7, 8):
        p = params.copy()
        h = train(
            SPEC.sequential(), p, X, T, SGD(0.05), 3, batch_size=4, rng=np.random.default_rng(seed)
        )
        runs.append((p, h.loss_curve))
    assert_same_params(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0].W_fc, runs[2][0].W_fc)  # another shuffle, another run


def test_mini_batch_epoch_is_sgd_over_a_permutation_drawn_from_the_generator():
    params, X, T = problem(1)
    mine = params.copy()
    history = train(
        SPEC.sequential(), mine, X, T, SGD(0.05), 2, batch_size=4, rng=np.random.default_rng(3)
    )
    # Restated: each epoch draws one permutation, then steps on batches of 4, 4, 2 in that order;
    # the epoch's loss is the sample-weighted mean of the batch losses.
    rng, expected, curve = np.random.default_rng(3), params.copy(), []
    for _ in range(2):
        order, total = rng.permutation(10), 0.0
        for start in range(0, 10, 4):
            idx = order[start : start + 4]
            value, grads = SPEC.sequential().loss_and_grads(expected, X[idx], T[idx])
            for p, g in zip(expected, grads):
                p -= 0.05 * g
            total += value * len(idx)
        curve.append(total / 10)
    for name, m, e in zip(ConvNetParams._fields, mine, expected):
        assert_close(m, e, 1e-13, name)
    assert_close(history.loss_curve, curve, 1e-13, "loss curve")


def test_without_a_generator_batches_follow_the_data_order():
    params, X, T = problem(2)
    mine = params.copy()
    train(SPEC.sequential(), mine, X, T, SGD(0.05), 1, batch_size=3)
    expected = params.copy()
    for start in range(0, 10, 3):
        _, grads = SPEC.sequential().loss_and_grads(
            expected, X[start : start + 3], T[start : start + 3]
        )
        for p, g in zip(expected, grads):
            p -= 0.05 * g
    for name, m, e in zip(ConvNetParams._fields, mine, expected):
        assert_close(m, e, 1e-13, name)


@pytest.mark.parametrize("batch_size", [None, 10, 50])
def test_full_batch_epoch_is_one_step_and_reports_the_loss_before_it(batch_size):
    params, X, T = problem(3)
    mine = params.copy()
    value = run_epoch(
        mine, Engine(SPEC.sequential(), X.dtype, len(X)), X, T, SGD(0.1), 1, batch_size=batch_size
    )
    before, grads = SPEC.sequential().loss_and_grads(params, X, T)
    assert value == before
    assert_same_params(mine, ConvNetParams(*(p - 0.1 * g for p, g in zip(params, grads))))


def test_training_in_two_calls_with_one_history_equals_one_call():
    params, X, T = problem(4)
    once, twice = params.copy(), params.copy()
    h1 = train(SPEC.sequential(), once, X, T, Adam(0.01), 5)
    opt = Adam(0.01)
    h2 = train(SPEC.sequential(), twice, X, T, opt, 2)
    h2 = train(SPEC.sequential(), twice, X, T, opt, 3, history=h2)
    assert h2.epochs_run == h1.epochs_run == 5
    assert h2.loss_curve == h1.loss_curve
    assert_same_params(once, twice)


def test_early_stopping_on_a_validation_score_that_stops_improving():
    params, X, T = problem(5)
    h = train(
        SPEC.sequential(),
        params,
        X,
        T,
        SGD(0.01),
        50,
        validation_score=lambda p: 0.5,
        n_iter_no_change=3,
    )
    # Epoch 1 improves on -inf; epochs 2, 3, 4 do not: stop after 4.
    assert h.stopped_early and h.epochs_run == 4
    assert h.validation_scores == [0.5] * 4 and h.best_validation_score == 0.5


def test_early_stopping_on_the_training_loss_uses_tol():
    params, X, T = problem(6)
    h = train(SPEC.sequential(), params, X, T, SGD(0.01), 50, n_iter_no_change=2, tol=1e9)
    assert h.stopped_early and h.epochs_run == 3
    assert h.best_loss == min(h.loss_curve)


def test_no_early_stopping_while_the_score_keeps_improving():
    params, X, T = problem(7)
    scores = iter(range(100))
    h = train(
        SPEC.sequential(),
        params,
        X,
        T,
        SGD(0.01),
        6,
        validation_score=lambda p: next(scores),
        n_iter_no_change=1,
    )
    assert not h.stopped_early and h.epochs_run == 6 and h.no_improvement_count == 0


def test_callback_sees_every_epoch_and_can_stop_training():
    params, X, T = problem(8)
    seen = []

    def callback(history, p):
        seen.append((history.epochs_run, history.loss_curve[-1]))
        return history.epochs_run == 3

    h = train(SPEC.sequential(), params, X, T, SGD(0.01), 10, callback=callback)
    assert h.epochs_run == 3 and not h.stopped_early
    assert seen == list(zip([1, 2, 3], h.loss_curve))


def diverging_problem():
    rng = np.random.default_rng(9)
    spec = ConvNetSpec(1, 5, 5, n_filters=2, kernel_size=3, stride=1, pad=0, n_outputs=1)
    X, T = uniform(rng, 6, 1, 5, 5), uniform(rng, 6, 1)
    return init_params_he(spec, rng), spec, X, T


@pytest.mark.parametrize("batch_size", [None, 2])
def test_restore_on_divergence_restores_the_last_finite_weights(batch_size):
    params, spec, X, T = diverging_problem()
    mine = params.copy()
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        train(
            spec.sequential(),
            mine,
            X,
            T,
            SGD(1e3),
            100,
            batch_size=batch_size,
            restore_on_divergence=True,
        )
    epoch = info.value.epoch
    assert epoch > 1
    assert all(np.isfinite(p).all() for p in mine)
    # The last finite weights are those at the start of the diverging epoch: train epoch - 1.
    expected = params.copy()
    with np.errstate(all="ignore"):
        train(spec.sequential(), expected, X, T, SGD(1e3), epoch - 1, batch_size=batch_size)
    assert_same_params(mine, expected)


def test_divergence_names_the_epoch_and_leaves_weights_alone_without_restore():
    params, spec, X, T = diverging_problem()
    history = History()
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        train(spec.sequential(), params, X, T, SGD(1e3), 100, history=history)
    error = info.value
    assert error.epoch == history.epochs_run + 1  # completed epochs, then the failing one
    assert not math.isfinite(error.loss)
    assert f"epoch {error.epoch}" in str(error) and "smaller learning rate" in str(error)


class Recorder(Optimizer):
    """Records the gradients it is given and leaves the parameters alone."""

    lr = 1.0

    def step(self, params, grads):
        self.grads = [g.copy() for g in grads]


@pytest.mark.parametrize("l2", [0.0, 0.3, 5.0])
def test_l2_penalty_and_its_gradient_match_finite_differences(l2):
    params, X, T = problem(10, N=4)
    recorder = Recorder()

    def loss():
        return run_epoch(
            params, Engine(SPEC.sequential(), X.dtype, len(X)), X, T, recorder, 1, l2=l2
        )

    value = loss()
    analytic = recorder.grads
    plain, _ = SPEC.sequential().loss_and_grads(params, X, T)
    weights = np.vdot(params.kernel, params.kernel) + np.vdot(params.W_fc, params.W_fc)
    assert_close(value, plain + 0.5 * l2 * weights / 4, 1e-14, "penalised loss")  # biases free
    for name, p, g in zip(ConvNetParams._fields, params, analytic):
        assert_close(g, numerical_gradient(loss, p), 1e-7, f"gradient of {name}")


def test_restore_catches_an_update_that_overflows_even_when_the_loss_was_finite():
    params, spec, X, T = diverging_problem()
    T = T * 100  # gradients well above 2 in size, so that lr * gradient overflows float64
    loss, grads = spec.sequential().loss_and_grads(params, X, T)
    assert math.isfinite(loss) and max(np.abs(g).max() for g in grads) > 2
    mine = params.copy()
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        # Epoch 1's loss is finite; its update (lr 1e308) overflows the weights to inf.
        train(spec.sequential(), mine, X, T, SGD(1e308), 5, restore_on_divergence=True)
    assert info.value.epoch == 1
    assert_same_params(mine, params)


class Rows:
    """A BatchSource standing for the array ``X``: each batch is drawn as it is asked for."""

    def __init__(self, X):
        self.X, self.shape, self.drawn = X, X.shape, []

    def __getitem__(self, idx):
        self.drawn.append(len(idx))
        return self.X[idx]


@pytest.mark.parametrize("batch_size", [4, 10, None])
def test_a_batch_source_trains_like_its_array_drawing_mini_batches_as_they_go(batch_size):
    params, X, T = problem(2)
    runs, source = [], Rows(X)
    for data in (X, source):
        p = params.copy()
        rng = np.random.default_rng(5)
        h = train(SPEC.sequential(), p, data, T, SGD(0.05), 3, batch_size=batch_size, rng=rng)
        runs.append((p, h.loss_curve))
    assert_same_params(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    if batch_size == 4:  # only batches are ever drawn, each epoch's samples once
        assert source.drawn == [4, 4, 2] * 3
    else:  # full batch: all of it once, used by every epoch
        assert source.drawn == [10]
