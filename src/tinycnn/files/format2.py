"""Model files and checkpoints of format 2: any stack, parameters per layer. tinycnn writes
every model in this format, the one-conv-layer shorthand's included.

The container (:mod:`.container`) holds the JSON config and these members:

- ``params.<i>.kernel`` ``(F, C, k, k)`` and ``params.<i>.bias`` ``(F,)`` for a ``Conv2d`` at
  position ``i`` of the network (the estimator's ``network_``, output ``Dense`` included),
  ``params.<i>.W`` ``(n_in, units)`` and ``params.<i>.b`` ``(units,)`` for a ``Dense``: the
  weights, in the estimator's dtype, in the order of :attr:`tinycnn.Sequential.param_shapes`;
- ``input_mean``, ``input_std`` ``(C,)`` float64: the input standardisation;
- ``classes`` ``(O,)``: the classifier's labels (numbers or strings);
- a checkpoint adds ``state.optimizer.<key>`` (shaped like the parameter ``<key>`` ends with the
  index of) and ``state.best.<i>.<name>`` (the best weights, named like ``params.<i>.<name>``);
  the rest of its state is JSON (:mod:`.state`).

The config (a JSON object, keys sorted)::

    format          "tinycnn-model"
    format_version  2
    kind            "model" or "checkpoint"
    class           "CNNClassifier" or "CNNRegressor"
    tinycnn_version the version that wrote it
    params          the estimator's get_params(); dtype as "float32"/"float64", image_shape a
                    list, layers null, a string (kept as given) or a list of one token per layer
                    (a tuple of layers), random_state null unless an int
    network         {"layers": the whole stack in the grammar of tinycnn.layer_string (output
                    Dense included), "input_shape": [C, H, W]}
    fitted          image_shape, n_features_in, n_outputs, n_iter, loss_curve, validation_scores
                    (null without early stopping), feature_names_in (null or strings)
    arrays          {member: {"shape": [...], "dtype": "<f8"}} for every member
    state           null for a model; a checkpoint's training state (tinycnn.files.state)

Reading checks the stored network against the estimator's parameters (the stack they give on
``input_shape`` must equal it), then every array's shape against the network's.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._version import __version__
from ..layer_string import layers_to_string, parse_layers
from ..layers import Conv2d, Dense
from ..model import Sequential
from ..training import History, TrainingState
from ._json import is_int, json_scalar
from .container import FORMAT
from .reading import ModelReader
from .state import state_content

VERSION = 2
CONFIG_KEYS = frozenset(
    {"format", "format_version", "kind", "class", "tinycnn_version", "params", "network",
     "fitted", "arrays", "state"}
)  # fmt: skip
FITTED_KEYS = frozenset(
    {"image_shape", "n_features_in", "n_outputs", "n_iter", "loss_curve", "validation_scores",
     "feature_names_in"}
)  # fmt: skip
# The names of a layer's parameter arrays, in Sequential's order.
PARAM_NAMES = {Conv2d: ("kernel", "bias"), Dense: ("W", "b")}


def param_suffixes(stack: Sequential) -> list[str]:
    """``"<i>.<name>"`` for every parameter array of ``stack``, in order (``0.kernel``, ...)."""
    out = []
    for i, (layer, shape) in enumerate(zip(stack.layers, stack.shapes)):
        names = PARAM_NAMES.get(type(layer), ())
        assert len(names) == len(layer.param_shapes(shape)), layer
        out.extend(f"{i}.{name}" for name in names)
    return out


# ---------------------------------------------------------------------------------- writing


def model_content(
    est: Any, params: Any, mean: np.ndarray, std: np.ndarray, history: History | None, kind: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config, members)`` of the fitted ``est`` with weights ``params`` and standardisation
    ``mean``, ``std``; ``history`` None rebuilds it from the attributes (a loaded model)."""
    stack = est.network_
    members: dict[str, np.ndarray] = {}
    for suffix, value in zip(param_suffixes(stack), params, strict=True):
        members[f"params.{suffix}"] = np.ascontiguousarray(value)
    members["input_mean"] = np.ascontiguousarray(mean, dtype=np.float64)
    members["input_std"] = np.ascontiguousarray(std, dtype=np.float64)
    if hasattr(est, "classes_"):
        members["classes"] = _savable_classes(est.classes_)
    if history is None:
        history = History(
            epochs_run=int(est.n_iter_),
            loss_curve=list(est.loss_curve_),
            validation_scores=list(est.validation_scores_ or []),
        )
    validation = list(history.validation_scores) if est.early_stopping else None
    fitted = {
        "image_shape": [int(v) for v in est.image_shape_],
        "n_features_in": int(est.n_features_in_),
        "n_outputs": int(est.n_outputs_),
        "n_iter": int(history.epochs_run),
        "loss_curve": [float(v) for v in history.loss_curve],
        "validation_scores": validation,
        "feature_names_in": (
            [str(v) for v in est.feature_names_in_] if hasattr(est, "feature_names_in_") else None
        ),
    }
    config = {
        "format": FORMAT,
        "format_version": VERSION,
        "kind": kind,
        "class": type(est).__name__,
        "tinycnn_version": __version__,
        "params": _params_config(est),
        "network": {
            "layers": layers_to_string(stack.layers),
            "input_shape": [int(v) for v in stack.input_shape],
        },
        "fitted": fitted,
        "arrays": {},
        "state": None,
    }
    return config, members


def checkpoint_content(
    est: Any, state: TrainingState
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config, members)`` of the model as it is after ``state.epoch`` epochs plus the
    training state."""
    dtype = est.params_[0].dtype
    params = [np.asarray(p, dtype=dtype) for p in state.params]
    mean = np.asarray(state.input_mean, dtype=np.float64)
    std = np.asarray(state.input_std, dtype=np.float64)
    config, members = model_content(est, params, mean, std, state.history, "checkpoint")
    config["state"], state_members = state_content(state, param_suffixes(est.network_), dtype)
    members.update(state_members)
    return config, members


def _savable_classes(classes: np.ndarray) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.dtype.kind == "O":
        if all(isinstance(v, str) for v in classes):
            return classes.astype(str)
        raise ValueError(
            f"classes_ holds objects of types {sorted({type(v).__name__ for v in classes})}; "
            "a model file stores only numeric or string labels"
        )
    return np.ascontiguousarray(classes)


def _params_config(est: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in est.get_params(deep=False).items():
        if key == "dtype":
            out[key] = np.dtype(value).name
        elif key == "image_shape":
            out[key] = None if value is None else [int(v) for v in value]
        elif key == "random_state" and not isinstance(value, (type(None), numbers.Integral)):
            out[key] = None  # a RandomState instance has no file form; refits draw fresh seeds
        elif key == "layers" and value is not None and not isinstance(value, str):
            out[key] = [layers_to_string([layer]) for layer in value]  # read back as a tuple
        else:
            out[key] = json_scalar(value, key)
    return out


# ---------------------------------------------------------------------------------- reading


class Format2Reader(ModelReader):
    fitted_keys = FITTED_KEYS

    def check_config(self) -> None:
        config = self.config
        if set(config) != CONFIG_KEYS:
            raise self.fail(f"config keys are {sorted(config)}, expected {sorted(CONFIG_KEYS)}")
        if not isinstance(config["tinycnn_version"], str):
            raise self.fail(f"tinycnn_version {config['tinycnn_version']!r} is not a string")
        if config["kind"] == "model" and config["state"] is not None:
            raise self.fail("a model file carries a state; only a checkpoint does")

    def network(self, est: Any):
        from ..estimators._network import default_layers, names_no_network, network_of

        network = self.config["network"]
        if not isinstance(network, dict) or set(network) != {"layers", "input_shape"}:
            raise self.fail(f"network is not {{layers, input_shape}}: {network!r}")
        text, shape = network["layers"], network["input_shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != 3
            or not all(is_int(v) and v >= 1 for v in shape)
        ):
            raise self.fail(f"network.input_shape {shape!r} is not [C, H, W]")
        try:
            stack = Sequential(parse_layers(text, "network.layers"), tuple(shape))
        except (TypeError, ValueError) as exc:
            raise self.fail(f"the stored network is not a stack on {shape}: {exc}") from None
        if names_no_network(est) and default_layers(stack.input_shape) != tuple(stack.layers[:-1]):
            # Saved under another version's default network: name the stored one (all but its
            # output Dense), so that the model predicts, warm-starts and resumes with the
            # network the file holds rather than with today's default.
            est.set_params(layers=layers_to_string(stack.layers[:-1]))
        try:
            implied = network_of(est, stack.input_shape, stack.n_outputs)
        except ValueError as exc:
            raise self.fail(f"the parameters do not fit the stored network: {exc}") from None
        if implied.stack != stack:
            raise self.fail(
                f"the stored network {text!r} is not the one the parameters give "
                f"({layers_to_string(implied.stack.layers)!r})"
            )
        return implied, param_suffixes(stack)
