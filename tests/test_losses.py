"""tinycnn.ops.losses: MSE and softmax cross-entropy, loss and gradient together, vs naive loops,
PyTorch and finite differences; numerical stability; chunked evaluation (``n_total``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import OpImpl, assert_close, check_op, uniform
from hypothesis import given
from hypothesis import strategies as st

from tinycnn import naive
from tinycnn.ops.losses import log_softmax, mse_loss, softmax, softmax_cross_entropy


def loss_op(loss_fn) -> OpImpl:
    """A loss as an op of (prediction, target): the scalar loss forward, ``dout * dpred`` back
    (the target is not differentiated)."""
    return OpImpl(
        lambda pred, target: loss_fn(pred, target)[0],
        lambda dout, pred, target: [dout * loss_fn(pred, target)[1], None],
    )


def probability_rows(rng, N, K, soft=True):
    if soft:
        return rng.dirichlet(np.ones(K), size=N)
    return np.eye(K)[rng.integers(K, size=N)]


sizes = st.tuples(st.integers(1, 5), st.integers(2, 5), st.integers(0, 2**32 - 1))


@given(sizes)
def test_mse_loss_and_gradient_with_several_output_columns(size):
    # More than one output column on purpose: a loss averaged over N*O entries with a gradient
    # divided by N only (scikit-learn #8349) would pass with O == 1 and fail here.
    N, O, seed = size
    rng = np.random.default_rng(seed)
    inputs = [uniform(rng, N, O), uniform(rng, N, O)]
    check_op(
        inputs,
        loss_op(mse_loss),
        F.mse_loss,
        naive=loss_op(naive.mse_loss),
        finite_differences=True,
        fd_tol=1e-8,
    )


def test_mse_by_hand_with_two_outputs():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    loss, dpred = mse_loss(pred, target)
    assert loss == (1 + 0 + 4 + 16) / 4
    assert np.array_equal(dpred, 2 * (pred - target) / 4)


@given(sizes, st.booleans())
def test_cross_entropy_matches_torch_with_probability_targets(size, soft):
    N, K, seed = size
    rng = np.random.default_rng(seed)
    logits = uniform(rng, N, K)
    target = probability_rows(rng, N, K, soft)
    check_op(
        [logits, target],
        loss_op(softmax_cross_entropy),
        F.cross_entropy,  # probability targets: mean over samples of -sum(t * log_softmax)
        naive=loss_op(naive.softmax_cross_entropy),
        finite_differences=True,
        tol=1e-12,
        fd_tol=1e-8,
    )


def test_cross_entropy_with_one_hot_targets_equals_torch_with_class_indices():
    rng = np.random.default_rng(3)
    logits, labels = uniform(rng, 6, 4), rng.integers(4, size=6)
    loss, grad = softmax_cross_entropy(logits, np.eye(4)[labels])
    t = torch.tensor(logits, requires_grad=True)
    t_loss = F.cross_entropy(t, torch.tensor(labels))
    t_loss.backward()
    assert_close(loss, t_loss, 1e-14, "loss")
    assert_close(grad, t.grad, 1e-14, "gradient")


def test_cross_entropy_gradient_for_rows_not_summing_to_one_matches_torch():
    # The formula (softmax * sum(t) - t) / N is the gradient for any target mass, not only 1.
    rng = np.random.default_rng(4)
    logits, target = uniform(rng, 3, 4), rng.uniform(0, 2, size=(3, 4))
    check_op([logits, target], loss_op(softmax_cross_entropy), F.cross_entropy, tol=1e-12)


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e300])
def test_cross_entropy_is_stable_for_huge_logits(scale):
    logits = np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * scale
    target = np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    # No overflow, no log(0), no 0/0 anywhere (exp underflowing to 0 is harmless, and expected).
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        loss, grad = softmax_cross_entropy(logits, target)
        naive_loss, naive_grad = naive.softmax_cross_entropy(logits, target)
        p = softmax(logits)
        logp = log_softmax(logits)
    assert np.isfinite(loss) and np.isfinite(grad).all() and np.isfinite(logp).all()
    assert_close(p.sum(axis=1), np.ones(2), 1e-15, "softmax rows")
    assert_close(naive_loss, loss, 1e-12, "naive loss")
    assert_close(naive_grad, grad, 1e-12, "naive gradient")
    if scale <= 1e4:  # within PyTorch's float64 range for its own stable log_softmax
        t = torch.tensor(logits, requires_grad=True)
        t_loss = F.cross_entropy(t, torch.tensor(target))
        t_loss.backward()
        assert_close(loss, t_loss, 1e-12, "loss vs torch")
        assert_close(grad, t.grad, 1e-12, "gradient vs torch")


def test_softmax_and_log_softmax_agree_with_torch():
    logits = uniform(np.random.default_rng(5), 4, 6) * 50
    assert_close(softmax(logits), torch.softmax(torch.tensor(logits), 1), 1e-14, "softmax")
    assert_close(log_softmax(logits), torch.log_softmax(torch.tensor(logits), 1), 1e-14, "log")


@pytest.mark.parametrize("loss_fn", [mse_loss, softmax_cross_entropy])
def test_chunks_with_n_total_add_up_to_the_whole_batch(loss_fn):
    rng = np.random.default_rng(6)
    pred = uniform(rng, 7, 3)
    target = probability_rows(rng, 7, 3)
    whole_loss, whole_grad = loss_fn(pred, target)
    parts = [
        loss_fn(pred[s], target[s], n_total=7) for s in (slice(0, 3), slice(3, 4), slice(4, 7))
    ]
    assert_close(sum(p[0] for p in parts), whole_loss, 1e-14, "loss")
    assert_close(np.concatenate([p[1] for p in parts]), whole_grad, 1e-15, "gradient")


def test_losses_do_not_modify_their_inputs():
    rng = np.random.default_rng(7)
    pred, target = uniform(rng, 3, 2), probability_rows(rng, 3, 2)
    before = pred.copy(), target.copy()
    mse_loss(pred, target)
    softmax_cross_entropy(pred, target)
    assert np.array_equal(pred, before[0]) and np.array_equal(target, before[1])
