"""Check any forward/backward pair against central finite differences.

>>> import numpy as np, tinycnn
>>> rng = np.random.default_rng(0)
>>> x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
>>> b = rng.standard_normal(4)
>>> report = tinycnn.gradcheck.check_gradients(
...     lambda x, w, b: tinycnn.conv2d_forward(x, w, b, stride=2, pad=1),
...     lambda dout, x, w, b: tinycnn.conv2d_backward(dout, x, w, stride=2, pad=1),
...     [x, w, b])
>>> report.max_error < 1e-7
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max(max|a|, max|b|)`` over the whole arrays: 0 for equal arrays, ~1 for
    unrelated ones.

    The error is measured against the arrays' largest entry, not entry by entry: finite
    differences carry an absolute rounding error of about ``eps * |f| / h`` in every entry, which
    entry by entry would make any gradient with a near-zero entry (a dead ReLU, a cancelling sum)
    look wrong. The price: a mistake confined to entries far smaller than the largest one goes
    unseen.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    diff = float(np.max(np.abs(a - b)))
    if diff == 0.0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    return diff / scale


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` of scalar ``f`` for each entry of
    ``x`` (perturbed in place and restored); the result has ``x``'s shape."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


@dataclass
class GradcheckReport:
    """Per-input relative errors between analytic and numerical gradients."""

    errors: list[float]

    @property
    def max_error(self) -> float:
        return max(self.errors) if self.errors else 0.0


def check_gradients(
    forward: Callable[..., np.ndarray],
    backward: Callable[..., Sequence[np.ndarray] | np.ndarray],
    inputs: Sequence[np.ndarray],
    h: float = 1e-6,
    seed: int = 0,
) -> GradcheckReport:
    """Compare ``backward`` with finite differences of ``forward``.

    ``forward(*inputs) -> out`` (any shape); ``backward(dout, *inputs) -> grads``, one gradient
    per input (or a single array for one input). A fixed random ``dout`` turns the output into the
    scalar ``sum(out * dout)``, whose gradient with respect to each input is what ``backward``
    returns. Inputs should be float64 arrays; they are copied, never modified.
    """
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    out = np.asarray(forward(*inputs))
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = backward(dout, *inputs)
    if isinstance(analytic, np.ndarray):
        analytic = [analytic]
    if len(analytic) != len(inputs):
        raise ValueError(f"backward returned {len(analytic)} gradients for {len(inputs)} inputs")
    errors = []
    for x, g in zip(inputs, analytic):
        numeric = numerical_gradient(lambda: float(np.vdot(forward(*inputs), dout)), x, h)
        errors.append(relative_error(g, numeric))
    return GradcheckReport(errors)
