"""The ``tinycnn`` command: ``train``, ``predict`` and ``evaluate``.

Every mistake a user can make (bad usage, a missing or damaged file, data of the wrong shape, a
stack that does not fit the images, a run that diverges) ends the command with a non-zero exit
status and ONE line on stderr, never a traceback. A bug in tinycnn is not a user's mistake: it
shows its traceback, then one line saying it is an internal error (:func:`is_users_error` tells
the two apart, by type and by where the error arose, never by its message). ``--debug`` shows
the traceback of every error. Exit status: 0 success, 1 the command could not do its work (or an
internal error), 2 bad usage, 130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM. An interrupt
lets the file being written finish first; a training run can then be continued with
``--resume``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from ._version import __version__
from .errors import DivergenceError, InputError, ModelFileError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 128 + 15 = 143
# What --seed takes: scikit-learn's random_state and NumPy's legacy seeding stop at 2**32 - 1.
MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    """An integer >= 1 (``--epochs``, ``--n-filters``, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def seed_value(text: str) -> int:
    """An integer from 0 to 2**32 - 1 (``--seed``)."""
    what = f"an integer from 0 to {MAX_SEED}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _finite_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (``--lr``)."""
    value = _finite_float(text, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (``--alpha``)."""
    value = _finite_float(text, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1 (``--validation-fraction``)."""
    value = _finite_float(text, "a number between 0 and 1 (exclusive)")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a number between 0 and 1 (exclusive), got {text!r}"
        )
    return value


def momentum_value(text: str) -> float:
    """A number in [0, 1) (``--momentum``)."""
    value = _finite_float(text, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def padding_value(text: str) -> str | int:
    """``same``, ``valid`` (no padding) or an integer >= 0."""
    if text in ("same", "valid"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be 'same', 'valid' or an integer >= 0, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be 'same', 'valid' or an integer >= 0, got {text!r}"
        )
    return value


def batch_size_value(text: str) -> int | None:
    """An integer >= 1, or ``full`` for full-batch gradient descent."""
    if text == "full":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1 or 'full', got {text!r}"
        ) from None


def layers_value(text: str) -> str:
    """A stack in the grammar of :mod:`tinycnn.layer_string` (``--layers``), returned in its
    canonical spelling (lower case, no spaces), so that run records compare equal."""
    from .layer_string import layers_to_string, parse_layers

    try:
        return layers_to_string(parse_layers(text, "--layers"))
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------- the parser


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}{hint}\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Show an option's default in its help, unless it has none (required options, flags); never
    break a line inside a word or at its hyphens (a stack such as ``conv6k5p2-relu-max2`` stays
    whole, ready to copy)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        no_default = default is None or default is False or default == argparse.SUPPRESS
        if not no_default and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        text = " ".join(text.split())
        return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        return "\n\n".join(
            indent + paragraph  # an indented paragraph (an example) is kept as it is
            if paragraph.startswith(" ")
            else textwrap.fill(
                " ".join(paragraph.split()),
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
            for paragraph in text.split("\n\n")
        )


def one_line(message: str) -> str:
    """Collapse a (possibly multi-line) message into one line."""
    return " ".join(str(message).split())


# Defaults of `tinycnn train`'s training settings. The network's options have none: without
# them the estimators' default network is trained (see _add_train).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 50,
    "seed": 0,
    "solver": "adam",
    "lr": 2e-3,
    "momentum": 0.9,
    "batch_size": 64,
    "alpha": 1e-4,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
    "dtype": "float64",
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tinycnn",
        description="Train, apply and evaluate small convolutional networks (stacks of conv, "
        "ReLU, pooling and dense layers) written in NumPy.",
        epilog="Run 'tinycnn COMMAND --help' for the options of each command.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"tinycnn {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_predict, _add_evaluate):
        sub = add(commands)
        # Also after the command (`tinycnn train ... --debug`); SUPPRESS keeps a --debug given
        # before the command when it is not repeated after it.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help=DEBUG_HELP)  # fmt: skip
    return parser


DEBUG_HELP = (
    "show the traceback of every error, also of the mistakes that are otherwise reported in one "
    "line (bad usage aside)"
)
# The one-conv-layer shorthand's values when only some are given (the estimators' own, which
# tests/test_cli.py checks against tinycnn.estimators).
SHORTHAND_DEFAULTS = {"n_filters": 16, "kernel_size": 5, "stride": 1, "padding": "same"}
SHORTHAND_FLAGS = {"n_filters": "--n-filters", "kernel_size": "--kernel-size",
                   "stride": "--stride", "padding": "--padding"}  # fmt: skip
LENET5 = "conv6k5p2-relu-max2-conv16k5-relu-max2-flatten-dense120-relu-dense84-relu"
STACK_HELP = (
    "Stacks. --layers STACK gives the hidden layers as the estimators' layers= takes them: tokens "
    "joined by '-', each one of conv<F>k<K>[s<S>][p<P>] (Conv2d: F filters, K x K kernels, "
    "stride S, zero-padding P; e.g. conv32k3p1), relu, max<N>[s<S>] (MaxPool2d, e.g. max2), "
    "avg<N>[s<S>] (AvgPool2d), flatten, dense<U> (Dense, U units). The output dense layer is "
    "added from the data (after a flatten where the stack ends in images); LeNet-5 is\n\n"
    f"    --layers {LENET5}\n\n"
    "Without --layers the estimators' default network is trained. --n-filters, --kernel-size, "
    "--stride and --padding are the shorthand for the one-conv-layer network of earlier versions "
    "(conv, ReLU, the output dense layer; the options not given are "
    + ", ".join(f"{flag} {SHORTHAND_DEFAULTS[k]}" for k, flag in SHORTHAND_FLAGS.items())
    + "); they cannot be combined with --layers."
)


def _add_train(commands: Any) -> argparse.ArgumentParser:
    d = TRAIN_DEFAULTS
    train = commands.add_parser(
        "train",
        help="train a network on a data set and write the model, metrics and plots",
        description="Train on a built-in data set, a folder of images (one subfolder per class), "
        "a folder of MNIST-format IDX files or a .npz file holding X and y. The test split is "
        "the data set's own where it has one (the t10k files of IDX data, mnist-5k's last 100 "
        "of each digit); otherwise 25% of the data (stratified by class for a classification "
        "task; random_state=--seed) is held out. Writes to --out: model.npz, metrics.json, "
        "loss.png, filters.png, feature_maps.png, confusion.png and errors.png (classification) "
        "or predicted_vs_true.png (regression), history.json, run.json and checkpoint.npz "
        "(written atomically after every epoch). --out must be new, empty or a tinycnn run "
        "folder that this command may change (--resume, --overwrite), and is locked while the "
        "run lasts. Ctrl-C and SIGTERM stop after the file being written; --resume continues.",
        epilog=STACK_HELP,
        formatter_class=DefaultsFormatter,
        allow_abbrev=False,
    )
    data = train.add_argument_group("data and output")
    data.add_argument(
        "--data",
        required=True,
        metavar="NAME|FOLDER|FILE.npz",
        help="'digits' (scikit-learn's 8x8 digits), 'mnist-5k' (5000 real MNIST digits, "
        "offline), 'mnist', 'fashion-mnist', 'kmnist' (downloaded once into $TINYCNN_DATA or "
        "~/.cache/tinycnn), 'shapes' (synthetic 12x12 images of 4 shapes), 'shapes-size' "
        "(synthetic regression: a disk's radius); a folder with one subfolder of PNG/JPEG/BMP/"
        "GIF/TIFF images per class; a folder of IDX files (train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz] and the t10k-* pair); or a .npz file with X (N, "
        "n_features), (N, H, W) or (N, C, H, W) and y (N,) or (N, n_outputs), and optionally "
        "image_shape (C, H, W) for a 2-D X",
    )
    data.add_argument(
        "--image-size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        default=None,
        help="resize the images of an image folder to H x W pixels; default: the size most of "
        "the files have",
    )
    data.add_argument("--out", required=True, metavar="DIR", help="folder for the run's files")
    data.add_argument(
        "--task",
        choices=("classification", "regression"),
        default=None,
        help="the kind of task; default: classification when y holds few integer values",
    )
    run = train.add_argument_group("the run")
    run.add_argument(
        "--epochs",
        metavar="N",
        type=positive_int,
        default=d["epochs"],
        help="epochs to run in total (exactly this many unless --early-stopping is given)",
    )
    run.add_argument(
        "--seed",
        metavar="S",
        type=seed_value,
        default=d["seed"],
        help="random seed: the test split, the initial weights, the batch order",
    )
    fresh_or_resumed = run.add_mutually_exclusive_group()
    fresh_or_resumed.add_argument(
        "--resume",
        action="store_true",
        help="continue from checkpoint.npz in --out (start afresh if there is none); give "
        "the same options as the first time, except that --epochs may be larger (a finished "
        "run is then trained further, exactly as if it had been started with that many) and "
        "that the network's options (--layers, --n-filters, ...) may be left out: the run "
        "keeps the network it was started with",
    )
    fresh_or_resumed.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if --out holds a run (finished or not) or other files; only "
        "the run's own files there are replaced",
    )
    run.add_argument(
        "--quiet", action="store_true", help="no progress bar and no summary (errors only)"
    )
    net = train.add_argument_group("network")
    net.add_argument(
        "--layers",
        metavar="STACK",
        type=layers_value,
        default=None,
        help="the hidden layers, e.g. conv8k3p1-relu-max2 (the grammar, and LeNet-5: see "
        "'Stacks' below); default: the estimators' default network",
    )
    shorthand = {
        "n_filters": ("F", positive_int, "convolution filters"),
        "kernel_size": ("K", positive_int, "kernel side length"),
        "stride": ("S", positive_int, "conv stride"),
        "padding": ("P", padding_value, "zero-padding on each side ('same': odd kernel, stride "
                    "1, keeps the image size; 'valid': none; or a number)"),
    }  # fmt: skip
    for name, (metavar, kind, what) in shorthand.items():
        net.add_argument(
            SHORTHAND_FLAGS[name],
            metavar=metavar,
            type=kind,
            default=None,
            help=f"{what} of the one-conv-layer network (see 'Stacks' below); default "
            f"{SHORTHAND_DEFAULTS[name]} when another of its options is given",
        )
    net.add_argument(
        "--dtype", choices=("float32", "float64"), default=d["dtype"], help="floating-point type"
    )
    opt = train.add_argument_group("optimisation")
    opt.add_argument("--solver", choices=("adam", "sgd"), default=d["solver"], help="update rule")
    opt.add_argument(
        "--lr", metavar="LR", type=positive_float, default=d["lr"], help="learning rate"
    )
    opt.add_argument(
        "--momentum",
        metavar="M",
        type=momentum_value,
        default=d["momentum"],
        help="momentum of --solver sgd (ignored by adam)",
    )
    opt.add_argument(
        "--batch-size",
        metavar="B",
        type=batch_size_value,
        default=d["batch_size"],
        help="samples per update, or 'full' for full-batch gradient descent",
    )
    opt.add_argument(
        "--alpha",
        metavar="A",
        type=nonnegative_float,
        default=d["alpha"],
        help="L2 penalty on the weights",
    )
    opt.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the score on a validation part of the training data stops improving",
    )
    opt.add_argument(
        "--validation-fraction",
        metavar="FRAC",
        type=open_fraction,
        default=d["validation_fraction"],
        help="part of the training data held out for --early-stopping",
    )
    opt.add_argument(
        "--n-iter-no-change",
        metavar="N",
        type=positive_int,
        default=d["n_iter_no_change"],
        help="epochs without improvement before --early-stopping stops",
    )
    train.set_defaults(handler=_run_train)
    return train


def _add_predict(commands: Any) -> argparse.ArgumentParser:
    predict = commands.add_parser(
        "predict",
        help="apply a trained model to new data",
        description="Read image files (or folders of them) or one .npy/.npz array. Image files "
        "are read as training read its image folder: converted to the model's channels "
        "(grayscale or RGB) and resized to its image size; predictions go to a CSV file with "
        "the columns path, label (the class name) and, for a classifier, p_<class> for each "
        "class. An array is read in the same form as the training data came (e.g. for digits "
        "the raw 0-16 values of load_digits().data, shape (N, 64)), and the class labels "
        "(classifier) or predicted values (regressor) are written as a .npy file. The input "
        "scaling learned in training is stored in the model and applied.",
        allow_abbrev=False,
    )
    predict.add_argument("--model", required=True, metavar="MODEL.npz", help="a trained model")
    predict.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="IMAGE|FOLDER|X.npy|X.npz",
        help="the samples: image files and folders of them (searched recursively; hidden and "
        "non-image files skipped), or one .npy array or .npz holding X",
    )
    predict.add_argument(
        "--output",
        required=True,
        metavar="OUT.csv|Y.npy",
        help="where to write the predictions: a .csv for image files, a .npy for an array; "
        "not the model or an input",
    )
    predict.set_defaults(handler=_run_predict)
    return predict


def _add_evaluate(commands: Any) -> argparse.ArgumentParser:
    evaluate = commands.add_parser(
        "evaluate",
        help="print a trained model's metrics on a data set",
        description="Score a model on a data set: accuracy, log-loss and macro F1 for a "
        "classifier; R^2, mean squared and mean absolute error for a regressor. By default on "
        "the whole data set; --split test scores the test split 'tinycnn train' tested on: the "
        "data set's own, or the held-out 25% for the seed stored in the model.",
        formatter_class=DefaultsFormatter,
        allow_abbrev=False,
    )
    evaluate.add_argument("--model", required=True, metavar="MODEL.npz", help="a trained model")
    evaluate.add_argument(
        "--data", required=True, metavar="NAME|FOLDER|FILE.npz", help="a data set, as for train"
    )
    evaluate.add_argument(
        "--split",
        choices=("all", "test"),
        default="all",
        help="score on all of the data, or on the test split train used (the data set's own, "
        "or the held-out 25%% for --seed)",
    )
    evaluate.add_argument(
        "--seed",
        type=seed_value,
        default=None,
        help="the --seed whose test split --split test scores on; default: the seed stored "
        "in the model (the one train used)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument(
        "--plots",
        metavar="DIR",
        default=None,
        help="also draw the pictures into the folder DIR: confusion.png and errors.png for a "
        "classifier, predicted_vs_true.png for a regressor",
    )
    evaluate.set_defaults(handler=_run_evaluate)
    return evaluate


# ---------------------------------------------------------------- the commands


def _run_train(args: argparse.Namespace) -> int:
    from .training_run import train_command

    return train_command(args)


def _run_predict(args: argparse.Namespace) -> int:
    from .apply import predict_command

    return predict_command(args.model, args.input, args.output)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .apply import evaluate_command

    metrics = evaluate_command(args.model, args.data, args.split, args.seed, args.plots)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; an unknown option is reported by the command it was given to, so the
    hint points to that command's --help, and so is ``--layers`` given with the shorthand."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    commands = next(a for a in parser._actions if a.dest == "command").choices
    if extras:
        commands[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command == "train" and args.layers is not None:
        given = [f"{flag} {getattr(args, name)}" for name, flag in SHORTHAND_FLAGS.items()
                 if getattr(args, name) is not None]  # fmt: skip
        if given:
            commands["train"].error(
                f"--layers cannot be combined with {', '.join(given)}: those are the shorthand "
                "for a one-conv-layer network; write that layer into the stack instead "
                "(e.g. --layers conv8k3p1-relu)"
            )
    return args


# ---------------------------------------------------------------- user errors and bugs


def is_users_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports a mistake in what the user gave (printed as one line), rather
    than a bug in tinycnn (shown with its traceback).

    The user's are, by type: :class:`tinycnn.errors.InputError` (raised where the command checks
    the user's input, which also turns the refusals of an estimator's ``fit``, made before any
    training, into it), the data sets' ``DatasetError``, ``ModelFileError``,
    ``DivergenceError``, every ``OSError`` (the files tinycnn touches are the user's, or
    temporaries and a lock beside them: a missing file, a permission, a full disk) and an
    ``ImportError`` of a package other than tinycnn (a missing extra). Any other exception, a
    plain ``ValueError`` included, is a bug.
    """
    from .datasets import DatasetError

    if isinstance(exc, ImportError):
        return not (exc.name or "").startswith("tinycnn")
    return isinstance(exc, (InputError, DatasetError, ModelFileError, DivergenceError, OSError))


@contextlib.contextmanager
def _interrupts_between_writes():
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` once the write in progress has finished
    (see ``tinycnn._files``); the previous handlers come back afterwards."""
    from . import _files

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    signals = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {s: signal.getsignal(s) for s in signals}
    _files.install_interrupt_handlers()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    args.command_line = ["tinycnn", *argv]  # recorded in the run record
    prefix = f"tinycnn {args.command}"
    # Warnings are held back: on failure the error alone is the one line on stderr; on success
    # each distinct warning is shown in one line. NumPy's overflow warnings are not shown at
    # all: a run that overflows is caught by the divergence checks.
    with (
        warnings.catch_warnings(record=True) as caught,
        np.errstate(over="ignore"),
        _interrupts_between_writes(),
    ):
        warnings.simplefilter("always")
        try:
            status = args.handler(args)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            by = " by SIGTERM" if signum != signal.SIGINT else ""
            hint = getattr(args, "interrupt_hint", "")
            hint = hint() if callable(hint) else hint
            print(f"{prefix}: interrupted{by}{hint}", file=sys.stderr)
            return 128 + int(signum)
        except Exception as exc:
            users = is_users_error(exc)
            if args.debug or not users:
                traceback.print_exc(file=sys.stderr)
            if users:
                print(f"{prefix}: error: {one_line(str(exc))}", file=sys.stderr)
            else:
                print(
                    f"{prefix}: internal error ({type(exc).__name__}: {one_line(str(exc))}): "
                    f"a bug in tinycnn {__version__}, not a mistake in what you gave; please "
                    "report it with the traceback above",
                    file=sys.stderr,
                )
            return EXIT_FAILURE
    for message in dict.fromkeys(one_line(str(w.message)) for w in caught):
        print(f"{prefix}: warning: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
