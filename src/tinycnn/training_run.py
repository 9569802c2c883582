"""``tinycnn train``: one training run in one folder, which survives being killed.

The folder (``--out``) holds, when the run has finished:

* ``model.npz``: the trained estimator (``tinycnn.load`` reads it);
* ``metrics.json``: epochs run in total, held-out test score, timings; written LAST, so its
  presence (with ``model.npz``) means the run finished;
* ``loss.png``, ``filters.png``, ``feature_maps.png``: the pictures of training (the first conv
  layer's kernels; one test sample through every conv layer; neither for a stack without conv
  layers); and of the model on the test split: ``confusion.png`` and ``errors.png``
  (classification) or ``predicted_vs_true.png`` (regression);
* ``history.json``: per epoch, the training loss, the loss on the held-out test split and the
  seconds the epoch took;
* ``run.json``: the run record (options, data, the network, estimator parameters, versions,
  command lines);
* ``checkpoint.npz``: a model file that also carries the training state, rewritten after every
  epoch, from which ``--resume`` continues bit-exactly.

Every file is written atomically (temporary file, then rename), so a SIGKILL at any moment leaves
each file either as it was or complete.

The folder rules:

* one ``tinycnn train`` at a time owns the folder: it locks ``.tinycnn-lock`` (``fcntl.flock``,
  released by the kernel however the process ends) before it touches anything else there; a
  second one is refused, naming the holder's pid;
* a non-empty folder that holds no tinycnn run is not written into, and a finished run is not
  replaced, without ``--overwrite``; an unfinished run is continued only with ``--resume``;
* ``--resume`` continues a run, also to a larger ``--epochs`` than it was started with (a
  finished run is then extended), ending exactly where a run started with that many epochs ends.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._files import (
    LOCK_NAME,
    TEMP_PREFIX,
    FolderBusyError,
    lock_folder,
    remove_stale_temporaries,
    same_file,
    write_json,
)
from ._version import __version__
from .apply import CLASSIFICATION_PICTURES, REGRESSION_PICTURES, draw_evaluation
from .datasets import DatasetError, DatasetInfo, load_dataset, source_kind, split_dataset
from .errors import InputError
from .layer_string import layers_to_string, parse_layers
from .layers import Conv2d, Dense, Flatten, ReLU

MODEL = "model.npz"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.npz"
HISTORY = "history.json"
RUN_RECORD = "run.json"
PICTURES = ("loss.png", "filters.png", "feature_maps.png")
# The pictures of the model on the test split (a task draws its own share of them).
EVALUATION_PICTURES = (*CLASSIFICATION_PICTURES, *REGRESSION_PICTURES)
# Removed when a run starts afresh; metrics.json first, since it marks a finished run.
RUN_FILES = (METRICS, MODEL, *PICTURES, *EVALUATION_PICTURES, HISTORY, CHECKPOINT, RUN_RECORD)
# The run record says what it is, so a user's own run.json is never taken for one.
RECORD_FORMAT = "tinycnn-run"

# The options that define a run: --resume must be given the same ones.
RUN_OPTIONS = (
    "epochs",
    "seed",
    "layers",
    "n_filters",
    "kernel_size",
    "stride",
    "padding",
    "dtype",
    "solver",
    "lr",
    "momentum",
    "batch_size",
    "alpha",
    "early_stopping",
    "validation_fraction",
    "n_iter_no_change",
    "image_size",
)
# The network's options (None: not given); on --resume those left out keep the run's values.
SHORTHAND_OPTIONS = ("n_filters", "kernel_size", "stride", "padding")
NETWORK_OPTIONS = ("layers", *SHORTHAND_OPTIONS)


class RunError(InputError):
    """The folder's state does not allow what was asked (e.g. an unfinished run, no --resume)."""


# ---------------------------------------------------------------- the estimator


def estimator_for(options: dict[str, Any], info: DatasetInfo, X: np.ndarray) -> Any:
    """A fresh, unfitted CNNClassifier/CNNRegressor for the run's options and data: the network
    options only where given (none given: the estimators' default network)."""
    from .estimators import CNNClassifier, CNNRegressor

    cls = CNNClassifier if info.task == "classification" else CNNRegressor
    kwargs: dict[str, Any] = {
        name: options[name] for name in NETWORK_OPTIONS if options.get(name) is not None
    }
    kwargs.update({
        "solver": options["solver"],
        "learning_rate_init": options["lr"],
        "momentum": options["momentum"],
        # "full" (None): one batch of every training sample; the estimator caps it at N.
        "batch_size": options["batch_size"] or len(X),
        "alpha": options["alpha"],
        "max_iter": options["epochs"],
        "early_stopping": options["early_stopping"],
        "validation_fraction": options["validation_fraction"],
        # --epochs N means exactly N epochs unless --early-stopping is given; the estimators
        # (like scikit-learn's MLP) otherwise also stop when the training loss stalls.
        "n_iter_no_change": (
            options["n_iter_no_change"] if options["early_stopping"] else options["epochs"] + 1
        ),
        "dtype": np.dtype(options["dtype"]).type,
        "random_state": options["seed"],
        "standardize": True,
    })  # fmt: skip
    if X.ndim == 2:  # rows are flattened images: say how to read them
        kwargs["image_shape"] = tuple(info.image_shape)
    return cls(**kwargs)


def fit_checked(est: Any, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> None:
    """``est.fit(X, y, **fit_params)``, where a ``ValueError``/``TypeError`` raised before
    training began is the estimator refusing the user's options or data, re-raised as
    :class:`InputError` (one line); one raised during training is a bug and goes on as it is.

    The boundary is ``tinycnn.training.train``: an estimator checks its parameters, the data
    (shapes, NaN, statistics that overflow), the stack against the images and the memory the
    network needs before it calls ``train``, and the training loop checks nothing of the user's.
    """
    try:
        est.fit(X, y, **fit_params)
    except (ValueError, TypeError) as exc:
        if raised_in_training(exc):
            raise
        raise InputError(str(exc)) from exc


def raised_in_training(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside ``tinycnn.training.train`` (its traceback passes through
    that function: the loop, the engine, the ops, the optimizer, the epoch callbacks)."""
    from . import training

    code = training.train.__code__
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def epochs_done(state: Any) -> int:
    """Completed epochs recorded in a training state."""
    return int(state.epoch)


# ---------------------------------------------------------------- the network


def hidden_stack(network: Any) -> str:
    """The ``--layers`` string that trains ``network`` (a fitted estimator's ``network_``): its
    layers without the output Dense the estimators add (nor the Flatten they add before it)."""
    layers = list(network.layers[:-1])
    if layers and isinstance(layers[-1], Flatten) and not _ends_flat(layers[:-1]):
        layers.pop()
    return layers_to_string(layers)


def _ends_flat(layers: list[Any]) -> bool:
    for layer in reversed(layers):
        if not isinstance(layer, ReLU):
            return isinstance(layer, (Dense, Flatten))
    return False


def network_record(network: Any) -> dict[str, Any]:
    """What run.json says of the network trained: the hidden stack as ``--layers`` takes it,
    the whole stack (``network_``, the output layer included) and each layer's output shape."""
    shapes = [*network.shapes[1:], network.output_shape]
    return {
        "layers": hidden_stack(network),
        "network_": layers_to_string(network.layers),
        "input_shape": list(network.input_shape),
        "output_shapes": [list(shape) for shape in shapes],
    }


def first_kernel(est: Any) -> np.ndarray | None:
    """The kernels ``(F, C, k, k)`` of the first conv layer of ``est.network_``, or None without
    one. They are always ``params_[0]``: only Conv2d and Dense layers have weights, and no conv
    can follow a Dense (whose output is flat)."""
    if not any(isinstance(layer, Conv2d) for layer in est.network_.layers):
        return None
    return np.asarray(est.params_[0])


def feature_maps(est: Any, X: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """One sample ``X[:1]``: its raw image ``(C, H, W)`` and, for every conv layer, a title and
    its maps ``(F, H', W')`` (after its ReLU, when one follows); an empty list without conv
    layers."""
    layers = est.network_.layers
    outputs = est.layer_outputs(X[:1])
    maps = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv2d):
            relu = i + 1 < len(layers) and isinstance(layers[i + 1], ReLU)
            title = f"layer {i}: {layers_to_string([layer])}" + (" + relu" if relu else "")
            maps.append((title, outputs[i + 1 if relu else i][0]))
    return est.as_images(X[:1])[0], maps


# ---------------------------------------------------------------- model files


# ---------------------------------------------------------------- the run folder


class RunFolder:
    """The files of one run in ``folder``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.model = self.folder / MODEL
        self.metrics = self.folder / METRICS
        self.checkpoint = self.folder / CHECKPOINT
        self.history = self.folder / HISTORY
        self.record = self.folder / RUN_RECORD

    def finished(self) -> bool:
        return self.metrics.is_file() and self.model.is_file()

    def holds_a_run(self) -> bool:
        """Whether ``run.json`` is a tinycnn run record (earlier versions wrote no "format"
        but always the options and tinycnn's version)."""
        try:
            record = self.read_json(self.record)
        except RunError:
            return False
        if not isinstance(record, dict):
            return False
        if record.get("format") == RECORD_FORMAT:
            return True
        versions = record.get("versions")
        return (
            isinstance(record.get("options"), dict)
            and isinstance(versions, dict)
            and "tinycnn" in versions
        )

    def other_entries(self) -> list[str]:
        """What the folder holds besides its lock and temporary files of live writers."""
        return sorted(
            name
            for name in os.listdir(self.folder)
            if name != LOCK_NAME and not name.startswith(TEMP_PREFIX)
        )

    def clear(self) -> None:
        for name in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: cannot be read ({exc})") from None


def run_options(args: argparse.Namespace, info: DatasetInfo) -> dict[str, Any]:
    """The options that define the run, JSON-ready; the data set by its resolved source."""
    options = {"data": info.source, "task": info.task}
    options.update({name: getattr(args, name, None) for name in RUN_OPTIONS})
    if options["image_size"] is not None:  # as JSON gives it back: a list
        options["image_size"] = list(options["image_size"])
    return options


def check_same_run(folder: RunFolder, options: dict[str, Any]) -> dict[str, Any]:
    """The options to ``--resume`` the run in ``folder`` with: ``options`` with the network
    options left out taken from the run record (see :func:`with_recorded_network`). Refuses a
    run started with other options (``--epochs`` may differ: a run can be continued to more
    epochs)."""
    record = folder.read_json(folder.record)
    if not isinstance(record, dict) or not isinstance(record.get("options"), dict):
        return options  # nothing recorded: the checkpoint's own check (estimator params) decides
    before = record["options"]
    options = with_recorded_network(options, before)
    if _network_kind(before) != _network_kind(options):
        raise RunError(
            f"{folder.folder} holds a run of {_network_words(before)}, not of "
            f"{_network_words(options)}; give its network options to --resume it (or none: a "
            "resumed run keeps its network), or --overwrite to start afresh"
        )
    changed = [
        f"{_flag(key)} {before.get(key)!r} (now {value!r})"
        for key, value in options.items()
        if key != "epochs" and before.get(key) != value
    ]
    if changed:
        raise RunError(
            f"{folder.folder} holds a run started with other options: {', '.join(changed)}; "
            "give the same options to --resume it, or --overwrite to start afresh"
        )
    return options


def with_recorded_network(options: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """``options`` for resuming a run whose recorded options are ``before``: without any network
    option, the recorded network (``--layers``, or the one-conv-layer options, or none: the
    default network); with some of the one-conv-layer options, the others as recorded (runs
    recorded before ``--layers`` existed hold all four, then the command's defaults)."""
    options = dict(options)
    if options["layers"] is None:
        given = any(options[name] is not None for name in SHORTHAND_OPTIONS)
        for name in SHORTHAND_OPTIONS if given else NETWORK_OPTIONS:
            if options[name] is None:
                options[name] = before.get(name)
    return options


def _network_kind(options: dict[str, Any]) -> str:
    if options.get("layers") is not None:
        return "stack"
    if any(options.get(name) is not None for name in SHORTHAND_OPTIONS):
        return "shorthand"
    return "default"


def _network_words(options: dict[str, Any]) -> str:
    kind = _network_kind(options)
    if kind == "stack":
        return f"--layers {options['layers']}"
    if kind == "shorthand":
        given = [
            f"{_flag(n)} {options[n]}" for n in SHORTHAND_OPTIONS if options.get(n) is not None
        ]
        return f"the one-conv-layer network ({' '.join(given)})"
    return "the default network (no --layers)"


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


# Estimator parameters that follow from --epochs, which --resume may raise.
EPOCH_PARAMS = ("max_iter", "n_iter_no_change")


def _check_same_estimator(loaded: Any, fresh: Any, path: Path) -> None:
    """Refuse a checkpoint made with other settings than ``fresh``'s, naming them; one of
    another network says which network it holds."""
    ours, theirs = fresh.get_params(), loaded.get_params()
    network = ("layers", *SHORTHAND_OPTIONS)
    if any(_comparable(k, ours[k]) != _comparable(k, theirs.get(k)) for k in network):
        raise RunError(
            f"{path} holds a run of {_network_words(_stack_params(theirs))}, not of "
            f"{_network_words(_stack_params(ours))}; give its network options to --resume it, "
            "or --overwrite to start afresh"
        )
    # n_iter_no_change follows from --epochs only without --early-stopping.
    free = EPOCH_PARAMS if not fresh.early_stopping else ("max_iter",)
    changed = [
        k
        for k in ours
        if k not in free and _comparable(k, ours[k]) != _comparable(k, theirs.get(k))
    ]
    if type(loaded) is not type(fresh) or changed:
        what = ", ".join(changed) or f"{type(loaded).__name__} vs {type(fresh).__name__}"
        raise RunError(
            f"{path} was made with other settings ({what}); give the same options to --resume "
            "it, or --overwrite to start afresh"
        )


def _stack_params(params: dict[str, Any]) -> dict[str, Any]:
    """An estimator's network parameters as the command's options (``layers`` as a string)."""
    options = {name: params.get(name) for name in SHORTHAND_OPTIONS}
    options["layers"] = _comparable("layers", params.get("layers"))
    return options


def _comparable(name: str, value: Any) -> Any:
    """An estimator parameter in a form that compares equal across a save/load round trip (a
    stack as its canonical string, whether given as a string or as layers)."""
    if name == "dtype" and value is not None:
        return np.dtype(value).name
    if name == "layers" and value is not None:
        try:
            return layers_to_string(parse_layers(value) if isinstance(value, str) else value)
        except (TypeError, ValueError):
            return repr(value)  # not a stack this version reads: equal to none of ours
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_comparable(name, v) for v in value]
    return _jsonable(value)


def _versions() -> dict[str, str]:
    versions = {
        "tinycnn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    with contextlib.suppress(ImportError):
        import sklearn

        versions["scikit-learn"] = sklearn.__version__
    return versions


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type):
        return value.__name__
    return repr(value)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- progress


class _Progress:
    """A tqdm bar over epochs showing the live losses; nothing when disabled."""

    def __init__(self, enabled: bool, total: int, initial: int) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                raise ImportError(
                    "the progress bar needs tqdm: pip install 'tinycnn[cli]' (or use --quiet)"
                ) from None
            self.bar = tqdm(
                total=total, initial=initial, unit="epoch", desc="training", file=sys.stderr
            )

    def epoch(self, train_loss: float, test_loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{train_loss:.4g}", test_loss=f"{test_loss:.4g}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class EpochRecorder:
    """The fit callback: after every epoch, record the losses and time in ``history.json``, then
    write the checkpoint (both atomically), then move the progress bar.

    ``history.json`` is written before the checkpoint, so after a kill it may be one epoch ahead;
    on resume it is cut back to the checkpoint's epoch count.
    """

    def __init__(
        self,
        folder: RunFolder,
        curves: dict[str, list],
        X_test: np.ndarray,
        y_test: np.ndarray,
        progress: _Progress,
        before_first_epoch: Callable[[], None] | None = None,
    ) -> None:
        self.folder, self.curves = folder, curves
        self.before_first_epoch = before_first_epoch
        self.X_test, self.y_test = X_test, y_test
        self.progress = progress
        self.last = time.perf_counter()

    def __call__(self, est: Any, state: Any) -> bool:
        now = time.perf_counter()
        if self.before_first_epoch is not None:
            self.before_first_epoch()
            self.before_first_epoch = None
        seconds, self.last = now - self.last, now
        train_loss = float(state.history.loss_curve[-1])
        test_loss = est.objective(self.X_test, self.y_test)
        if not math.isfinite(test_loss):
            # The training loss (measured before the epoch's last update) can still be finite
            # when the updated weights already overflow: stop here, keep the last checkpoint.
            from .errors import DivergenceError

            raise DivergenceError(epochs_done(state), test_loss, est.learning_rate_init)
        self.curves["epoch"].append(epochs_done(state))
        self.curves["train_loss"].append(train_loss)
        self.curves["test_loss"].append(test_loss)
        self.curves["seconds"].append(seconds)
        write_json(self.folder.history, self.curves)
        from .io import save_checkpoint

        save_checkpoint(self.folder.checkpoint, est, state)
        self.progress.epoch(train_loss, test_loss)
        self.last = time.perf_counter()  # the bookkeeping is not part of the epoch's time
        return False


def _resumed_curves(folder: RunFolder, epochs: int) -> dict[str, list]:
    empty: dict[str, list] = {"epoch": [], "train_loss": [], "test_loss": [], "seconds": []}
    if epochs == 0:
        return empty
    try:
        curves = folder.read_json(folder.history)
    except RunError:
        curves = None
    if not isinstance(curves, dict) or any(not isinstance(curves.get(k), list) for k in empty):
        return empty
    keep = [i for i, e in enumerate(curves["epoch"]) if isinstance(e, int) and e <= epochs]
    return {k: [curves[k][i] for i in keep] for k in empty}


# ---------------------------------------------------------------- the command


def train_command(args: argparse.Namespace) -> int:
    """Run ``tinycnn train`` for parsed ``args``; return the exit status."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a folder")
    image_size = getattr(args, "image_size", None)
    if image_size is not None and source_kind(args.data) != "images":
        raise InputError(
            f"--image-size applies to folders of image files only, and --data {args.data} is "
            "not one"
        )
    X, y, info = load_dataset(args.data, task=args.task, image_size=image_size)
    _refuse_data_inside_the_run(args.data, out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with lock_folder(out):
            return _train_in_owned_folder(args, out, X, y, info)
    except FolderBusyError as exc:
        holder = f"pid {exc.pid}" if exc.pid is not None else "a process whose pid is unknown"
        raise RunError(
            f"--out {out} is in use by another tinycnn train ({holder}); wait for it to end, "
            "or choose another --out"
        ) from None


def _refuse_data_inside_the_run(data: str, out: Path) -> None:
    """The data must survive the run: not one of the files it replaces, and not a folder the
    run folder is (or is inside), whose next reading would find the run's files."""
    for name in RUN_FILES:
        if same_file(data, out / name):
            raise RunError(
                f"--data {data} is the run's own {name} in --out {out}, which training "
                "replaces; copy the data elsewhere or choose another --out"
            )
    if os.path.isdir(data):
        data_real, out_real = os.path.realpath(data), os.path.realpath(out)
        if os.path.commonpath([data_real, out_real]) == data_real:
            raise RunError(
                f"--out {out} is inside the --data folder {data}, where the run's files would "
                "be read as data next time; choose an --out outside it"
            )


def _train_in_owned_folder(
    args: argparse.Namespace, out: Path, X: np.ndarray, y: np.ndarray, info: DatasetInfo
) -> int:
    """``train`` once this process owns ``out``: decide what the folder allows, then train."""
    from sklearn.exceptions import ConvergenceWarning

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if info.skipped:
        say(f"skipped {info.skipped} files in {args.data} that are hidden or not images")
    options = run_options(args, info)
    folder = RunFolder(out)

    state = loaded = None
    extending = False
    if args.overwrite:
        pass  # start afresh whatever the folder holds; only the run's own files are replaced
    elif not folder.holds_a_run():
        entries = folder.other_entries()
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise RunError(
                f"--out {out} is not empty ({shown}) and holds no tinycnn run; choose a new or "
                f"empty folder, or add --overwrite to write the run there (replacing any "
                f"{', '.join(RUN_FILES)})"
            )
    elif folder.finished():
        metrics = folder.read_json(folder.metrics)
        done = metrics.get("epochs") if isinstance(metrics, dict) else None
        if not args.resume:
            raise RunError(
                f"--out {out} holds a finished run ({done} epochs); add --overwrite to replace "
                "it, or --resume with a larger --epochs to train it further"
            )
        options = check_same_run(folder, options)
        stopped = isinstance(metrics, dict) and metrics.get("stopped_early") is True
        if done == args.epochs or (stopped and isinstance(done, int) and done < args.epochs):
            why = "; it stopped early" if stopped and done != args.epochs else ""
            say(f"{out}: the run already finished ({done} epochs{why}); nothing to do")
            return 0
        loaded, state = _load_checkpoint(folder)
        extending = True
    elif folder.checkpoint.exists():
        if not args.resume:
            raise RunError(
                f"{out} holds an unfinished run ({folder.checkpoint}); add --resume to continue "
                "it or --overwrite to start afresh"
            )
        options = check_same_run(folder, options)
        loaded, state = _load_checkpoint(folder)
    # else: a run folder with nothing trained in it (killed before its first epoch): afresh.
    # Allowed to go on: only now clean what killed writers left (never a live writer's file).
    remove_stale_temporaries(out)

    start_epoch = epochs_done(state) if state is not None else 0
    if start_epoch > args.epochs:
        raise RunError(
            f"{folder.checkpoint} has trained {start_epoch} epochs, more than --epochs "
            f"{args.epochs}; give --epochs {start_epoch} or more to continue it, or "
            "--overwrite to start afresh"
        )
    X_train, X_test, y_train, y_test, split = _split(X, y, info, args)
    est = estimator_for(options, info, X)

    def start_record(network: Any) -> None:
        _write_record(folder, options, info, est, network, args, start_epoch, split)

    def start_afresh() -> None:
        # Only once the first epoch has trained: a run refused by the estimator's own checks
        # (say, a kernel larger than the images) leaves the folder's previous run untouched.
        folder.clear()
        start_record(est.network_)

    if state is not None:
        _check_same_estimator(loaded, est, folder.checkpoint)
        if extending:
            # The run is no longer finished: a kill from here on leaves a run to --resume.
            with contextlib.suppress(FileNotFoundError):
                folder.metrics.unlink()
        start_record(loaded.network_)

    curves = _resumed_curves(folder, start_epoch)
    args.interrupt_hint = lambda: (
        f"; rerun with --resume to continue from {folder.checkpoint}"
        if folder.checkpoint.exists()
        else "; no epoch had finished: rerun to start afresh"
    )
    if extending:
        verb = f"extending the finished run from epoch {start_epoch}:"
    else:
        verb = f"resuming at epoch {start_epoch}" if start_epoch else "training"
    say(
        f"{verb} {type(est).__name__} on {info.name} ({info.task}): {len(y_train)} training and "
        f"{len(y_test)} test samples, {args.epochs} epochs -> {out}"
    )
    progress = _Progress(
        enabled=not args.quiet and sys.stderr.isatty(), total=args.epochs, initial=start_epoch
    )
    recorder = EpochRecorder(
        folder, curves, X_test, y_test, progress, None if state is not None else start_afresh
    )
    try:
        with warnings.catch_warnings():
            # Running the requested epochs is what was asked: no "not converged" warning.
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit_checked(est, X_train, y_train, callback=recorder, resume=state)
    finally:
        progress.close()

    est.save(folder.model)
    metrics = _metrics(est, info, curves, X_train, y_train, X_test, y_test, args.epochs)
    metrics["split"] = split["split"]
    pictures = _draw(folder, est, curves, X_test, y_test, info)
    write_json(folder.metrics, metrics)  # last: marks the run finished
    score = "test_accuracy" if info.task == "classification" else "test_r2"
    unseen = "" if "filters.png" in pictures else " (no conv layer: no filters or feature maps)"
    say(
        f"{score} {metrics[score]:.4g} after {metrics['epochs']} epochs "
        f"({metrics['train_seconds']:.1f} s of training); wrote {out}/"
        f"{{{MODEL},{METRICS},{','.join(pictures)}}}{unseen}"
    )
    return 0


def _split(
    X: np.ndarray, y: np.ndarray, info: DatasetInfo, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The training and test parts (:func:`split_dataset`); too few samples to hold a test split
    out of, or test labels the training part lacks, are the data's fault: one line."""
    try:
        X_train, X_test, y_train, y_test, split = split_dataset(X, y, info, args.seed)
    except DatasetError:
        raise
    except ValueError as exc:  # scikit-learn's train_test_split refusing a tiny data set
        raise InputError(
            f"--data {args.data}: cannot hold out a test split of its {len(y)} samples: {exc}"
        ) from exc
    if info.task == "classification":
        unseen = np.setdiff1d(np.unique(y_test), np.unique(y_train))
        if unseen.size:
            shown = ", ".join(str(v) for v in unseen[:10]) + (", ..." if unseen.size > 10 else "")
            raise DatasetError(
                f"--data {args.data}: its test split holds labels its training split lacks "
                f"({shown}); a classifier can only be tested on the classes it learns"
            )
    return X_train, X_test, y_train, y_test, split


def _load_checkpoint(folder: RunFolder) -> tuple[Any, Any]:
    """``(estimator, training state)`` from the folder's checkpoint; a damaged checkpoint is a
    :class:`RunError` suggesting --overwrite."""
    from . import io
    from .errors import ModelFileError

    try:
        loaded, state = io.load_checkpoint(folder.checkpoint)
    except ModelFileError as exc:
        raise RunError(
            f"{exc}; the run cannot be resumed from it: add --overwrite (instead of --resume) "
            "to start afresh"
        ) from None
    return loaded, state


def _write_record(
    folder: RunFolder,
    options: dict[str, Any],
    info: DatasetInfo,
    est: Any,
    network: Any,
    args: argparse.Namespace,
    start_epoch: int,
    split: dict[str, Any],
) -> None:
    previous = None
    if start_epoch:
        with contextlib.suppress(RunError):
            previous = folder.read_json(folder.record)
    sessions = previous.get("sessions", []) if isinstance(previous, dict) else []
    sessions = sessions if isinstance(sessions, list) else []
    sessions.append(
        {"command": args.command_line, "started": _now(), "from_epoch": start_epoch, **_versions()}
    )
    record = {
        "format": RECORD_FORMAT,
        "options": options,
        "data": info.to_dict(),
        "split": split,
        "network": network_record(network),
        "estimator": {"class": type(est).__name__, "params": _jsonable(est.get_params())},
        "versions": _versions(),
        "sessions": sessions,
    }
    write_json(folder.record, record)


def _metrics(
    est: Any,
    info: DatasetInfo,
    curves: dict[str, list],
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    epochs_requested: int,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "task": info.task,
        "data": info.name,
        "epochs": int(est.n_iter_),
        "epochs_requested": epochs_requested,
        "n_train": len(y_train),
        "n_test": len(y_test),
    }
    if info.task == "classification":
        metrics["test_accuracy"] = float(est.score(X_test, y_test))
        metrics["train_accuracy"] = float(est.score(X_train, y_train))
    else:
        from sklearn.metrics import mean_absolute_error, mean_squared_error

        predicted = est.predict(X_test)
        metrics["test_r2"] = float(est.score(X_test, y_test))
        metrics["test_mse"] = float(mean_squared_error(y_test, predicted))
        metrics["test_mae"] = float(mean_absolute_error(y_test, predicted))
        metrics["train_r2"] = float(est.score(X_train, y_train))
    metrics["stopped_early"] = bool(est.early_stopping and est.n_iter_ < epochs_requested)
    metrics["final_train_loss"] = float(est.loss_curve_[-1])
    if curves["test_loss"]:
        metrics["final_test_loss"] = float(curves["test_loss"][-1])
    seconds = [float(s) for s in curves["seconds"]]
    metrics["train_seconds"] = float(sum(seconds))
    metrics["seconds_per_epoch"] = float(np.median(seconds)) if seconds else None
    return metrics


def _draw(
    folder: RunFolder,
    est: Any,
    curves: dict[str, list],
    X_test: np.ndarray,
    y_test: np.ndarray,
    info: DatasetInfo,
) -> tuple[str, ...]:
    """Draw every picture of the run; return their file names."""
    from . import plots

    train_loss = list(est.loss_curve_)
    test_loss = curves["test_loss"] if len(curves["test_loss"]) == len(train_loss) else None
    name = "cross-entropy" if hasattr(est, "classes_") else "mean squared error"
    plots.plot_loss(
        folder.folder / "loss.png",
        train_loss,
        test_loss,
        loss_name=name,
        validation_label="held-out test split",
    )
    pictures = ["loss.png"]
    kernel = first_kernel(est)
    if kernel is not None:  # a stack without conv layers (1x1 images, say) has neither picture
        k = kernel.shape[-1]
        title = f"the first conv layer's {len(kernel)} learned {k}x{k} kernels"
        plots.plot_filters(folder.folder / "filters.png", kernel, title)
        image, maps = feature_maps(est, X_test)
        titles, layer_maps = [t for t, _ in maps], [m for _, m in maps]
        plots.plot_feature_maps(folder.folder / "feature_maps.png", image, layer_maps, titles)
        pictures += ["filters.png", "feature_maps.png"]
    return (*pictures, *draw_evaluation(folder.folder, est, X_test, y_test, info))
