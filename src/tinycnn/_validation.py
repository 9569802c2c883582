"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
with a message that names the argument and quotes the bad value, so a user's mistake never
surfaces as a NumPy broadcasting error, an ``IndexError`` or a silent NaN deep inside the math.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_real_array(
    name: str,
    value: Any,
    ndim: int | tuple[int, ...] | None = None,
    dtype: Any = np.float64,
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Return ``value`` as a floating array of ``dtype`` after checking it is real, numeric data.

    Booleans, integers and floats are accepted; strings (even of digits), objects and complex
    numbers are refused with ``TypeError``. ``ndim`` is the required number of dimensions (or a
    tuple of allowed ones). Non-finite entries are refused with ``ValueError`` when ``finite``.
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got a string {_short(value)}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must hold real numbers, got complex dtype {arr.dtype}")
    if kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers, got dtype {arr.dtype} "
            f"(e.g. {_short(arr.flat[0]) if arr.size else 'empty'})"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(
                f"{name} must be {want}-dimensional, got {arr.ndim} dimensions "
                f"with shape {arr.shape}"
            )
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)].flat[0]
        raise ValueError(f"{name} must be finite, but it contains {bad!r}")
    return arr


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int``; refuse bools, floats and anything below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_short(value)} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_real(name: str, value: Any) -> float:
    """Return ``value`` as a ``float``; refuse bools, strings and anything not a real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number, got {_short(value)} ({type(value).__name__})"
        )
    return float(value)


def check_positive_float(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` that is finite and strictly positive."""
    value = _check_real(name, value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_unit_interval(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` in ``[0, 1)`` (a momentum or a decay rate)."""
    value = _check_real(name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def check_float_dtype(name: str, value: Any) -> np.dtype:
    """Return the NumPy dtype for ``value``; only float32 and float64 are supported."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be np.float32 or np.float64, got {_short(value)}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{name} must be np.float32 or np.float64, got {dt}")
    return dt


def check_conv_geometry(
    input_hw: tuple[int, int], kernel_size: int, stride: Any, pad: Any, what: str = "x"
) -> tuple[int, int, int, int]:
    """Check stride/pad and that the kernel fits; return ``(stride, pad, out_h, out_w)``.

    ``out = (size + 2*pad - kernel_size) // stride + 1`` along each of H and W.
    """
    stride = check_int("stride", stride, minimum=1)
    pad = check_int("pad", pad, minimum=0)
    H, W = input_hw
    if kernel_size > H + 2 * pad or kernel_size > W + 2 * pad:
        raise ValueError(
            f"kernel size {kernel_size} is larger than the padded input: {what} is {H}x{W} "
            f"with pad={pad}, i.e. {H + 2 * pad}x{W + 2 * pad}"
        )
    out_h = (H + 2 * pad - kernel_size) // stride + 1
    out_w = (W + 2 * pad - kernel_size) // stride + 1
    return stride, pad, out_h, out_w
