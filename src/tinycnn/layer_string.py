"""A stack of layers written as one short string, for the estimators' ``layers`` and the
command's ``--layers``.

The string is a list of tokens joined by ``-`` (spaces around a ``-`` are allowed, letters may be
upper or lower case)::

    conv<F>k<K>[s<S>][p<P>]   Conv2d(F, K, stride=S, pad=P)    conv6k5p2, conv32k3s2p1
    relu                      ReLU()
    max<N>[s<S>]              MaxPool2d(N, stride=S)           max2, max3s2
    avg<N>[s<S>]              AvgPool2d(N, stride=S)           avg2
    flatten                   Flatten()
    dense<U>                  Dense(U)                         dense120

LeNet-5's hidden stack, as the estimators take it (they append the output ``Dense``)::

    conv6k5p2-relu-max2-conv16k5-relu-max2-flatten-dense120-relu-dense84-relu

:func:`layers_to_string` writes the string of a stack; :func:`parse_layers` reads it back to
equal layers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .layers import AvgPool2d, Conv2d, Dense, Flatten, Layer, MaxPool2d, ReLU

# One pattern per layer: the token must match it whole.
_TOKENS: dict[str, tuple[re.Pattern[str], str]] = {
    "conv": (
        re.compile(
            r"conv(?P<filters>\d+)k(?P<kernel_size>\d+)(?:s(?P<stride>\d+))?(?:p(?P<pad>\d+))?"
        ),
        "conv<filters>k<kernel size>[s<stride>][p<padding>], e.g. conv6k5p2",
    ),
    "relu": (re.compile(r"relu"), "relu"),
    "max": (
        re.compile(r"max(?P<size>\d+)(?:s(?P<stride>\d+))?"),
        "max<size>[s<stride>], e.g. max2",
    ),
    "avg": (
        re.compile(r"avg(?P<size>\d+)(?:s(?P<stride>\d+))?"),
        "avg<size>[s<stride>], e.g. avg2",
    ),
    "flatten": (re.compile(r"flatten"), "flatten"),
    "dense": (re.compile(r"dense(?P<units>\d+)"), "dense<units>, e.g. dense120"),
}
_BUILDERS = {
    "conv": Conv2d,
    "relu": ReLU,
    "max": MaxPool2d,
    "avg": AvgPool2d,
    "flatten": Flatten,
    "dense": Dense,
}
GRAMMAR = "; ".join(form for _, form in _TOKENS.values())


def parse_layers(text: str, name: str = "layers") -> tuple[Layer, ...]:
    """The layers a string of tokens joined by ``-`` describes (grammar: the module docstring).

    A bad token raises ``ValueError`` naming ``name``, the token, its position (1-based, and
    the character it starts at) and the form it should take.
    """
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string of layers, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} is empty: give layers such as 'conv8k3p1-relu-max2' ({GRAMMAR})")
    layers = []
    start = 0
    for position, raw in enumerate(text.split("-"), start=1):
        token = raw.strip().lower()
        where = f"token {position} of {name}={text!r} (at character {start + _lead(raw)})"
        start += len(raw) + 1
        if not token:
            raise ValueError(f"{where} is empty: tokens are joined by single '-'")
        kind = next(
            (k for k in sorted(_TOKENS, key=len, reverse=True) if token.startswith(k)), None
        )
        if kind is None:
            raise ValueError(f"{where}, {raw.strip()!r}, is not a layer; layers are: {GRAMMAR}")
        pattern, form = _TOKENS[kind]
        match = pattern.fullmatch(token)
        if match is None:
            raise ValueError(f"{where}, {raw.strip()!r}, is not {form}")
        values = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        try:
            layers.append(_BUILDERS[kind](**values))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}, {raw.strip()!r}: {exc}") from None
    return tuple(layers)


def _lead(raw: str) -> int:
    return len(raw) - len(raw.lstrip())


def layers_to_string(layers: Sequence[Layer]) -> str:
    """The string :func:`parse_layers` reads back to ``layers``."""
    return "-".join(_token(layer) for layer in layers)


def _token(layer: Layer) -> str:
    if isinstance(layer, Conv2d):
        token = f"conv{layer.filters}k{layer.kernel_size}"
        token += f"s{layer.stride}" if layer.stride != 1 else ""
        return token + (f"p{layer.pad}" if layer.pad else "")
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        token = f"{'max' if isinstance(layer, MaxPool2d) else 'avg'}{layer.size}"
        return token + (f"s{layer.stride}" if layer.stride is not None else "")
    if isinstance(layer, Dense):
        return f"dense{layer.units}"
    if isinstance(layer, ReLU):
        return "relu"
    if isinstance(layer, Flatten):
        return "flatten"
    raise TypeError(f"{layer!r} is not a layer")
