"""Model files and checkpoints: one ``.npz`` of arrays plus a JSON config, never unpickled.

Layout of a file (a ZIP archive, readable by ``np.load(path, allow_pickle=False)``):

- ``config``: the JSON config as a ``uint8`` array of UTF-8 bytes: format and version, kind
  (``"model"`` or ``"checkpoint"``), estimator class, its parameters, the fitted metadata, and
  the shape and dtype of every other member;
- ``params.kernel`` ``(F, C, k, k)``, ``params.bias_conv`` ``(F,)``, ``params.W_fc``
  ``(F*H'*W', O)``, ``params.b_fc`` ``(O,)``: the weights, in the estimator's dtype;
- ``input_mean``, ``input_std`` ``(C,)`` float64: the input standardisation;
- ``classes`` ``(O,)``: the classifier's labels;
- a checkpoint adds the training-state members its config lists under ``state``
  (``state.optimizer.*``, ``state.best.*``); the rest of the state (epoch, random generator
  state, history) is JSON in the config.

The archive's comment holds ``tinycnn-sha256:`` and the SHA-256 of every byte before it, so any
damage (a flipped bit, a truncation) is detected before anything is parsed. Structure is then
checked member by member against the config (shape, dtype, no object arrays, nothing missing or
unlisted) and the config against the network's shape, so a file crafted with a valid checksum
is refused too. Every such failure raises :class:`tinycnn.ModelFileError` (a ``ValueError``)
naming the file. Saving runs the same checks on the bytes before they are written, so nothing
is written that loading would refuse (a ``ValueError`` instead). Files are written by the
writer rule of ``tinycnn._files``: to a temporary file in the target's directory, flushed to
disk, then renamed over the target (``os.replace``), so a reader sees the old file or the new
one, never a mix, even if the writer is killed (a symlink is followed, a device written in
place).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import zipfile
from typing import Any

import numpy as np

from ._files import write_bytes
from ._version import __version__
from .errors import ModelFileError
from .network import ConvNetParams, ConvNetSpec
from .training import History, TrainingState

__all__ = ["save_model", "load_model", "save_checkpoint", "load_checkpoint", "FORMAT_VERSION"]

FORMAT = "tinycnn-model"
FORMAT_VERSION = 1
KINDS = ("model", "checkpoint")
CLASSES = ("CNNClassifier", "CNNRegressor")
PARAM_NAMES = ConvNetParams._fields  # ("kernel", "bias_conv", "W_fc", "b_fc")
SEAL_PREFIX = b"tinycnn-sha256:"
SEAL_LENGTH = len(SEAL_PREFIX) + 64
MAX_CONFIG_BYTES = 1 << 24
# A fixed timestamp: the same model always gives the same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SPEC_FIELDS = ("in_channels", "height", "width", "n_filters", "kernel_size", "stride", "pad")


# ---------------------------------------------------------------------------------- writing


def save_model(est: Any, path: Any) -> None:
    """Write the fitted estimator ``est`` to ``path`` atomically (see the module docstring)."""
    _check_fitted(est)
    history = getattr(est, "_history", None)
    members, config = _model_content(est, est.params_, est.input_mean_, est.input_std_, history)
    config["kind"] = "model"
    _write(path, config, members)


def save_checkpoint(path: Any, est: Any, state: TrainingState) -> None:
    """Write a checkpoint: the model as it is after ``state.epoch`` epochs (``tinycnn.load``
    reads it as that model) plus the training state (optimizer, random generator, history,
    best weights) that :func:`load_checkpoint` returns for ``est.fit(X, y, resume=state)``."""
    _check_fitted(est)
    if not isinstance(state, TrainingState):
        raise TypeError(f"state must be a TrainingState, got {type(state).__name__}")
    dtype = est.params_.W_fc.dtype
    params = ConvNetParams(*(np.asarray(p, dtype=dtype) for p in state.params))
    members, config = _model_content(
        est,
        params,
        np.asarray(state.input_mean, dtype=np.float64),
        np.asarray(state.input_std, dtype=np.float64),
        state.history,
    )
    optimizer_scalars: dict[str, Any] = {}
    optimizer_arrays: dict[str, str] = {}
    for key, value in state.optimizer.items():
        if isinstance(value, np.ndarray):
            member = f"state.optimizer.{key}"
            members[member] = np.ascontiguousarray(value)
            optimizer_arrays[key] = member
        else:
            optimizer_scalars[key] = _json_scalar(value, f"state.optimizer[{key!r}]")
    best_members = None
    if state.best_params is not None:
        best_members = []
        for name, value in zip(PARAM_NAMES, state.best_params):
            member = f"state.best.{name}"
            members[member] = np.ascontiguousarray(value, dtype=dtype)
            best_members.append(member)
    config["kind"] = "checkpoint"
    config["state"] = {
        "epoch": int(state.epoch),
        "seed": int(state.seed),
        "finished": bool(state.finished),
        "rng_state": _plain_json(state.rng_state),
        "history": _history_config(state.history),
        "optimizer": {"scalars": optimizer_scalars, "arrays": optimizer_arrays},
        "best_params": best_members,
    }
    _write(path, config, members)


def _check_fitted(est: Any) -> None:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    if not hasattr(est, "spec_"):
        raise NotImplementedError(
            "model files of format 1 hold the one-conv-layer network only; saving a stack "
            f"({est.network_!r}) needs format 2"
        )


def _model_content(
    est: Any,
    params: ConvNetParams,
    mean: np.ndarray,
    std: np.ndarray,
    history: History | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    members: dict[str, np.ndarray] = {}
    for name, value in zip(PARAM_NAMES, params):
        members[f"params.{name}"] = np.ascontiguousarray(value)
    members["input_mean"] = np.ascontiguousarray(mean, dtype=np.float64)
    members["input_std"] = np.ascontiguousarray(std, dtype=np.float64)
    if hasattr(est, "classes_"):
        members["classes"] = _savable_classes(est.classes_)
    if history is None:  # e.g. a loaded model: rebuild what the attributes say
        history = History(
            epochs_run=int(est.n_iter_),
            loss_curve=list(est.loss_curve_),
            validation_scores=list(est.validation_scores_ or []),
        )
    spec = est.spec_
    validation = list(history.validation_scores) if est.early_stopping else None
    fitted = {
        "spec": {name: int(getattr(spec, name)) for name in (*SPEC_FIELDS, "n_outputs")},
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
        "format_version": FORMAT_VERSION,
        "kind": None,
        "class": type(est).__name__,
        "tinycnn_version": __version__,
        "params": _params_config(est),
        "fitted": fitted,
        "arrays": {},
        "state": None,
    }
    return members, config


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
        else:
            out[key] = _json_scalar(value, key)
    return out


def _json_scalar(value: Any, name: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{name}={value!r} cannot be stored in a model file's JSON config")


def _plain_json(value: Any) -> Any:
    """``value`` (nested dicts of ints/strs, e.g. a bit generator's state) as plain JSON."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    return _json_scalar(value, "rng_state")


def _history_config(history: History) -> dict[str, Any]:
    return {
        "epochs_run": int(history.epochs_run),
        "loss_curve": [float(v) for v in history.loss_curve],
        "validation_scores": [float(v) for v in history.validation_scores],
        "best_loss": float(history.best_loss),
        "best_validation_score": float(history.best_validation_score),
        "no_improvement_count": int(history.no_improvement_count),
        "stopped_early": bool(history.stopped_early),
    }


def _write(path: Any, config: dict[str, Any], members: dict[str, np.ndarray]) -> None:
    for name, value in members.items():
        if value.dtype.hasobject or value.dtype.kind not in "biufU":
            raise TypeError(f"cannot store {name} of dtype {value.dtype} in a model file")
        config["arrays"][name] = {"shape": list(value.shape), "dtype": value.dtype.str}
    config_bytes = json.dumps(config, sort_keys=True).encode("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.comment = b"\0" * SEAL_LENGTH  # placeholder of the seal's length
        for name, value in [("config", np.frombuffer(config_bytes, np.uint8)), *members.items()]:
            with archive.open(zipfile.ZipInfo(name + ".npy", ZIP_DATE), "w") as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
    body = buffer.getvalue()[:-SEAL_LENGTH]
    data = body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode("ascii")
    # Never write what load would refuse (say, a non-finite weight or input_std): check first.
    try:
        _Reader(os.fspath(path), data).read(want_state=config["kind"] == "checkpoint")
    except ModelFileError as exc:
        raise ValueError(
            f"not writing {os.fspath(path)}: tinycnn.load would refuse it ({exc.reason})"
        ) from None
    write_bytes(path, data)


# ---------------------------------------------------------------------------------- reading


def load_model(path: Any):
    """The fitted estimator stored in ``path`` (a model file or a checkpoint).

    Raises :class:`tinycnn.ModelFileError` (a ``ValueError``) naming the file if it is damaged,
    foreign or inconsistent; ``FileNotFoundError`` if there is no such file.
    """
    est, _ = _load(path, want_state=False)
    return est


def load_checkpoint(path: Any) -> tuple[Any, TrainingState]:
    """``(est, state)`` from a checkpoint written by :func:`save_checkpoint`; continue with
    ``est.fit(X, y, resume=state)``. A plain model file is refused (it has no state)."""
    return _load(path, want_state=True)


def _load(path: Any, want_state: bool):
    path = os.fspath(path)
    with open(path, "rb") as handle:  # FileNotFoundError / IsADirectoryError propagate as is
        data = handle.read()
    try:
        return _Reader(path, data).read(want_state)
    except ModelFileError:
        raise
    except Exception as exc:  # whatever else damage can cause, it is a damaged file
        raise ModelFileError(path, f"{type(exc).__name__}: {exc}") from None


class _Reader:
    """Checks one file's bytes and builds the estimator (and state) they describe."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = data

    def fail(self, reason: str) -> ModelFileError:
        return ModelFileError(self.path, reason)

    def read(self, want_state: bool):
        self.check_seal()
        try:
            npz = np.load(io.BytesIO(self.data), allow_pickle=False)
        except Exception as exc:
            raise self.fail(f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise self.fail("not an .npz archive of arrays")
        with npz:
            self.npz = npz
            config = self.read_config()
            self.config = config
            arrays = self.read_arrays(config)
            est = self.build_estimator(config, arrays)
            if config["kind"] == "checkpoint":
                state = self.build_state(config, arrays, est)
            else:
                state = None
        if want_state and state is None:
            raise self.fail("it is a model file, not a checkpoint: it carries no training state")
        return est, state

    # -- bytes and archive

    def check_seal(self) -> None:
        data = self.data
        if len(data) < SEAL_LENGTH + 22:  # 22: the smallest ZIP end record
            raise self.fail(f"only {len(data)} bytes: empty or truncated")
        seal = data[-SEAL_LENGTH:]
        if not seal.startswith(SEAL_PREFIX):
            raise self.fail(
                "no tinycnn checksum at its end: truncated, damaged, or not written by tinycnn"
            )
        digest = hashlib.sha256(data[:-SEAL_LENGTH]).hexdigest().encode("ascii")
        if seal[len(SEAL_PREFIX) :] != digest:
            raise self.fail("checksum mismatch: the file is damaged")

    def member_header(self, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
        """``(shape, dtype, data offset)`` from a member's .npy header, read without its data."""
        info = self.npz.zip.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise self.fail(f"member {name!r} is compressed; tinycnn stores arrays uncompressed")
        with self.npz.zip.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
            except (ValueError, TypeError, SyntaxError, EOFError) as exc:
                raise self.fail(f"member {name!r} is not a .npy array ({exc})") from None
            offset = member.tell()
        if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields or dtype.subdtype:
            raise self.fail(f"member {name!r} has dtype {dtype}: only plain numbers/strings")
        if fortran and len(shape) > 1:
            raise self.fail(f"member {name!r} is stored in Fortran order")
        nbytes = math.prod(shape) * dtype.itemsize
        # Never allocate more than the file holds: a crafted header cannot claim terabytes.
        if offset + nbytes != info.file_size or info.file_size > len(self.data):
            raise self.fail(
                f"member {name!r} claims shape {shape} of {dtype} ({nbytes} bytes) but holds "
                f"{info.file_size - offset}"
            )
        return tuple(shape), dtype, offset

    def load_member(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        got_shape, got_dtype, _ = self.member_header(name)
        if got_shape != shape or got_dtype.str != dtype:
            raise self.fail(
                f"member {name!r} has shape {got_shape} and dtype {got_dtype.str}, but the config "
                f"says {shape} and {dtype}"
            )
        value = self.npz[name]
        if value.shape != shape or value.dtype.str != dtype:  # belt and braces
            raise self.fail(f"member {name!r} does not match its header")
        return value

    def read_config(self) -> dict[str, Any]:
        names = self.npz.zip.namelist()
        if len(names) != len(set(names)):
            raise self.fail("the archive lists a member twice")
        if "config" not in self.npz.files:
            raise self.fail("no 'config' member")
        shape, dtype, _ = self.member_header("config")
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_CONFIG_BYTES:
            raise self.fail(f"the config member has shape {shape} and dtype {dtype}")
        raw = self.load_member("config", shape, dtype.str).tobytes()
        try:
            config = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise self.fail(f"the config is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise self.fail("the config is not a JSON object")
        if config.get("format") != FORMAT:
            raise self.fail(f"format is {config.get('format')!r}, not {FORMAT!r}")
        version = config.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise self.fail(
                f"format_version {version!r} is not supported (this tinycnn reads {FORMAT_VERSION})"
            )
        if config.get("kind") not in KINDS:
            raise self.fail(f"kind {config.get('kind')!r} is not one of {KINDS}")
        if config.get("class") not in CLASSES:
            raise self.fail(f"class {config.get('class')!r} is not one of {CLASSES}")
        for key, kind in (("params", dict), ("fitted", dict), ("arrays", dict)):
            if not isinstance(config.get(key), kind):
                raise self.fail(f"config[{key!r}] is missing or not a {kind.__name__}")
        return config

    def read_arrays(self, config: dict[str, Any]) -> dict[str, np.ndarray]:
        listed = config["arrays"]
        present = set(self.npz.files) - {"config"}
        missing = sorted(set(listed) - present)
        unlisted = sorted(present - set(listed))
        if missing:
            raise self.fail(f"members listed in the config are missing: {missing}")
        if unlisted:
            raise self.fail(f"members not listed in the config: {unlisted}")
        arrays = {}
        for name, entry in listed.items():
            if not isinstance(entry, dict) or set(entry) != {"shape", "dtype"}:
                raise self.fail(f"config entry of {name!r} is not {{shape, dtype}}: {entry!r}")
            shape, dtype = entry["shape"], entry["dtype"]
            if not isinstance(shape, list) or not all(_is_int(v) and v >= 0 for v in shape):
                raise self.fail(f"config shape of {name!r} is not a list of sizes: {shape!r}")
            if not isinstance(dtype, str):
                raise self.fail(f"config dtype of {name!r} is not a string: {dtype!r}")
            arrays[name] = self.load_member(name, tuple(shape), dtype)
        return arrays

    # -- the estimator

    def build_estimator(self, config: dict[str, Any], arrays: dict[str, np.ndarray]):
        from sklearn.utils._param_validation import InvalidParameterError

        from ._validation import check_float_dtype
        from .estimators import CNNClassifier, CNNRegressor
        from .estimators._network import SHORTHAND_DEFAULTS, network_of

        cls = {"CNNClassifier": CNNClassifier, "CNNRegressor": CNNRegressor}[config["class"]]
        est = cls()
        params = dict(config["params"])
        known = set(est.get_params(deep=False))
        if set(params) - known:
            raise self.fail(f"unknown parameters for {cls.__name__}: {sorted(set(params) - known)}")
        if isinstance(params.get("image_shape"), list):
            params["image_shape"] = tuple(params["image_shape"])
        if params.get("dtype") in ("float32", "float64"):
            params["dtype"] = getattr(np, params["dtype"])  # the type, as the user passes it
        est.set_params(**params)
        if est.layers is None and all(getattr(est, n) is None for n in SHORTHAND_DEFAULTS):
            # Saved when the default network was the one-conv-layer one (before issue 11's
            # defaults): a format-1 file holds only that network, so name it, and warm starts
            # and partial_fit go on with it.
            est.set_params(n_filters=SHORTHAND_DEFAULTS["n_filters"])
        try:
            est._validate_params()
            dtype = check_float_dtype("dtype", est.dtype)
            est._check_image_shape()
        except (InvalidParameterError, TypeError, ValueError) as exc:
            raise self.fail(f"bad parameters: {exc}") from None

        fitted = config["fitted"]
        spec_config = fitted.get("spec")
        if not isinstance(spec_config, dict) or set(spec_config) != {*SPEC_FIELDS, "n_outputs"}:
            raise self.fail(f"fitted.spec is not a network shape: {spec_config!r}")
        for key, value in spec_config.items():
            if not _is_int(value) or value < (0 if key == "pad" else 1):
                raise self.fail(f"fitted.spec.{key} = {value!r} is not a valid size")
        spec = ConvNetSpec(**{k: spec_config[k] for k in (*SPEC_FIELDS, "n_outputs")})
        if spec.out_h < 1 or spec.out_w < 1:
            raise self.fail(f"fitted.spec gives an empty conv output: {spec}")
        C, H, W = spec.in_channels, spec.height, spec.width
        if fitted.get("image_shape") != [C, H, W]:
            raise self.fail(f"fitted.image_shape {fitted.get('image_shape')!r} != {[C, H, W]}")
        if fitted.get("n_features_in") != C * H * W:
            raise self.fail(f"fitted.n_features_in {fitted.get('n_features_in')!r} != {C * H * W}")
        if fitted.get("n_outputs") != spec.n_outputs:
            raise self.fail(f"fitted.n_outputs {fitted.get('n_outputs')!r} != {spec.n_outputs}")
        declared = est._check_image_shape()
        if declared is not None and declared != (C, H, W):
            raise self.fail(f"the image_shape parameter {declared} != fitted {(C, H, W)}")
        try:
            implied = network_of(est, (C, H, W), spec.n_outputs).spec
        except ValueError as exc:
            raise self.fail(f"the parameters do not fit the stored network: {exc}") from None
        if implied != spec:
            raise self.fail(f"fitted.spec {spec} disagrees with the parameters ({implied})")

        params_ = self.weights(arrays, "params", spec, dtype)
        mean = self.vector(arrays, "input_mean", C)
        std = self.vector(arrays, "input_std", C)
        if not (std > 0).all():
            raise self.fail("input_std must be > 0")

        n_iter = fitted.get("n_iter")
        loss_curve = fitted.get("loss_curve")
        if not _is_int(n_iter) or n_iter < 0:
            raise self.fail(f"fitted.n_iter = {n_iter!r} is not a count")
        if not _is_float_list(loss_curve) or len(loss_curve) != n_iter:
            raise self.fail("fitted.loss_curve is not a list of n_iter numbers")
        validation = fitted.get("validation_scores")
        if validation is not None and not _is_float_list(validation):
            raise self.fail("fitted.validation_scores is not a list of numbers")
        names = fitted.get("feature_names_in")
        if names is not None and (
            not isinstance(names, list)
            or len(names) != C * H * W
            or not all(isinstance(v, str) for v in names)
        ):
            raise self.fail("fitted.feature_names_in is not a list of n_features_in strings")

        if cls is CNNClassifier:
            if "classes" not in arrays:
                raise self.fail("a classifier's file needs a 'classes' member")
            classes = arrays["classes"]
            if classes.shape != (spec.n_outputs,) or spec.n_outputs < 2:
                raise self.fail(f"classes has shape {classes.shape}, expected ({spec.n_outputs},)")
            if classes.dtype.kind == "f" and not np.isfinite(classes).all():
                raise self.fail("classes holds non-finite values")
            if not (classes[1:] > classes[:-1]).all():
                raise self.fail("classes are not sorted and unique")
            est.classes_ = classes
        elif "classes" in arrays:
            raise self.fail("a regressor's file has a 'classes' member")

        est.spec_ = spec
        est.network_ = spec.sequential()
        est.params_ = params_
        est.input_mean_, est.input_std_ = mean, std
        est.image_shape_ = (C, H, W)
        est.n_features_in_ = C * H * W
        est.n_outputs_ = spec.n_outputs
        est.loss_curve_ = [float(v) for v in loss_curve]
        est.n_iter_ = int(n_iter)
        est.best_loss_ = min(est.loss_curve_) if est.loss_curve_ else math.inf
        est.validation_scores_ = list(validation) if validation else None
        est.best_validation_score_ = max(validation) if validation else None
        if names is not None:
            est.feature_names_in_ = np.asarray(names, dtype=object)
        return est

    def weights(
        self, arrays: dict[str, np.ndarray], prefix: str, spec: ConvNetSpec, dtype: np.dtype
    ) -> ConvNetParams:
        out = []
        for name, shape in spec.param_shapes.items():
            member = f"{prefix}.{name}"
            if member not in arrays:
                raise self.fail(f"member {member!r} is missing")
            value = arrays[member]
            if value.shape != tuple(shape) or value.dtype != dtype:
                raise self.fail(
                    f"{member} has shape {value.shape} and dtype {value.dtype}; the network "
                    f"needs {tuple(shape)} of {dtype}"
                )
            if not np.isfinite(value).all():
                raise self.fail(f"{member} holds non-finite values")
            out.append(value)
        return ConvNetParams(*out)

    def vector(self, arrays: dict[str, np.ndarray], name: str, length: int) -> np.ndarray:
        value = arrays.get(name)
        if value is None:
            raise self.fail(f"member {name!r} is missing")
        if value.shape != (length,) or value.dtype != np.float64:
            raise self.fail(f"{name} is {value.shape} of {value.dtype}; want ({length},) float64")
        if not np.isfinite(value).all():
            raise self.fail(f"{name} holds non-finite values")
        return value

    # -- the training state

    def build_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray], est):
        from .optim import make_optimizer

        state = config.get("state")
        if not isinstance(state, dict):
            raise self.fail("a checkpoint needs a 'state' object in its config")
        expected = {"epoch", "seed", "finished", "rng_state", "history", "optimizer", "best_params"}
        if set(state) != expected:
            raise self.fail(f"state keys are {sorted(state)}, expected {sorted(expected)}")
        if not _is_int(state["epoch"]) or state["epoch"] < 0:
            raise self.fail(f"state.epoch = {state['epoch']!r} is not a count")
        if not _is_int(state["seed"]) or state["seed"] < 0:
            raise self.fail(f"state.seed = {state['seed']!r} is not a seed")
        if not isinstance(state["finished"], bool):
            raise self.fail("state.finished is not a boolean")
        history = self.history(state["history"])
        if history.epochs_run != state["epoch"] or history.epochs_run != est.n_iter_:
            raise self.fail("state.epoch, state.history and fitted.n_iter disagree")

        rng_state = state["rng_state"]
        if rng_state is not None:
            try:  # the generator itself checks the state's form
                np.random.default_rng(0).bit_generator.state = rng_state
            except (TypeError, ValueError, KeyError) as exc:
                raise self.fail(f"state.rng_state is not a generator state ({exc})") from None

        optimizer_config = state["optimizer"]
        if not isinstance(optimizer_config, dict) or set(optimizer_config) != {"scalars", "arrays"}:
            raise self.fail("state.optimizer is not {scalars, arrays}")
        scalars, members = optimizer_config["scalars"], optimizer_config["arrays"]
        if not isinstance(scalars, dict) or not isinstance(members, dict):
            raise self.fail("state.optimizer scalars/arrays are not objects")
        shapes = list(est.spec_.param_shapes.values())
        dtype = est.params_.W_fc.dtype
        optimizer_state: dict[str, Any] = dict(scalars)
        for key, member in members.items():
            prefix, _, index = key.rpartition("_")
            if (
                prefix not in ("m", "v", "velocity")
                or not index.isdigit()
                or int(index) >= len(shapes)
                or member != f"state.optimizer.{key}"
                or member not in arrays
            ):
                raise self.fail(f"state.optimizer array {key!r} -> {member!r} is not valid")
            value = arrays[member]
            if value.shape != tuple(shapes[int(index)]) or value.dtype != dtype:
                raise self.fail(f"{member} has shape {value.shape}; expected {shapes[int(index)]}")
            optimizer_state[key] = value
        try:
            optimizer = make_optimizer(est.solver, est.learning_rate_init, est.momentum)
            optimizer.load_state_dict(optimizer_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(f"state.optimizer does not fit {est.solver} ({exc})") from None

        best = state["best_params"]
        if best is not None:
            if best != [f"state.best.{name}" for name in PARAM_NAMES]:
                raise self.fail(f"state.best_params lists {best!r}")
            best = self.weights(arrays, "state.best", est.spec_, dtype)
        used = {f"params.{n}" for n in PARAM_NAMES} | {"input_mean", "input_std", "classes"}
        used |= set(members.values()) | set(_best_names(best))
        if set(arrays) - used:
            raise self.fail(f"members not used by the state: {sorted(set(arrays) - used)}")
        return TrainingState(
            epoch=int(state["epoch"]),
            seed=int(state["seed"]),
            params=ConvNetParams(*(p.copy() for p in est.params_)),
            optimizer=optimizer_state,
            rng_state=rng_state,
            history=history,
            input_mean=est.input_mean_.copy(),
            input_std=est.input_std_.copy(),
            best_params=best,
            finished=state["finished"],
        )

    def history(self, value: Any) -> History:
        keys = {
            "epochs_run",
            "loss_curve",
            "validation_scores",
            "best_loss",
            "best_validation_score",
            "no_improvement_count",
            "stopped_early",
        }
        if not isinstance(value, dict) or set(value) != keys:
            raise self.fail("state.history is not a training history")
        ok = (
            _is_int(value["epochs_run"])
            and value["epochs_run"] >= 0
            and _is_float_list(value["loss_curve"])
            and len(value["loss_curve"]) == value["epochs_run"]
            and _is_float_list(value["validation_scores"])
            and _is_number(value["best_loss"])
            and _is_number(value["best_validation_score"])
            and _is_int(value["no_improvement_count"])
            and value["no_improvement_count"] >= 0
            and isinstance(value["stopped_early"], bool)
        )
        if not ok:
            raise self.fail("state.history has values of the wrong kind")
        return History(
            epochs_run=value["epochs_run"],
            loss_curve=[float(v) for v in value["loss_curve"]],
            validation_scores=[float(v) for v in value["validation_scores"]],
            best_loss=float(value["best_loss"]),
            best_validation_score=float(value["best_validation_score"]),
            no_improvement_count=value["no_improvement_count"],
            stopped_early=value["stopped_early"],
        )


def _best_names(best: ConvNetParams | None) -> list[str]:
    return [] if best is None else [f"state.best.{name}" for name in PARAM_NAMES]


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _is_float_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_number(v) for v in value)
