"""Shared test helpers: ONE comparison helper for every op, in the style of tinygrad's test_ops.

``check_op`` runs an op in tinycnn and in PyTorch float64 autograd, and compares the forward
output and the gradient of every input; optionally also against the plain-loop ``tinycnn.naive``
version and against central finite differences (``tinycnn.gradcheck.numerical_gradient``).

Inputs are drawn uniformly from [-2, 2] (``uniform``) so that both sides of ReLU are reached.

Relative error, everywhere in these tests, is ``max|actual - expected| / max|expected|`` over the
whole array (``rel_error``): normalising by the array's largest entry rather than entry by entry
keeps near-zero entries (a dead ReLU unit, a pixel no window reaches, a gradient that happens to
cancel) from turning rounding noise into a huge "relative" error. When ``expected`` is all zeros
the absolute error is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import settings

from tinycnn.gradcheck import numerical_gradient

# Two test workers share two cores: one thread each keeps them from fighting over the CPU.
torch.set_num_threads(1)

# deadline=None: timings on a shared 2-core machine are noise, never a test failure.
settings.register_profile("tinycnn", deadline=None, max_examples=30, print_blob=True)
settings.load_profile("tinycnn")


def rel_error(actual, expected) -> float:
    """``max|actual - expected| / max|expected|`` over the array (see the module docstring)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    if actual.size == 0:
        return 0.0
    diff = float(np.max(np.abs(actual - expected)))
    scale = float(np.max(np.abs(expected)))
    return diff / scale if scale > 0 else diff


def assert_close(actual, expected, tol: float, what: str = "value") -> None:
    """Assert ``rel_error(actual, expected) <= tol`` with a message naming ``what``."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    err = rel_error(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def uniform(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """float64 entries uniform in [-2, 2]: both sides of ReLU, magnitudes near 1."""
    return rng.uniform(-2.0, 2.0, size=shape)


@dataclass(frozen=True)
class OpImpl:
    """One implementation of an op as a forward/backward pair of plain functions.

    ``forward(*inputs) -> out`` (an array or a scalar); ``backward(dout, *inputs) -> grads``,
    one gradient per input, ``None`` for an input the op does not differentiate (a target).
    """

    forward: Callable[..., np.ndarray | float]
    backward: Callable[..., Sequence[np.ndarray | None]]


def check_op(
    inputs: Sequence[np.ndarray],
    fast: OpImpl,
    torch_forward: Callable[..., torch.Tensor],
    *,
    naive: OpImpl | None = None,
    finite_differences: bool = False,
    tol: float = 1e-10,
    fd_tol: float = 1e-6,
    seed: int = 0,
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Compare ``fast`` with PyTorch float64 autograd (and with ``naive`` / finite differences).

    A random ``dout`` from [-2, 2] of the output's shape (a scalar for a loss) is back-propagated
    through both; the forward outputs and every input's gradient must agree to ``tol``. Finite
    differences differentiate the scalar ``sum(forward(*inputs) * dout)`` and must agree to
    ``fd_tol``. Returns the fast op's output and gradients.
    """
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    out = np.asarray(fast.forward(*inputs))
    dout = np.asarray(uniform(np.random.default_rng(seed), *out.shape))
    grads = list(fast.backward(dout, *inputs))
    assert len(grads) == len(inputs), "backward must return one gradient (or None) per input"

    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    t_out = torch_forward(*tensors)
    assert_close(out, t_out, tol, "forward vs torch")
    t_out.backward(torch.tensor(dout, dtype=torch.float64))
    for i, (g, t) in enumerate(zip(grads, tensors)):
        if g is not None:
            assert g.shape == inputs[i].shape, f"gradient {i} has shape {g.shape}"
            assert_close(g, t.grad, tol, f"gradient of input {i} vs torch")

    if naive is not None:
        assert_close(out, naive.forward(*inputs), tol, "forward vs naive")
        for i, (g, n) in enumerate(zip(grads, naive.backward(dout, *inputs))):
            if g is not None:
                assert_close(g, n, tol, f"gradient of input {i} vs naive")

    if finite_differences:

        def scalar() -> float:
            return float(np.vdot(np.asarray(fast.forward(*inputs)), dout))

        # Central differences have two errors: truncation, O(h^2), bounded by fd_tol relative to
        # the gradient; and rounding: f = sum(out * dout) is computed to about eps * S, where
        # S = sum|out * dout|, so each difference quotient carries about eps * S / h however
        # small the true gradient entry is (a cancelling sum). That is allowed on top.
        eps = np.finfo(np.float64).eps
        rounding = FD_ROUNDING_FACTOR * eps * float(np.abs(out * dout).sum()) / FD_STEP
        for i, (g, x) in enumerate(zip(grads, inputs)):
            if g is not None:
                numeric = numerical_gradient(scalar, x, h=FD_STEP)
                err = float(np.max(np.abs(g - numeric), initial=0.0))
                allowed = fd_tol * float(np.max(np.abs(numeric), initial=0.0)) + rounding
                assert err <= allowed, (
                    f"gradient of input {i} vs finite differences: max error {err:.3g} > "
                    f"{allowed:.3g} ({fd_tol:g} relative + {rounding:.3g} for rounding)"
                )
    return out, grads


# Finite differences: the step, and how many times eps * sum|out * dout| the rounding of the
# scalar may reach (a few roundings per term, summed).
FD_STEP = 1e-6
FD_ROUNDING_FACTOR = 8


def fill_disk_while_writing(monkeypatch, name_suffix: str = "") -> None:
    """Make tinycnn's atomic writer fail like a full disk: the temporary file of any target whose
    name ends with ``name_suffix`` takes half of what it is given, then ``OSError("disk full")``."""
    import builtins

    import tinycnn._files as files

    class HalfWritten:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError("disk full")

    def open_(file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return HalfWritten(handle) if str(file).endswith(name_suffix) else handle

    monkeypatch.setattr(files, "open", open_, raising=False)
