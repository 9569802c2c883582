"""JSON values of a model file's config: what counts as an int or a number (``True`` does not),
and Python/NumPy scalars turned into plain JSON."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    return type(value) is int


def is_number(value: Any) -> bool:
    return type(value) in (int, float)


def is_float_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_number(v) for v in value)


def json_scalar(value: Any, name: str) -> Any:
    """``value`` (None, a bool, str, int or real, NumPy's included) as a plain JSON scalar;
    ``TypeError`` naming ``name`` for anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{name}={value!r} cannot be stored in a model file's JSON config")


def plain_json(value: Any, name: str) -> Any:
    """``value`` (nested dicts and lists of scalars, e.g. a bit generator's state) as plain
    JSON."""
    if isinstance(value, dict):
        return {str(k): plain_json(v, name) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v, name) for v in value]
    return json_scalar(value, name)
