"""The ``tinycnn`` command end to end: files written, plots valid, metrics right, predictions equal
to the estimator's, ``--resume``, and every bad usage refused with one line and a non-zero exit.

End-to-end runs go through ``sys.executable -m tinycnn`` (whatever environment runs the tests);
the many bad-usage cases call ``tinycnn.cli.main`` in-process, which is the same code path
without the interpreter start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import fill_disk_while_writing

import tinycnn
from tinycnn import cli, training_run
from tinycnn.datasets import held_out_split, load_dataset
from tinycnn.layer_string import layers_to_string

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_FILES = (
    "model.npz",
    "metrics.json",
    "loss.png",
    "filters.png",
    "feature_maps.png",
    "checkpoint.npz",
    "history.json",
    "run.json",
)
# Small and fast: a few epochs are enough to check the plumbing.
FAST = ("--epochs", "3", "--n-filters", "4", "--kernel-size", "3")


def run_tinycnn(*args: str, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinycnn", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``tinycnn.cli.main(argv)`` in-process: (exit status, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse exits for usage errors, --help and --version
        code = exc.code
    captured = capsys.readouterr()
    return int(code or 0), captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("tinycnn")
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def assert_valid_png(path: Path) -> None:
    from matplotlib.image import imread
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    pixels = imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50


def model_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "run"
    result = run_tinycnn("train", "--data", "digits", "--out", str(out), *FAST, "--seed", "3")
    assert result.returncode == 0, result.stderr
    # Not a terminal: no progress bar; errors only on stderr.
    assert result.stderr == ""
    assert "test_accuracy" in result.stdout
    return out


def test_train_writes_every_file(digits_run):
    for name in RUN_FILES:
        assert (digits_run / name).is_file(), name
    for name in ("loss.png", "filters.png", "feature_maps.png"):
        assert_valid_png(digits_run / name)
    assert not [p for p in os.listdir(digits_run) if p.startswith(".tinycnn-tmp-")]


def test_metrics_json(digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert metrics["task"] == "classification"
    assert metrics["n_test"] == 450 and metrics["n_train"] == 1347  # a 25% held-out split
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    assert metrics["train_seconds"] > 0
    # The held-out score is the model's score on exactly train's stratified split.
    X, y, _ = load_dataset("digits")
    _, X_test, _, y_test = held_out_split(X, y, "classification", seed=3)
    est = tinycnn.load(digits_run / "model.npz")
    assert metrics["test_accuracy"] == pytest.approx(est.score(X_test, y_test), abs=0)


def test_run_record_and_history(digits_run):
    record = json.loads((digits_run / "run.json").read_text())
    assert record["options"]["seed"] == 3 and record["options"]["epochs"] == 3
    assert record["options"]["n_filters"] == 4
    assert record["estimator"]["class"] == "CNNClassifier"
    versions = record["versions"]
    assert versions["tinycnn"] == tinycnn.__version__
    assert versions["numpy"] == np.__version__
    for key in ("python", "scikit-learn"):
        assert versions[key]
    assert record["sessions"][0]["command"][:2] == ["tinycnn", "train"]
    history = json.loads((digits_run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    est = tinycnn.load(digits_run / "model.npz")
    np.testing.assert_allclose(history["train_loss"], est.loss_curve_, rtol=0, atol=0)
    assert all(np.isfinite(history["test_loss"]))


def test_checkpoint_is_the_final_model(digits_run):
    final = tinycnn.load(digits_run / "model.npz")
    checkpoint = tinycnn.load(digits_run / "checkpoint.npz")
    for a, b in zip(final.params_, checkpoint.params_):
        np.testing.assert_array_equal(a, b)


def test_predict_on_raw_digits_equals_the_estimator(digits_run, tmp_path):
    from sklearn.datasets import load_digits

    raw = load_digits().data  # (1797, 64), values 0-16, exactly as the training source gave it
    np.save(tmp_path / "X.npy", raw)
    result = run_tinycnn(
        "predict",
        "--model",
        str(digits_run / "model.npz"),
        "--input",
        str(tmp_path / "X.npy"),
        "--output",
        str(tmp_path / "y.npy"),
    )
    assert result.returncode == 0, result.stderr
    predicted = np.load(tmp_path / "y.npy", allow_pickle=False)
    expected = tinycnn.load(digits_run / "model.npz").predict(raw)
    np.testing.assert_array_equal(predicted, expected)
    assert predicted.shape == (1797,)
    # Trained, not guessing: most of the raw digits are right.
    assert (predicted == load_digits().target).mean() > 0.8


def test_predict_reads_npz_and_image_shaped_input(digits_run, tmp_path, capsys):
    from sklearn.datasets import load_digits

    raw = load_digits().data[:50]
    est = tinycnn.load(digits_run / "model.npz")
    np.savez(tmp_path / "X.npz", X=raw.reshape(50, 1, 8, 8))
    code, out, err = run_main(
        ["predict", "--model", digits_run / "model.npz", "--input", tmp_path / "X.npz",
         "--output", tmp_path / "y.npy"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), est.predict(raw))
    assert "wrote 50 predictions" in out


def test_evaluate_test_split_matches_train_metrics(digits_run, capsys):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    model = digits_run / "model.npz"
    argv = ["evaluate", "--model", model, "--data", "digits", "--split", "test", "--seed", "3"]
    code, out, err = run_main([*argv, "--json"], capsys)
    assert code == 0, err
    scores = json.loads(out)
    assert scores["n_samples"] == 450
    assert scores["accuracy"] == metrics["test_accuracy"]
    assert 0 < scores["log_loss"] and 0 <= scores["f1_macro"] <= 1
    code, out, _ = run_main(argv, capsys)
    assert code == 0 and "accuracy" in out and "log_loss" in out
    code, out, err = run_main(["evaluate", "--model", model, "--data", "digits", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_samples"] == 1797


def test_train_and_predict_on_synthetic_shapes(tmp_path, capsys):
    out = tmp_path / "shapes"
    result = run_tinycnn("train", "--data", "shapes", "--out", str(out), *FAST)
    assert result.returncode == 0, result.stderr
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    for name in ("loss.png", "filters.png", "feature_maps.png"):
        assert_valid_png(out / name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "classification" and metrics["epochs"] == 3
    assert 0 <= metrics["test_accuracy"] <= 1
    X, _, _ = load_dataset("shapes")  # (800, 1, 12, 12), as the source gives it
    est = tinycnn.load(out / "model.npz")
    for name, data in (("X4.npy", X), ("X3.npy", X[:, 0])):  # (N, 1, H, W) and (N, H, W)
        np.save(tmp_path / name, data)
        code, _, err = run_main(
            ["predict", "--model", out / "model.npz", "--input", tmp_path / name,
             "--output", tmp_path / "y.npy"],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), est.predict(X))


def test_train_regression_on_shape_sizes(tmp_path, capsys):
    out = tmp_path / "sizes"
    code, stdout, err = run_main(
        ["train", "--data", "shapes-size", "--out", out, "--epochs", "4"], capsys
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "regression"
    for key in ("test_r2", "test_mse", "test_mae", "train_r2"):
        assert np.isfinite(metrics[key])
    assert "test_r2" in stdout
    est = tinycnn.load(out / "model.npz")
    assert type(est).__name__ == "CNNRegressor"
    X, y, _ = load_dataset("shapes-size")
    np.save(out / "X.npy", X)
    code, _, err = run_main(
        ["predict", "--model", out / "model.npz", "--input", out / "X.npy",
         "--output", out / "r.npy"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    np.testing.assert_array_equal(np.load(out / "r.npy"), est.predict(X))
    code, stdout, _ = run_main(
        ["evaluate", "--model", out / "model.npz", "--data", "shapes-size", "--json"], capsys
    )
    assert code == 0 and np.isfinite(json.loads(stdout)["r2"])


def test_train_on_a_user_npz_with_flat_rows(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "mine.npz"
    np.savez(path, X=digits.data[:300], y=digits.target[:300], image_shape=np.array([1, 8, 8]))
    out = tmp_path / "mine"
    code, _, err = run_main(["train", "--data", path, "--out", out, *FAST, "--quiet"], capsys)
    assert code == 0, err
    assert err == ""
    est = tinycnn.load(out / "model.npz")
    assert tuple(est.image_shape_) == (1, 8, 8)
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["source"] == str(path.resolve())


def test_quiet_prints_nothing(tmp_path, capsys):
    code, out, err = run_main(
        ["train", "--data", "shapes", "--out", tmp_path / "q", "--epochs", "1", "--quiet"], capsys
    )
    assert (code, out, err) == (0, "", "")


def test_progress_bar_on_a_terminal(tmp_path):
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    # A fresh pty is 0 columns wide, and tqdm draws nothing in 0 columns: make it 120 wide.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tinycnn", "train", "--data", "shapes", "--out",
             str(tmp_path / "tty"), "--epochs", "2"],
            stdout=subprocess.PIPE, stderr=follower, timeout=300,
        )  # fmt: skip
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert proc.returncode == 0
    text = shown.decode(errors="replace")
    assert "training" in text and "2/2" in text and "loss=" in text


# ---------------------------------------------------------------- --resume


def _stop_after(monkeypatch, epoch: int) -> None:
    """Make training stop like a Ctrl-C right after epoch ``epoch``'s checkpoint is written."""
    original = training_run.EpochRecorder.__call__

    def interrupting(self, est, state):
        result = original(self, est, state)
        if training_run.epochs_done(state) == epoch:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(training_run.EpochRecorder, "__call__", interrupting)


RESUME_ARGS = ["--data", "shapes", "--epochs", "5", "--n-filters", "3", "--kernel-size", "3",
               "--seed", "7"]  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_continues_a_stopped_run_exactly(dtype, tmp_path, capsys, monkeypatch):
    args = [*RESUME_ARGS, "--dtype", dtype]
    reference = tmp_path / "reference"
    code, _, err = run_main(["train", *args, "--out", reference, "--quiet"], capsys)
    assert code == 0, err

    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2)
        code, _, err = run_main(["train", *args, "--out", out], capsys)
    assert_one_line_error(code, err, "interrupted", "--resume")
    assert code == cli.EXIT_INTERRUPTED
    assert not (out / "metrics.json").exists() and not (out / "model.npz").exists()
    assert tinycnn.load(out / "checkpoint.npz").n_iter_ == 2

    # Without --resume an unfinished run is not thrown away.
    code, _, err = run_main(["train", *args, "--out", out], capsys)
    assert_one_line_error(code, err, "unfinished run", "--resume", "--overwrite")
    # With other options it is not continued either (a larger --epochs is allowed).
    changed = [a if a != "3" else "4" for a in args]
    code, _, err = run_main(["train", *changed, "--out", out, "--resume"], capsys)
    assert_one_line_error(code, err, "--n-filters 3", "now 4")

    code, stdout, err = run_main(["train", *args, "--out", out, "--resume"], capsys)
    assert code == 0, err
    assert "resuming at epoch 2" in stdout
    expected, resumed = model_arrays(reference / "model.npz"), model_arrays(out / "model.npz")
    assert expected.keys() == resumed.keys()
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 5
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3, 4, 5]
    record = json.loads((out / "run.json").read_text())
    assert [s["from_epoch"] for s in record["sessions"]] == [0, 2]


def test_resume_of_a_finished_run_does_nothing(tmp_path, capsys):
    out = tmp_path / "done"
    code, _, err = run_main(["train", *RESUME_ARGS, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    before = {name: (out / name).read_bytes() for name in RUN_FILES}
    code, stdout, err = run_main(["train", *RESUME_ARGS, "--out", out, "--resume"], capsys)
    assert code == 0 and err == ""
    assert "already finished" in stdout
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before


def test_a_refused_fresh_start_leaves_the_previous_run_alone(tmp_path, capsys):
    out = tmp_path / "keep"
    code, _, err = run_main(["train", *RESUME_ARGS, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    before = {name: (out / name).read_bytes() for name in RUN_FILES}
    # padding "same" needs an odd kernel: the estimator refuses before any epoch.
    argv = ["train", *RESUME_ARGS, "--out", out, "--kernel-size", "4", "--overwrite"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "kernel_size")
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before


def test_resume_without_checkpoint_starts_afresh(tmp_path, capsys):
    out = tmp_path / "new"
    code, _, err = run_main(["train", *RESUME_ARGS, "--out", out, "--resume", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 5


def test_overwrite_starts_afresh(tmp_path, capsys, monkeypatch):
    out = tmp_path / "over"
    with monkeypatch.context() as patch:
        _stop_after(patch, 1)
        code, _, _ = run_main(["train", *RESUME_ARGS, "--out", out], capsys)
    assert code == cli.EXIT_INTERRUPTED
    code, _, err = run_main(["train", *RESUME_ARGS, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    assert [s["from_epoch"] for s in record["sessions"]] == [0]


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "failing"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2)
        run_main(["train", *RESUME_ARGS, "--out", out], capsys)
    before = (out / "checkpoint.npz").read_bytes()
    fill_disk_while_writing(monkeypatch, name_suffix="checkpoint.npz")
    code, _, err = run_main(["train", *RESUME_ARGS, "--out", out, "--resume"], capsys)
    assert_one_line_error(code, err, "disk full")
    assert (out / "checkpoint.npz").read_bytes() == before
    assert not [p for p in os.listdir(out) if p.startswith(".tinycnn-tmp-")]


# ---------------------------------------------------------------- bad usage


def test_version_and_help(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.strip() == f"tinycnn {tinycnn.__version__}"
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        code, out, _ = run_main([name, "--help"], capsys)
        assert code == 0
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in out, f"{name} --help does not document {flag}"
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help text"
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and all(name in out for name in ("train", "predict", "evaluate"))


def test_version_through_the_interpreter():
    result = run_tinycnn("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tinycnn {tinycnn.__version__}"


TRAIN = ["train", "--data", "digits", "--out", "OUT"]
BAD_USAGE = {
    "no command": ([], "COMMAND"),
    "unknown command": (["fit"], "invalid choice"),
    "unknown option": (
        [*TRAIN, "--bogus"],
        "unrecognized arguments: --bogus",
        "'tinycnn train --help'",
    ),  # fmt: skip
    "missing --out": (["train", "--data", "digits"], "--out"),
    "missing --data": (["train", "--out", "OUT"], "--data"),
    "zero epochs": ([*TRAIN, "--epochs", "0"], "--epochs", "'0'"),
    "negative epochs": ([*TRAIN, "--epochs", "-3"], "--epochs", "'-3'"),
    "fractional epochs": ([*TRAIN, "--epochs", "2.5"], "--epochs", "'2.5'"),
    "word epochs": ([*TRAIN, "--epochs", "ten"], "--epochs", "'ten'"),
    "zero lr": ([*TRAIN, "--lr", "0"], "--lr"),
    "negative lr": ([*TRAIN, "--lr", "-0.1"], "--lr"),
    "nan lr": ([*TRAIN, "--lr", "nan"], "--lr"),
    "infinite lr": ([*TRAIN, "--lr", "inf"], "--lr"),
    "negative seed": ([*TRAIN, "--seed", "-1"], "--seed"),
    "seed too large": ([*TRAIN, "--seed", "4294967296"], "--seed", "4294967295"),
    "evaluate seed too large": (
        ["evaluate", "--model", "m", "--data", "digits", "--seed", str(2**32)],
        "--seed",
    ),
    "zero filters": ([*TRAIN, "--n-filters", "0"], "--n-filters"),
    "zero stride": ([*TRAIN, "--stride", "0"], "--stride"),
    "negative padding": ([*TRAIN, "--padding", "-1"], "--padding"),
    "word padding": ([*TRAIN, "--padding", "wide"], "--padding"),
    "zero batch": ([*TRAIN, "--batch-size", "0"], "--batch-size"),
    "negative alpha": ([*TRAIN, "--alpha", "-1"], "--alpha"),
    "momentum 1": ([*TRAIN, "--momentum", "1"], "--momentum"),
    "fraction 1": ([*TRAIN, "--validation-fraction", "1"], "--validation-fraction"),
    "unknown solver": ([*TRAIN, "--solver", "rmsprop"], "--solver"),
    "unknown dtype": ([*TRAIN, "--dtype", "float16"], "--dtype"),
    "unknown task": ([*TRAIN, "--task", "clustering"], "--task"),
    "resume and overwrite": ([*TRAIN, "--resume", "--overwrite"], "not allowed with"),
    "unknown layer": (
        [*TRAIN, "--layers", "conv8k3p1-relu-pool2"],
        "--layers",
        "token 3",
        "'pool2'",
        "is not a layer",
    ),  # fmt: skip
    "malformed layer": (
        [*TRAIN, "--layers", "conv8k3-relu-maxx2"],
        "token 3",
        "character 13",
        "'maxx2'",
        "max<size>",
    ),  # fmt: skip
    "impossible layer": ([*TRAIN, "--layers", "conv0k3"], "token 1", "'conv0k3'", "filters"),
    "empty stack": ([*TRAIN, "--layers", ""], "--layers is empty"),
    "empty token": ([*TRAIN, "--layers", "relu--relu"], "token 2", "empty"),
    "stack and shorthand": (
        [*TRAIN, "--layers", "conv8k3-relu", "--kernel-size", "5"],
        "--layers cannot be combined with --kernel-size 5",
    ),  # fmt: skip
    "predict without output": (["predict", "--model", "m.npz", "--input", "x.npy"], "--output"),
    "evaluate bad split": (
        ["evaluate", "--model", "m", "--data", "digits", "--split", "x"],
        "split",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_USAGE))
def test_bad_usage_is_one_line_exit_2(case, tmp_path, capsys):
    argv, *fragments = BAD_USAGE[case]
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code, out, err = run_main(argv, capsys)
    assert code == cli.EXIT_USAGE
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def damaged_files(tmp_path_factory, digits_run) -> dict[str, Path]:
    """A good model, and files that are not good models, in one folder."""
    folder = tmp_path_factory.mktemp("damaged")
    good = (digits_run / "model.npz").read_bytes()
    files = {
        "empty": b"",
        "text": b"this is not a model\n",
        "truncated": good[: len(good) // 2],
        "flipped": good[:200] + bytes(b ^ 0xFF for b in good[200:260]) + good[260:],
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.npz"
        paths[name].write_bytes(content)
    paths["foreign"] = folder / "foreign.npz"
    np.savez(paths["foreign"], X=np.zeros((3, 64)), y=np.zeros(3))
    paths["pickle"] = folder / "pickle.npz"
    np.savez(paths["pickle"], config=np.array([{"evil": 1}], dtype=object))
    return paths


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "flipped", "foreign", "pickle"])
def test_damaged_model_is_refused(kind, damaged_files, tmp_path, capsys):
    path = damaged_files[kind]
    np.save(tmp_path / "X.npy", np.zeros((2, 64)))
    code, _, err = run_main(
        ["predict", "--model", path, "--input", tmp_path / "X.npy", "--output", tmp_path / "y.npy"],
        capsys,
    )
    assert_one_line_error(code, err, str(path))
    assert code == cli.EXIT_FAILURE
    assert not (tmp_path / "y.npy").exists()
    code, _, err = run_main(["evaluate", "--model", path, "--data", "digits"], capsys)
    assert_one_line_error(code, err, str(path))


def _predict_argv(model, X, tmp_path, output=None):
    np.save(tmp_path / "X.npy", X) if X is not None else None
    output = output if output is not None else tmp_path / "y.npy"
    return ["predict", "--model", model, "--input", tmp_path / "X.npy", "--output", output]


@pytest.mark.parametrize(
    ("X", "fragment"),
    [
        (np.zeros((5, 63)), "(5, 63)"),
        (np.zeros((5, 1, 9, 9)), "(5, 1, 9, 9)"),
        (np.zeros((5, 2, 8, 8)), "(5, 2, 8, 8)"),
        (np.zeros(64), "(64,)"),
        (np.zeros((0, 64)), "(0, 64)"),
        (np.array([["1"] * 64]), "real numbers"),
        (np.full((2, 64), np.nan), "X.npy"),
    ],
    ids=["63 features", "9x9 images", "2 channels", "1-D", "no samples", "strings", "NaN"],
)
def test_predict_refuses_wrong_input(X, fragment, digits_run, tmp_path, capsys):
    argv = _predict_argv(digits_run / "model.npz", X, tmp_path)
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "y.npy").exists()


def test_predictions_on_images_must_go_to_a_csv(digits_run, tmp_path, capsys):
    from conftest import make_image_folder

    pics = make_image_folder(tmp_path / "pics", classes=("a", "b"), per_class=2, sizes=((8, 8),))
    argv = ["predict", "--model", digits_run / "model.npz", "--input", pics, "--output",
            tmp_path / "p.npy"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "--output", "name a .csv file")


def test_predict_refuses_missing_files(digits_run, tmp_path, capsys):
    model = digits_run / "model.npz"
    code, _, err = run_main(
        _predict_argv(tmp_path / "none.npz", np.zeros((1, 64)), tmp_path), capsys
    )
    assert_one_line_error(code, err, "none.npz")
    argv = ["predict", "--model", model, "--input", tmp_path / "nox.npy", "--output", "y.npy"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "nox.npy")
    argv = _predict_argv(model, np.zeros((1, 64)), tmp_path, output=tmp_path / "no" / "y.npy")
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "does not exist")


def test_train_refuses_bad_data(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(["train", "--data", "mnist-6k", "--out", out], capsys)
    assert_one_line_error(code, err, "unknown data set 'mnist-6k'")
    assert code == cli.EXIT_FAILURE
    code, _, err = run_main(["train", "--data", tmp_path / "missing.npz", "--out", out], capsys)
    assert_one_line_error(code, err, "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((10, 16)))
    code, _, err = run_main(["train", "--data", bad, "--out", out], capsys)
    assert_one_line_error(code, err, str(bad), "missing y")
    bad.write_bytes(b"PK\x03\x04garbage")
    code, _, err = run_main(["train", "--data", bad, "--out", out], capsys)
    assert_one_line_error(code, err, str(bad))
    assert not out.exists()


def test_train_refuses_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    code, _, err = run_main(["train", "--data", "shapes", "--out", target], capsys)
    assert_one_line_error(code, err, "not a folder")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--kernel-size", "4"], "kernel_size"),  # padding "same" needs an odd kernel
        (["--kernel-size", "11", "--padding", "0"], "kernel"),  # larger than 8x8 digits
        (["--stride", "2"], "stride"),  # padding "same" needs stride 1
    ],
)
def test_train_refuses_impossible_networks(extra, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(["train", "--data", "digits", "--out", out, *extra], capsys)
    assert_one_line_error(code, err, fragment)


def test_divergence_is_one_line(tmp_path, capsys):
    argv = ["train", "--data", "shapes-size", "--out", tmp_path / "div", "--solver", "sgd",
            "--lr", "1e12", "--epochs", "3", "--batch-size", "full"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "diverged")


def test_errors_through_the_interpreter_have_no_traceback(tmp_path):
    for args in (
        ["train", "--data", "digits", "--out", str(tmp_path / "o"), "--epochs", "-1"],
        ["predict", "--model", str(tmp_path / "missing.npz"), "--input", "x.npy", "--output",
         "y.npy"],
        ["evaluate", "--model", str(tmp_path / "missing.npz"), "--data", "nonsense"],
    ):  # fmt: skip
        result = run_tinycnn(*args)
        assert_one_line_error(result.returncode, result.stderr)


def test_early_stopping_may_stop_before_the_epochs(tmp_path, capsys):
    out = tmp_path / "early"
    argv = ["train", "--data", "shapes", "--out", out, "--epochs", "60", "--n-filters", "2",
            "--early-stopping", "--n-iter-no-change", "2", "--quiet"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    est = tinycnn.load(out / "model.npz")
    assert metrics["epochs"] == est.n_iter_ < 60
    assert metrics["stopped_early"] is True
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == list(range(1, metrics["epochs"] + 1))


def test_without_early_stopping_every_epoch_runs(tmp_path, capsys):
    # A loss that stalls must not end the run: --epochs N means N epochs.
    out = tmp_path / "stall"
    argv = ["train", "--data", "shapes", "--out", out, "--epochs", "14", "--n-filters", "1",
            "--lr", "1e-9", "--n-iter-no-change", "2", "--quiet"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 14 and metrics["stopped_early"] is False


def test_task_option_trains_a_regressor_on_integer_labels(tmp_path, capsys):
    out = tmp_path / "reg"
    argv = ["train", "--data", "digits", "--task", "regression", "--out", out, *FAST, "--quiet"]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    assert type(tinycnn.load(out / "model.npz")).__name__ == "CNNRegressor"
    assert "test_r2" in json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------- what predict may write


def test_predict_refuses_to_overwrite_its_model_or_input(digits_run, tmp_path, capsys):
    import shutil

    model = tmp_path / "model.npz"
    shutil.copy(digits_run / "model.npz", model)
    X = tmp_path / "X.npy"
    np.save(X, np.zeros((2, 64)))
    before = model.read_bytes(), X.read_bytes()
    alias = tmp_path / "alias.npz"
    alias.symlink_to(model)
    for output, which in ((model, "--model"), (alias, "--model"), (X, "--input")):
        argv = ["predict", "--model", model, "--input", X, "--output", output]
        code, _, err = run_main(argv, capsys)
        assert_one_line_error(code, err, "--output", which)
        assert code == cli.EXIT_FAILURE
    assert (model.read_bytes(), X.read_bytes()) == before
    tinycnn.load(model)


def test_predict_writes_through_a_symlink_and_into_a_device(digits_run, tmp_path, capsys):
    from test_files import make_device

    np.save(tmp_path / "X.npy", np.zeros((2, 64)))
    (tmp_path / "out").mkdir()
    link = tmp_path / "y.npy"
    link.symlink_to(tmp_path / "out" / "y.npy")
    code, _, err = run_main(_predict_argv(digits_run / "model.npz", None, tmp_path, link), capsys)
    assert code == 0, err
    assert link.is_symlink() and np.load(tmp_path / "out" / "y.npy").shape == (2,)
    device = tmp_path / "null"
    make_device(device)
    code, _, err = run_main(_predict_argv(digits_run / "model.npz", None, tmp_path, device), capsys)
    assert code == 0, err
    assert os.path.exists(device) and not device.is_file(), "the device was replaced"


def test_predict_output_errors_name_the_users_path(digits_run, tmp_path, capsys):
    np.save(tmp_path / "X.npy", np.zeros((2, 64)))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for output, fragment in ((folder, "folder"), (tmp_path / "no" / "y.npy", "does not exist")):
        argv = _predict_argv(digits_run / "model.npz", None, tmp_path, output)
        code, _, err = run_main(argv, capsys)
        assert_one_line_error(code, err, str(output), fragment)
        assert ".tinycnn-tmp-" not in err


def test_a_full_disk_names_the_file(digits_run, tmp_path, capsys):
    from test_files import FULL, make_device

    full = tmp_path / "full"
    make_device(full, FULL)  # a copy of /dev/full: every write fails with "no space left"
    argv = _predict_argv(digits_run / "model.npz", np.zeros((2, 64)), tmp_path, full)
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, str(full), "no space left")
    assert code == cli.EXIT_FAILURE


# ---------------------------------------------------------------- data files that lie


def crafted_npy(shape: tuple[int, ...], data_bytes: int) -> bytes:
    """A .npy header claiming ``shape`` of float64, followed by ``data_bytes`` zero bytes."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return header.getvalue() + bytes(data_bytes)


@pytest.mark.parametrize(
    ("shape", "data_bytes", "claimed"),
    [((10**12, 64), 1400, "466 TiB"), ((20 * 10**9 // 8,), 1024, "18.6 GiB")],
    ids=["466 TiB", "20 GB"],
)
def test_a_crafted_header_is_one_line_naming_the_file(shape, data_bytes, claimed, digits_run,
                                                      tmp_path, capsys):  # fmt: skip
    import zipfile

    npy = tmp_path / "X.npy"
    npy.write_bytes(crafted_npy(shape, data_bytes))
    argv = ["predict", "--model", digits_run / "model.npz", "--input", npy, "--output",
            tmp_path / "y.npy"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, str(npy), claimed, "header")
    assert code == cli.EXIT_FAILURE and "pickle" not in err
    npz = tmp_path / "data.npz"
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("X.npy", crafted_npy(shape, data_bytes))
        archive.writestr("y.npy", crafted_npy((2,), 16))
    code, _, err = run_main(["train", "--data", npz, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, str(npz), "'X'", claimed)
    assert "pickle" not in err and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- data that overflows


def test_data_whose_statistics_overflow_is_refused_with_a_fix(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = tmp_path / "huge.npz"
    np.savez(data, X=digits.data[:200] * 1e200, y=digits.target[:200])
    out = tmp_path / "run"
    code, _, err = run_main(["train", "--data", data, "--out", out, *FAST], capsys)
    assert_one_line_error(code, err, "rescale")
    assert code == cli.EXIT_FAILURE
    assert not (out / "model.npz").exists() and not (out / "checkpoint.npz").exists()


# ---------------------------------------------------------------- evaluate


def test_evaluate_test_split_uses_the_models_seed(digits_run, capsys):
    metrics = json.loads((digits_run / "metrics.json").read_text())  # trained with --seed 3
    model = digits_run / "model.npz"
    argv = ["evaluate", "--model", model, "--data", "digits", "--split", "test", "--json"]
    code, out, err = run_main(argv, capsys)
    assert code == 0 and err == "", err
    scores = json.loads(out)
    assert scores["seed"] == 3 and scores["seed_from"] == "model"
    assert scores["accuracy"] == metrics["test_accuracy"]
    code, out, err = run_main([*argv, "--seed", "0"], capsys)  # overlaps the training data
    assert code == 0
    assert "warning" in err and "seed 3" in err and "overlaps" in err
    assert json.loads(out)["seed"] == 0


def test_evaluate_refuses_labels_the_classifier_never_saw(digits_run, tmp_path, capsys):
    model = digits_run / "model.npz"
    unseen = tmp_path / "unseen.npz"
    np.savez(unseen, X=np.zeros((4, 64)), y=np.array([10, 11, 10, 11]))
    code, _, err = run_main(["evaluate", "--model", model, "--data", unseen], capsys)
    assert_one_line_error(code, err, str(unseen), "never saw", "10, 11")
    code, _, err = run_main(["evaluate", "--model", model, "--data", "shapes-size"], capsys)
    assert_one_line_error(code, err, "regression targets", "classifier")


# ---------------------------------------------------------------- stacks


def test_train_help_shows_the_stack_grammar_with_lenet(capsys):
    from tinycnn import Sequential
    from tinycnn.layer_string import parse_layers

    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0
    lines = out.splitlines()
    # LeNet-5's hidden stack, whole on one line, ready to copy; and it is LeNet-5.
    example = next(line.split() for line in lines if cli.LENET5 in line)
    assert example == ["--layers", cli.LENET5]
    net = Sequential([*parse_layers(cli.LENET5), *parse_layers("dense10")], (1, 28, 28))
    assert net.shapes[6] == (16, 5, 5) and sum(map(np.prod, net.param_shapes)) == 61706
    for form in ("conv<F>k<K>[s<S>][p<P>]", "relu", "max<N>[s<S>]", "avg<N>[s<S>]", "flatten",
                 "dense<U>"):  # fmt: skip
        assert form in out, form


def test_the_shorthand_defaults_in_the_help_are_the_estimators():
    from tinycnn.estimators._network import SHORTHAND_DEFAULTS

    assert cli.SHORTHAND_DEFAULTS == SHORTHAND_DEFAULTS


def test_network_options_reach_the_estimator_only_when_given():
    from tinycnn.datasets import DatasetInfo

    info = DatasetInfo("x", "classification", (1, 8, 8), n_samples=10, source="x")
    args = cli.parse(["train", "--data", "digits", "--out", "o"])
    options = training_run.run_options(args, info)
    shorthand = ("n_filters", "kernel_size", "stride", "padding")
    params = training_run.estimator_for(options, info, np.zeros((10, 1, 8, 8))).get_params()
    assert [params[name] for name in ("layers", *shorthand)] == [None] * 5  # the default network
    args = cli.parse(["train", "--data", "digits", "--out", "o", "--n-filters", "4"])
    options = training_run.run_options(args, info)
    params = training_run.estimator_for(options, info, np.zeros((10, 1, 8, 8))).get_params()
    assert [params[name] for name in ("layers", *shorthand)] == [None, 4, None, None, None]
    args = cli.parse(["train", "--data", "digits", "--out", "o", "--layers", "CONV4k3 - Relu"])
    options = training_run.run_options(args, info)
    assert options["layers"] == "conv4k3-relu"  # the canonical spelling, as recorded
    params = training_run.estimator_for(options, info, np.zeros((10, 1, 8, 8))).get_params()
    assert [params[name] for name in ("layers", *shorthand)] == ["conv4k3-relu", *[None] * 4]


def test_run_json_records_the_network(digits_run):
    record = json.loads((digits_run / "run.json").read_text())
    assert record["options"]["layers"] is None and record["options"]["kernel_size"] == 3
    assert record["network"] == {
        "layers": "conv4k3p1-relu",  # what --layers takes to train the same network
        "network_": "conv4k3p1-relu-flatten-dense10",
        "input_shape": [1, 8, 8],
        "output_shapes": [[4, 8, 8], [4, 8, 8], [256], [10]],
    }


def test_a_stack_that_does_not_fit_the_images_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["train", "--data", "digits", "--out", out, "--layers", "conv4k3-relu-max2-conv4k5"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "1x8x8 images", "layer 3", "kernel_size=5", "3x3")
    assert code == cli.EXIT_FAILURE
    assert not [name for name in RUN_FILES if (out / name).exists()]


def test_resume_without_network_options_keeps_the_runs_network(tmp_path, capsys, monkeypatch):
    reference = tmp_path / "reference"
    code, _, err = run_main(["train", *RESUME_ARGS, "--out", reference, "--quiet"], capsys)
    assert code == 0, err
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2)
        run_main(["train", *RESUME_ARGS, "--out", out], capsys)
    # Without --n-filters 3 --kernel-size 3: the run keeps the network it was started with.
    bare = ["--data", "shapes", "--epochs", "5", "--seed", "7"]
    code, _, err = run_main(["train", *bare, "--out", out, "--resume", "--quiet"], capsys)
    assert code == 0, err
    expected, resumed = model_arrays(reference / "model.npz"), model_arrays(out / "model.npz")
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    record = json.loads((out / "run.json").read_text())
    assert (record["options"]["n_filters"], record["options"]["kernel_size"]) == (3, 3)


def test_resume_refuses_a_run_of_another_network(tmp_path, capsys, monkeypatch):
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _stop_after(patch, 1)
        run_main(["train", *RESUME_ARGS, "--out", out], capsys)
    before = (out / "checkpoint.npz").read_bytes()
    bare = ["--data", "shapes", "--epochs", "5", "--seed", "7", "--out", out, "--resume"]
    code, _, err = run_main(["train", *bare, "--layers", "conv3k3p1-relu"], capsys)
    shorthand = "holds a run of the one-conv-layer network (--n-filters 3 --kernel-size 3)"
    assert_one_line_error(code, err, shorthand, "not of --layers conv3k3p1-relu", "--overwrite")
    code, _, err = run_main(["train", *bare, "--kernel-size", "5"], capsys)
    assert_one_line_error(code, err, "--kernel-size 3 (now 5)")
    # The checkpoint itself is checked too, whatever run.json says.
    record = json.loads((out / "run.json").read_text())
    record["options"].update(n_filters=None, kernel_size=None, padding=None, stride=None,
                             layers="conv3k3p1-relu")  # fmt: skip
    (out / "run.json").write_text(json.dumps(record))
    code, _, err = run_main(["train", *bare], capsys)
    assert_one_line_error(code, err, "checkpoint.npz holds a run of the one-conv-layer network",
                          "not of --layers conv3k3p1-relu")  # fmt: skip
    assert (out / "checkpoint.npz").read_bytes() == before


@pytest.fixture(scope="module")
def digits_data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:300], y[:300]


@pytest.mark.parametrize(
    ("layers", "first", "convs"),
    [
        ("conv4k3p1-relu-max2-conv6k3p1-relu", (4, 1, 3, 3), [(4, 8, 8), (6, 4, 4)]),
        ("max2-conv5k3-flatten-dense8-relu", (5, 1, 3, 3), [(5, 2, 2)]),  # a conv without its ReLU
        ("flatten-dense8-relu", None, []),
    ],
)
def test_the_pictures_of_a_stack_show_every_conv_layer(layers, first, convs, digits_data):
    from tinycnn import CNNClassifier

    X, y = digits_data
    est = CNNClassifier(layers=layers, image_shape=(1, 8, 8), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged
        est.fit(X, y)
    kernel = training_run.first_kernel(est)
    assert (None if kernel is None else kernel.shape) == first
    if kernel is not None:
        np.testing.assert_array_equal(kernel, est.params_[0])
    image, maps = training_run.feature_maps(est, X[5:])
    np.testing.assert_array_equal(image, X[5].reshape(1, 8, 8))
    assert [m.shape for _, m in maps] == convs
    outputs = est.layer_outputs(X[5:6])
    relu_after = [i + 1 for i, layer in enumerate(est.network_.layers)
                  if type(layer).__name__ == "Conv2d"]  # fmt: skip
    for (title, m), i in zip(maps, relu_after):
        relu = type(est.network_.layers[i]).__name__ == "ReLU"
        np.testing.assert_array_equal(m, outputs[i if relu else i - 1][0])
        assert title.endswith("+ relu") == relu


def test_a_stack_without_conv_layers_draws_no_filters(digits_data, tmp_path):
    from tinycnn import CNNClassifier
    from tinycnn.datasets import DatasetInfo

    X, y = digits_data
    est = CNNClassifier(layers="flatten-dense8-relu", image_shape=(1, 8, 8), max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged
        est.fit(X, y)
    info = DatasetInfo("digits", "classification", (1, 8, 8), n_samples=300, source="digits")
    folder = training_run.RunFolder(tmp_path)
    curves = {"test_loss": [1.0, 0.5]}
    pictures = training_run._draw(folder, est, curves, X[:50], y[:50], info)
    assert pictures == ("loss.png", "confusion.png", "errors.png")
    assert sorted(os.listdir(tmp_path)) == sorted(pictures)


# ---------------------------------------------------------------- user errors and bugs


def _inject(monkeypatch, target: str, exc: BaseException) -> None:
    """Make ``target`` (``module.attribute`` or ``module.Class.method``) raise ``exc``."""

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(target, broken)


def assert_internal_error(code: int, err: str, kind: str, message: str) -> None:
    assert code == cli.EXIT_FAILURE
    assert err.startswith("Traceback (most recent call last):"), err
    last = err.strip("\n").split("\n")[-1]
    assert last.startswith("tinycnn ")
    assert f": internal error ({kind}: {message})" in last and "report it" in last, last


@pytest.mark.parametrize(
    ("target", "exc"),
    [
        ("tinycnn.optim.Adam.step", ValueError("injected")),  # inside training
        ("tinycnn.engine.Engine.loss_and_grads", TypeError("injected")),
        ("tinycnn.datasets.load.load_builtin", ValueError("injected")),  # reading the data
        ("tinycnn.plots.plot_loss", ValueError("injected")),  # the command's own work
        ("tinycnn.training_run.network_record", KeyError("injected")),
    ],
    ids=["optimizer", "engine", "data", "plots", "record"],
)
def test_a_bug_in_train_shows_its_traceback(target, exc, tmp_path, capsys, monkeypatch):
    _inject(monkeypatch, target, exc)
    argv = ["train", "--data", "shapes", "--out", tmp_path / "run", *FAST, "--quiet"]
    code, _, err = run_main(argv, capsys)
    assert_internal_error(code, err, type(exc).__name__, str(exc))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_bug_in_predict_and_evaluate_shows_its_traceback(digits_run, tmp_path, capsys,
                                                           monkeypatch):  # fmt: skip
    _inject(monkeypatch, "tinycnn.estimators._base._forward", ValueError("injected"))
    code, _, err = run_main(_predict_argv(digits_run / "model.npz", np.zeros((2, 64)), tmp_path),
                            capsys)  # fmt: skip
    assert_internal_error(code, err, "ValueError", "injected")
    assert not (tmp_path / "y.npy").exists()
    code, _, err = run_main(["evaluate", "--model", digits_run / "model.npz", "--data", "digits"],
                            capsys)  # fmt: skip
    assert_internal_error(code, err, "ValueError", "injected")


def test_a_bug_through_the_interpreter_exits_1_with_its_traceback(tmp_path):
    code = (
        "import sys\n"
        "import tinycnn.optim\n"
        "def broken(*args): raise ValueError('injected deep inside')\n"
        "tinycnn.optim.Adam.step = broken\n"
        "from tinycnn.cli import main\n"
        f"sys.exit(main(['train', '--data', 'shapes', '--out', {str(tmp_path / 'run')!r}, "
        f"'--epochs', '2', '--n-filters', '2', '--kernel-size', '3']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last)")
    assert "internal error (ValueError: injected deep inside)" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_a_users_error_too(where, tmp_path, capsys):
    argv = ["train", "--data", tmp_path / "missing.npz", "--out", tmp_path / "o"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    code, _, err = run_main(argv, capsys)
    assert code == cli.EXIT_FAILURE
    assert err.startswith("Traceback (most recent call last):")
    last = err.strip("\n").split("\n")[-1]
    assert last.startswith("tinycnn train: error: ") and "missing.npz" in last
    code, _, err = run_main(argv[1:] if where == "before" else argv[:-1], capsys)
    assert_one_line_error(code, err, "missing.npz")  # without --debug: one line


def test_debug_shows_the_estimators_refusal_where_it_was_raised(tmp_path, capsys):
    argv = ["--debug", "train", "--data", "digits", "--out", tmp_path / "o", "--layers", "conv4k9"]
    code, _, err = run_main(argv, capsys)
    assert code == cli.EXIT_FAILURE
    assert "network_of" in err  # the estimator's own check, then the command's one line
    assert err.strip("\n").split("\n")[-1].startswith("tinycnn train: error: layers do not fit")


@pytest.mark.parametrize(
    ("exc", "users"),
    [
        (tinycnn.errors.InputError("bad"), True),
        (training_run.RunError("bad"), True),
        (tinycnn.datasets.DatasetError("bad"), True),
        (tinycnn.ModelFileError("m.npz", "bad"), True),
        (tinycnn.DivergenceError(3, float("nan")), True),
        (FileNotFoundError(2, "No such file", "x.npy"), True),
        (ImportError("drawing needs matplotlib: pip install 'tinycnn[plot]'"), True),
        (ModuleNotFoundError("No module named 'PIL'", name="PIL"), True),
        (ImportError("cannot import name 'x' from 'tinycnn.io'", name="tinycnn.io"), False),
        (ValueError("operands could not be broadcast together"), False),
        (TypeError("unsupported operand"), False),
        (KeyError("x"), False),
        (AssertionError(), False),
        (NotImplementedError(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_what_counts_as_a_users_error(exc, users):
    assert cli.is_users_error(exc) is users


STACK_ARGS = ["--data", "shapes", "--epochs", "4", "--layers", "conv3k3p1-relu-max2-conv4k3-relu",
              "--seed", "5"]  # fmt: skip


def test_a_stopped_stack_run_resumes_exactly(tmp_path, capsys, monkeypatch):
    reference = tmp_path / "reference"
    code, _, err = run_main(["train", *STACK_ARGS, "--out", reference, "--quiet"], capsys)
    assert code == 0, err
    record = json.loads((reference / "run.json").read_text())
    assert record["options"]["layers"] == "conv3k3p1-relu-max2-conv4k3-relu"
    assert record["network"]["network_"] == "conv3k3p1-relu-max2-conv4k3-relu-flatten-dense4"
    for name in ("filters.png", "feature_maps.png"):
        assert_valid_png(reference / name)
    out = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2)
        code, _, _ = run_main(["train", *STACK_ARGS, "--out", out], capsys)
    assert code == cli.EXIT_INTERRUPTED
    other = [a if a != "conv3k3p1-relu-max2-conv4k3-relu" else "conv3k3p1-relu" for a in STACK_ARGS]
    code, _, err = run_main(["train", *other, "--out", out, "--resume"], capsys)
    assert_one_line_error(code, err, "--layers 'conv3k3p1-relu-max2-conv4k3-relu'",
                          "now 'conv3k3p1-relu'")  # fmt: skip
    bare = [a for a in STACK_ARGS if a not in ("--layers", "conv3k3p1-relu-max2-conv4k3-relu")]
    code, _, err = run_main(["train", *bare, "--out", out, "--resume", "--quiet"], capsys)
    assert code == 0, err  # without --layers: the recorded stack
    expected, resumed = model_arrays(reference / "model.npz"), model_arrays(out / "model.npz")
    assert expected.keys() == resumed.keys()
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)


def test_predict_and_evaluate_a_stack_model(tmp_path, capsys):
    out = tmp_path / "stack"
    argv = ["train", "--data", "shapes", "--epochs", "2", "--layers", "conv2k3-relu-max2",
            "--seed", "1", "--out", out, "--quiet"]  # fmt: skip
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    est = tinycnn.load(out / "model.npz")
    assert tinycnn.load(out / "checkpoint.npz").network_ == est.network_
    assert layers_to_string(est.network_.layers) == "conv2k3-relu-max2-flatten-dense4"
    X, _, _ = load_dataset("shapes")
    np.save(tmp_path / "X.npy", X[:40])
    predict = ["predict", "--model", out / "model.npz", "--input", tmp_path / "X.npy",
               "--output", tmp_path / "y.npy"]  # fmt: skip
    code, _, err = run_main(predict, capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), est.predict(X[:40]))
    code, stdout, err = run_main(
        ["evaluate", "--model", out / "model.npz", "--data", "shapes", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == est.score(X, load_dataset("shapes")[1])
