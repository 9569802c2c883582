"""Update rules behind one small interface: ``step(params, grads)`` updates ``params`` in place.

The formulas are PyTorch's (``torch.optim.SGD`` and ``torch.optim.Adam`` with default options),
so a run can be checked step by step against PyTorch. Each optimizer's whole state is a dict of
arrays and numbers (``state_dict``/``load_state_dict``): checkpoints store it, so a resumed run
continues exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._validation import check_positive_float, check_unit_interval


class Optimizer:
    """Base class: subclasses implement :meth:`step`; state lives in plain attributes."""

    lr: float

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum, as ``torch.optim.SGD``:

    ``v = momentum * v + g``; ``p -= lr * v`` (Nesterov: ``p -= lr * (g + momentum * v)``).
    With ``momentum=0`` this is ``p -= lr * g``, the seed's update, bit for bit.
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False) -> None:
        self.lr = check_positive_float("lr", lr)
        self.momentum = check_unit_interval("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.velocity: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        if self.momentum == 0.0:
            for p, g in zip(params, grads):
                g *= self.lr  # the gradients are ours to overwrite: no temporary
                p -= g
            return
        if self.velocity is None:
            # PyTorch starts the buffer at the first gradient (not at zero).
            self.velocity = [g.copy() for g in grads]
        else:
            for v, g in zip(self.velocity, grads):
                v *= self.momentum
                v += g
        for p, g, v in zip(params, grads, self.velocity):
            update = g + self.momentum * v if self.nesterov else v
            p -= self.lr * update

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
        }
        if self.velocity is not None:
            for i, v in enumerate(self.velocity):
                state[f"velocity_{i}"] = v.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.nesterov = bool(state["nesterov"])
        keys = sorted((k for k in state if k.startswith("velocity_")), key=lambda k: int(k[9:]))
        self.velocity = [np.array(state[k]) for k in keys] or None


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam``:

    ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g**2``;
    ``p -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)``.
    """

    def __init__(
        self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.lr = check_positive_float("lr", lr)
        self.beta1 = check_unit_interval("beta1", beta1)
        self.beta2 = check_unit_interval("beta2", beta2)
        self.eps = check_positive_float("eps", eps)
        self.t = 0
        self.m: list[np.ndarray] | None = None
        self.v: list[np.ndarray] | None = None

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        bias1 = 1.0 - b1**self.t
        bias2_sqrt = np.sqrt(1.0 - b2**self.t)
        # Every pass writes into an existing array (the gradients are ours to overwrite, plus
        # one scratch buffer), in the parameters' dtype: no temporaries to allocate per step.
        for p, g, m, v in zip(params, grads, self.m, self.v):
            scratch = self._scratch(p)
            np.multiply(g, g, out=scratch)
            scratch *= 1.0 - b2
            v *= b2
            v += scratch  # v = b2*v + (1-b2)*g**2
            m *= b1
            g *= 1.0 - b1
            m += g  # m = b1*m + (1-b1)*g
            np.sqrt(v, out=scratch)
            scratch /= bias2_sqrt
            scratch += self.eps  # sqrt(v / (1 - b2**t)) + eps
            np.multiply(m, self.lr / bias1, out=g)
            g /= scratch
            p -= g

    def _scratch(self, p: np.ndarray) -> np.ndarray:
        """A buffer shaped like ``p``, of its dtype, reused across parameters and steps."""
        buffer = getattr(self, "_buffer", None)
        if buffer is None or buffer.dtype != p.dtype or buffer.size < p.size:
            buffer = self._buffer = np.empty(max(p.size, 1 if buffer is None else buffer.size),
                                             dtype=p.dtype)  # fmt: skip
        return buffer[: p.size].reshape(p.shape)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "t": self.t,
        }
        if self.m is not None and self.v is not None:
            for i, (m, v) in enumerate(zip(self.m, self.v)):
                state[f"m_{i}"] = m.copy()
                state[f"v_{i}"] = v.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr, self.eps = float(state["lr"]), float(state["eps"])
        self.beta1, self.beta2 = float(state["beta1"]), float(state["beta2"])
        self.t = int(state["t"])
        n = sum(1 for k in state if k.startswith("m_"))
        self.m = [np.array(state[f"m_{i}"]) for i in range(n)] or None
        self.v = [np.array(state[f"v_{i}"]) for i in range(n)] or None


def make_optimizer(
    name: str, lr: float, momentum: float = 0.9, nesterov: bool = False
) -> Optimizer:
    """``"sgd"`` (with ``momentum``) or ``"adam"``."""
    if name == "sgd":
        return SGD(lr, momentum=momentum, nesterov=nesterov)
    if name == "adam":
        return Adam(lr)
    raise ValueError(f"solver must be 'sgd' or 'adam', got {name!r}")
