"""tinycnn.optim: SGD (plain, momentum, Nesterov) and Adam step by step against torch.optim;
state_dict round trips continue exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import assert_close, uniform
from hypothesis import given
from hypothesis import strategies as st

from tinycnn.optim import SGD, Adam, make_optimizer

SHAPES = [(2, 1, 3, 3), (2,), (8, 3), (3,)]


def gradient_stream(seed, steps):
    rng = np.random.default_rng(seed)
    return [[uniform(rng, *s) for s in SHAPES] for _ in range(steps)]


def run_ours(optimizer, params, grads_per_step):
    params = [p.copy() for p in params]
    for grads in grads_per_step:
        optimizer.step(params, [g.copy() for g in grads])  # step may overwrite its gradients
    return params


def run_torch(make, params, grads_per_step):
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    optimizer = make(tensors)
    for grads in grads_per_step:
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        optimizer.step()
    return [t.detach().numpy() for t in tensors]


CONFIGS = [
    (lambda: SGD(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: SGD(0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (
        lambda: SGD(0.05, momentum=0.5, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, nesterov=True),
    ),
    (lambda: Adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    (
        lambda: Adam(0.003, beta1=0.5, beta2=0.9, eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=0.003, betas=(0.5, 0.9), eps=1e-6),
    ),
]
IDS = ["sgd", "momentum", "nesterov", "adam", "adam-custom"]


@pytest.mark.parametrize("ours, theirs", CONFIGS, ids=IDS)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 8))
def test_optimizer_follows_torch_step_by_step(ours, theirs, seed, steps):
    params = gradient_stream(seed + 1, 1)[0]
    grads = gradient_stream(seed, steps)
    mine = run_ours(ours(), params, grads)
    expected = run_torch(theirs, params, grads)
    for i, (m, e) in enumerate(zip(mine, expected)):
        assert_close(m, e, 1e-12, f"parameter {i}")


def test_plain_sgd_is_the_seeds_update_bit_for_bit():
    params, grads = gradient_stream(0, 1)[0], gradient_stream(1, 1)[0]
    (kernel, bias, W, b) = run_ours(SGD(0.01), params, [grads])
    for new, old, g in zip((kernel, bias, W, b), params, grads):
        assert np.array_equal(new, old - 0.01 * g)


@pytest.mark.parametrize("make", [c[0] for c in CONFIGS], ids=IDS)
def test_state_dict_round_trip_continues_identically(make):
    params, grads = gradient_stream(2, 1)[0], gradient_stream(3, 7)
    uninterrupted = run_ours(make(), params, grads)

    first = make()
    halfway = run_ours(first, params, grads[:4])
    state = copy.deepcopy(first.state_dict())
    run_ours(first, halfway, grads[4:])  # using the first optimizer on must not alter `state`
    second = make()
    second.load_state_dict(state)
    resumed = run_ours(second, halfway, grads[4:])
    for u, r in zip(uninterrupted, resumed):
        assert np.array_equal(u, r)


def test_state_dict_is_a_snapshot_not_a_view():
    opt = Adam(0.01)
    params = gradient_stream(4, 1)[0]
    run_ours(opt, params, gradient_stream(5, 2))
    state = opt.state_dict()
    saved = {k: np.copy(v) for k, v in state.items()}
    run_ours(opt, params, gradient_stream(6, 2))
    assert all(np.array_equal(state[k], saved[k]) for k in saved)


def test_make_optimizer_builds_each_rule():
    sgd = make_optimizer("sgd", 0.1, momentum=0.8, nesterov=True)
    assert isinstance(sgd, SGD) and (sgd.lr, sgd.momentum, sgd.nesterov) == (0.1, 0.8, True)
    assert isinstance(make_optimizer("adam", 0.01), Adam)
    with pytest.raises(ValueError, match="solver"):
        make_optimizer("rmsprop", 0.1)


@pytest.mark.parametrize(
    "build, exc, name",
    [
        (lambda: SGD(0.0), ValueError, "lr"),
        (lambda: SGD(float("nan")), ValueError, "lr"),
        (lambda: SGD("0.1"), TypeError, "lr"),
        (lambda: SGD(0.1, momentum=1.0), ValueError, "momentum"),
        (lambda: SGD(0.1, momentum=-0.1), ValueError, "momentum"),
        (lambda: SGD(0.1, momentum=float("nan")), ValueError, "momentum"),
        (lambda: SGD(0.1, momentum="0.5"), TypeError, "momentum"),
        (lambda: SGD(0.1, momentum=True), TypeError, "momentum"),
        (lambda: Adam(-1.0), ValueError, "lr"),
        (lambda: Adam(0.1, beta1=1.0), ValueError, "beta1"),
        (lambda: Adam(0.1, beta2=-0.5), ValueError, "beta2"),
        (lambda: Adam(0.1, beta1="0.9"), TypeError, "beta1"),
        (lambda: Adam(0.1, beta2=None), TypeError, "beta2"),
        (lambda: Adam(0.1, eps=0.0), ValueError, "eps"),
    ],
)
def test_bad_hyperparameters_are_refused(build, exc, name):
    with pytest.raises(exc, match=name):
        build()
