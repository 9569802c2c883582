"""Checks of ``X`` and ``y`` that scikit-learn's validation does not make, or words badly."""

from __future__ import annotations

from typing import Any

import numpy as np


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def refuse_non_real(name: str, value: Any) -> None:
    """Refuse strings (even of digits) and complex numbers before scikit-learn would convert
    them, with a message naming ``name``. Object arrays of numbers pass (scikit-learn converts
    them); object arrays holding strings do not."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got a string {short(value)}")
    if not isinstance(value, np.ndarray) and (
        hasattr(value, "dtypes") or hasattr(value, "__array_namespace__")
    ):
        return  # data frames and other libraries' arrays: scikit-learn checks them
    if not hasattr(value, "dtype") and isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError):
            return  # ragged: scikit-learn reports it
    dtype = getattr(value, "dtype", None)
    if not isinstance(dtype, np.dtype):
        return
    if dtype.kind in "USV":
        raise TypeError(
            f"{name} must hold real numbers, got dtype {dtype}; strings are never converted, "
            "not even strings of digits"
        )
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has complex dtype {dtype}")
    if dtype.kind == "O" and isinstance(value, np.ndarray):
        for item in value.flat:
            if isinstance(item, (str, bytes)):
                raise TypeError(
                    f"{name} must hold real numbers, got the string {short(item)} in an "
                    "object array; strings are never converted"
                )


def without_nan_advice(message: str, name: str) -> str:
    """scikit-learn's NaN error without its 400 characters of advice about other estimators."""
    advice = f"\n{name} does not accept missing values encoded as NaN natively."
    if advice not in message:
        return message
    return (
        message.split(advice)[0]
        + f" {name} does not accept missing values: impute them (sklearn.impute) or drop "
        "those samples first"
    )


def refuse_complex(name: str, value: Any) -> None:
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has complex dtype {dtype}")
