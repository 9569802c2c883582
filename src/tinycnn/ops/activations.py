"""ReLU and its gradient."""

from __future__ import annotations

import numpy as np

from .._validation import check_real_array


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` elementwise; any shape in, the same shape out."""
    x = check_real_array("x", x, dtype=None, allow_empty=True, finite=False)
    return np.maximum(x, 0)


def relu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``dout * (x > 0)``: the gradient is 0 where the pre-activation ``x`` is exactly 0.

    ``dout`` and ``x`` have the same (any) shape; so does the result.
    """
    x = check_real_array("x", x, dtype=None, allow_empty=True, finite=False)
    dout = check_real_array("dout", dout, dtype=None, allow_empty=True, finite=False)
    if dout.shape != x.shape:
        raise ValueError(f"dout has shape {dout.shape} but x has shape {x.shape}; they must match")
    return dout * (x > 0)
