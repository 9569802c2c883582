"""Reading an estimator from a container's ``(config, arrays)``: what every format shares.

:class:`ModelReader` rebuilds the estimator from its stored parameters, asks its format for the
network the file holds (:meth:`ModelReader.network`), and checks everything else against that
network: the fitted attributes, the shape, dtype and finiteness of every weight, the input
standardisation, the classes, and for a checkpoint the training state (:mod:`.state`). Every
member must be used by something; any failure is a :class:`tinycnn.ModelFileError` naming the
file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelFileError
from ..layer_string import parse_layers
from ._json import is_float_list, is_int
from .state import read_state

KINDS = ("model", "checkpoint")
CLASSES = ("CNNClassifier", "CNNRegressor")


class ModelReader:
    """Checks one file's ``(config, arrays)`` and builds the estimator (and state) they
    describe; a subclass per format says where the network is (:meth:`network`)."""

    # The keys config["fitted"] must have (None: not checked as a whole).
    fitted_keys: frozenset[str] | None = None

    def __init__(self, path: str, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.config = config
        self.arrays = arrays
        self.used: set[str] = set()

    def fail(self, reason: str) -> ModelFileError:
        return ModelFileError(self.path, reason)

    # -- hooks of a format

    def check_config(self) -> None:
        """Format-specific checks of the config as a whole, before anything is built."""

    def network(self, est: Any):
        """``(network, member suffixes)``: the :class:`~tinycnn.estimators._network.Network`
        the file holds (checked against ``est``'s parameters), and the name of each of its
        parameter arrays after ``params.`` (and ``state.best.``), in the stack's order."""
        raise NotImplementedError

    # -- the whole

    def read(self, want_state: bool):
        config = self.config
        if config.get("kind") not in KINDS:
            raise self.fail(f"kind {config.get('kind')!r} is not one of {KINDS}")
        if config.get("class") not in CLASSES:
            raise self.fail(f"class {config.get('class')!r} is not one of {CLASSES}")
        for key in ("params", "fitted"):
            if not isinstance(config.get(key), dict):
                raise self.fail(f"config[{key!r}] is missing or not a dict")
        self.check_config()
        est, dtype = self.estimator()
        network, suffixes = self.network(est)
        self.fitted(est, network, suffixes, dtype)
        state = None
        if config["kind"] == "checkpoint":
            state = read_state(self, config.get("state"), est, network, suffixes, dtype)
        unused = sorted(set(self.arrays) - self.used)
        if unused:
            raise self.fail(f"members not used by the {config['kind']}: {unused}")
        if want_state and state is None:
            raise self.fail("it is a model file, not a checkpoint: it carries no training state")
        return est, state

    def estimator(self):
        """The estimator of the stored class and parameters (unfitted), and its dtype."""
        from sklearn.utils._param_validation import InvalidParameterError

        from .._validation import check_float_dtype
        from ..estimators import CNNClassifier, CNNRegressor

        cls = {"CNNClassifier": CNNClassifier, "CNNRegressor": CNNRegressor}[self.config["class"]]
        est = cls()
        params = dict(self.config["params"])
        known = set(est.get_params(deep=False))
        if set(params) - known:
            raise self.fail(f"unknown parameters for {cls.__name__}: {sorted(set(params) - known)}")
        if isinstance(params.get("image_shape"), list):
            params["image_shape"] = tuple(params["image_shape"])
        if params.get("dtype") in ("float32", "float64"):
            params["dtype"] = getattr(np, params["dtype"])  # the type, as the user passes it
        if isinstance(params.get("layers"), list):
            params["layers"] = self.layer_tuple(params["layers"])
        est.set_params(**params)
        try:
            est._validate_params()
            dtype = check_float_dtype("dtype", est.dtype)
            est._check_image_shape()
        except (InvalidParameterError, TypeError, ValueError) as exc:
            raise self.fail(f"bad parameters: {exc}") from None
        return est, dtype

    def layer_tuple(self, tokens: list[Any]) -> tuple:
        """The ``layers`` parameter given as a tuple of layers, stored as one token each."""
        layers = []
        for i, token in enumerate(tokens):
            try:
                parsed = parse_layers(token, f"params.layers[{i}]")
            except (TypeError, ValueError) as exc:
                raise self.fail(f"bad parameters: {exc}") from None
            if len(parsed) != 1:
                raise self.fail(f"params.layers[{i}] = {token!r} is not one layer")
            layers.extend(parsed)
        return tuple(layers)

    def fitted(self, est: Any, network: Any, suffixes: Sequence[str], dtype: np.dtype) -> None:
        """Check ``config["fitted"]`` and the model's arrays against ``network``; set the
        fitted attributes of ``est``."""
        from ..estimators import CNNClassifier

        fitted = self.config["fitted"]
        if self.fitted_keys is not None and set(fitted) != self.fitted_keys:
            expected = sorted(self.fitted_keys)
            raise self.fail(f"fitted has keys {sorted(fitted)}, expected {expected}")
        stack = network.stack
        C, H, W = stack.input_shape
        n_outputs = stack.n_outputs
        if fitted.get("image_shape") != [C, H, W]:
            raise self.fail(f"fitted.image_shape {fitted.get('image_shape')!r} != {[C, H, W]}")
        if fitted.get("n_features_in") != C * H * W:
            raise self.fail(f"fitted.n_features_in {fitted.get('n_features_in')!r} != {C * H * W}")
        if fitted.get("n_outputs") != n_outputs:
            raise self.fail(f"fitted.n_outputs {fitted.get('n_outputs')!r} != {n_outputs}")
        declared = est._check_image_shape()
        if declared is not None and declared != (C, H, W):
            raise self.fail(f"the image_shape parameter {declared} != fitted {(C, H, W)}")

        params_ = network.wrap(self.weights("params", suffixes, stack.param_shapes, dtype))
        mean = self.vector("input_mean", C)
        std = self.vector("input_std", C)
        if not (std > 0).all():
            raise self.fail("input_std must be > 0")

        n_iter = fitted.get("n_iter")
        loss_curve = fitted.get("loss_curve")
        if not is_int(n_iter) or n_iter < 0:
            raise self.fail(f"fitted.n_iter = {n_iter!r} is not a count")
        if not is_float_list(loss_curve) or len(loss_curve) != n_iter:
            raise self.fail("fitted.loss_curve is not a list of n_iter numbers")
        validation = fitted.get("validation_scores")
        if validation is not None and not is_float_list(validation):
            raise self.fail("fitted.validation_scores is not a list of numbers")
        names = fitted.get("feature_names_in")
        if names is not None and (
            not isinstance(names, list)
            or len(names) != C * H * W
            or not all(isinstance(v, str) for v in names)
        ):
            raise self.fail("fitted.feature_names_in is not a list of n_features_in strings")

        if isinstance(est, CNNClassifier):
            est.classes_ = self.classes(n_outputs)
        elif "classes" in self.arrays:
            raise self.fail("a regressor's file has a 'classes' member")

        if network.spec is not None:
            est.spec_ = network.spec
        est.network_ = stack
        est.params_ = params_
        est.input_mean_, est.input_std_ = mean, std
        est.image_shape_ = (C, H, W)
        est.n_features_in_ = C * H * W
        est.n_outputs_ = n_outputs
        est.loss_curve_ = [float(v) for v in loss_curve]
        est.n_iter_ = int(n_iter)
        est.best_loss_ = min(est.loss_curve_) if est.loss_curve_ else math.inf
        est.validation_scores_ = list(validation) if validation else None
        est.best_validation_score_ = max(validation) if validation else None
        if names is not None:
            est.feature_names_in_ = np.asarray(names, dtype=object)

    # -- arrays

    def member(self, name: str) -> np.ndarray:
        value = self.arrays.get(name)
        if value is None:
            raise self.fail(f"member {name!r} is missing")
        self.used.add(name)
        return value

    def weights(
        self, prefix: str, suffixes: Sequence[str], shapes: Sequence[tuple[int, ...]], dtype
    ) -> list[np.ndarray]:
        """The arrays ``prefix.suffix``, each of its shape in ``shapes``, of ``dtype``, finite."""
        out = []
        for suffix, shape in zip(suffixes, shapes, strict=True):
            name = f"{prefix}.{suffix}"
            value = self.member(name)
            if value.shape != tuple(shape) or value.dtype != dtype:
                raise self.fail(
                    f"{name} has shape {value.shape} and dtype {value.dtype}; the network "
                    f"needs {tuple(shape)} of {dtype}"
                )
            if not np.isfinite(value).all():
                raise self.fail(f"{name} holds non-finite values")
            out.append(value)
        return out

    def vector(self, name: str, length: int) -> np.ndarray:
        value = self.member(name)
        if value.shape != (length,) or value.dtype != np.float64:
            raise self.fail(f"{name} is {value.shape} of {value.dtype}; want ({length},) float64")
        if not np.isfinite(value).all():
            raise self.fail(f"{name} holds non-finite values")
        return value

    def classes(self, n_outputs: int) -> np.ndarray:
        if "classes" not in self.arrays:
            raise self.fail("a classifier's file needs a 'classes' member")
        classes = self.member("classes")
        if classes.shape != (n_outputs,) or n_outputs < 2:
            raise self.fail(f"classes has shape {classes.shape}, expected ({n_outputs},)")
        if classes.dtype.kind == "f" and not np.isfinite(classes).all():
            raise self.fail("classes holds non-finite values")
        if not (classes[1:] > classes[:-1]).all():
            raise self.fail("classes are not sorted and unique")
        return classes
