"""The run folder of ``tinycnn train`` (``tinycnn.training_run``): one owner at a time, nothing of
the user's replaced without ``--overwrite``, and ``--resume`` to more epochs exactly equal to a
run started with that many.

The race is between two real processes; the folder rules go through ``tinycnn.cli.main``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import rel_error
from test_cli import RUN_FILES, assert_one_line_error, model_arrays, run_main

from tinycnn import cli

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")

# Slow enough (tens of ms per epoch) for a second process to meet the first mid-run.
SLOW = ["--data", "shapes", "--epochs", "30", "--n-filters", "4", "--kernel-size", "3",
        "--batch-size", "8", "--seed", "11", "--quiet"]  # fmt: skip
FAST = ["--data", "shapes", "--n-filters", "2", "--kernel-size", "3", "--seed", "4", "--quiet"]
TIMEOUT = 240


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tinycnn", "train", *SLOW, "--out", str(out), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert proc.poll() is None, f"the first run ended early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# ---------------------------------------------------------------- one owner at a time


def lock_holder(out: Path) -> int | None:
    try:
        text = (out / ".tinycnn-lock").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def test_a_second_train_on_a_running_folder_is_refused_and_harms_nothing(tmp_path):
    out = tmp_path / "run"
    first = start(out)
    wait_for((out / "checkpoint.npz").exists, first)
    # Frozen mid-run (it holds the folder and perhaps a temporary file) while others try.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        seconds = [
            subprocess.Popen(
                [sys.executable, "-m", "tinycnn", "train", *SLOW, "--out", str(out), *extra],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for extra in ([], ["--resume"], ["--overwrite"])
        ]
        for second in seconds:
            _, err = second.communicate(timeout=TIMEOUT)
            assert second.returncode == cli.EXIT_FAILURE, err
            assert_one_line_error(second.returncode, err, str(out), f"pid {first.pid}")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, err  # its temporary files were not deleted under it
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 30
    assert not [p for p in os.listdir(out) if p.startswith(".tinycnn-tmp-")]


def test_two_trains_started_together_one_runs_one_is_refused(tmp_path):
    out = tmp_path / "race"
    procs = [start(out), start(out)]
    pids = {p.pid: p for p in procs}
    deadline = time.monotonic() + TIMEOUT
    while lock_holder(out) not in pids:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
            p.stderr.read() for p in procs if p.poll() is not None
        ]
        time.sleep(0.002)
    holder = pids[lock_holder(out)]
    other = next(p for p in procs if p is not holder)
    os.kill(holder.pid, signal.SIGSTOP)  # however slowly the other starts, it meets the lock
    try:
        _, err = other.communicate(timeout=TIMEOUT)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert_one_line_error(other.returncode, err, "in use by another tinycnn train",
                          f"pid {holder.pid}")  # fmt: skip
    assert other.returncode == cli.EXIT_FAILURE
    _, err = holder.communicate(timeout=TIMEOUT)
    assert holder.returncode == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 30


# ---------------------------------------------------------------- what the folder holds


def test_a_folder_of_the_users_files_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    own = {"run.json": "my notes", "model.npz": "my model", "history.json": "[]",
           ".tinycnn-tmp-mine": "mine too"}  # fmt: skip
    for name, text in own.items():
        (out / name).write_text(text)
    code, _, err = run_main(["train", *FAST, "--epochs", "1", "--out", out], capsys)
    assert_one_line_error(code, err, str(out), "not empty", "--overwrite")
    assert {name: (out / name).read_text() for name in own} == own
    code, _, err = run_main(["train", *FAST, "--epochs", "1", "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["format"] == "tinycnn-run"


def test_an_empty_folder_is_used(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = run_main(["train", *FAST, "--epochs", "1", "--out", out], capsys)
    assert code == 0, err


def test_a_finished_run_is_not_replaced_without_overwrite(tmp_path, capsys):
    out = tmp_path / "done"
    code, _, err = run_main(["train", *FAST, "--epochs", "2", "--out", out], capsys)
    assert code == 0, err
    before = {name: (out / name).read_bytes() for name in RUN_FILES}
    code, _, err = run_main(["train", *FAST, "--epochs", "2", "--out", out], capsys)
    assert_one_line_error(code, err, "finished run", "--overwrite", "--resume")
    assert code == cli.EXIT_FAILURE
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before
    # Files the user added to a run folder do not make it foreign, and stay.
    (out / "predictions.npy").write_bytes(b"the user's")
    code, _, err = run_main(["train", *FAST, "--epochs", "2", "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "predictions.npy").read_bytes() == b"the user's"


def test_data_inside_the_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    data = out / "model.npz"
    np.savez(data, X=np.random.default_rng(0).normal(size=(20, 16)), y=np.arange(20) % 2)
    code, _, err = run_main(["train", "--data", data, "--out", out, "--overwrite"], capsys)
    assert_one_line_error(code, err, str(data), "--out")
    assert np.load(data)["X"].shape == (20, 16)


def test_a_run_folder_inside_an_image_folder_is_refused(tmp_path, capsys):
    from conftest import make_image_folder

    pics = make_image_folder(tmp_path / "pics", classes=("a", "b"), per_class=3)
    for out in (pics / "run", pics):
        code, _, err = run_main(["train", "--data", pics, "--out", out, "--overwrite"], capsys)
        assert_one_line_error(code, err, "inside the --data folder")
    assert sorted(p.name for p in pics.iterdir()) == ["a", "b"]


def test_a_damaged_checkpoint_suggests_overwrite(tmp_path, capsys, monkeypatch):
    from test_cli import _stop_after

    out = tmp_path / "damaged"
    with monkeypatch.context() as patch:
        _stop_after(patch, 1)
        code, _, _ = run_main(["train", *FAST, "--epochs", "3", "--out", out], capsys)
    assert code == cli.EXIT_INTERRUPTED
    (out / "checkpoint.npz").write_bytes(b"damaged")
    code, _, err = run_main(["train", *FAST, "--epochs", "3", "--out", out, "--resume"], capsys)
    assert_one_line_error(code, err, "checkpoint.npz", "--overwrite")


# ---------------------------------------------------------------- more epochs


def test_resume_extends_a_finished_run_bit_identically(tmp_path, capsys):
    reference = tmp_path / "five"
    code, _, err = run_main(["train", *FAST, "--epochs", "5", "--out", reference], capsys)
    assert code == 0, err

    out = tmp_path / "three-then-five"
    code, _, err = run_main(["train", *FAST, "--epochs", "3", "--out", out], capsys)
    assert code == 0, err
    code, _, err = run_main(["train", *FAST, "--epochs", "3", "--out", out, "--resume"], capsys)
    assert code == 0, err  # the same count: nothing to do
    code, _, err = run_main(["train", *FAST, "--epochs", "2", "--out", out, "--resume"], capsys)
    assert_one_line_error(code, err, "3 epochs", "--epochs 2")
    argv = ["train", *FAST, "--epochs", "5", "--out", out, "--resume"]
    code, _, err = run_main([a for a in argv if a != "--quiet"], capsys)
    assert code == 0, err

    expected, extended = model_arrays(reference / "model.npz"), model_arrays(out / "model.npz")
    assert expected.keys() == extended.keys()
    for name in expected:
        np.testing.assert_array_equal(extended[name], expected[name], err_msg=name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 5 and metrics["epochs_requested"] == 5
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2, 3, 4, 5]
    record = json.loads((out / "run.json").read_text())
    assert [s["from_epoch"] for s in record["sessions"]] == [0, 3]
    assert record["options"]["epochs"] == 5


# ---------------------------------------------------------------- runs of earlier versions

OLD_RUN = Path(__file__).parent / "fixtures" / "run-783ea3c"  # see record_run_783ea3c.py


def model_config(run: Path) -> dict:
    return json.loads(model_arrays(run / "model.npz")["config"].tobytes().decode("utf-8"))


@pytest.mark.parametrize(
    "network",
    [["--n-filters", "3"], []],
    ids=["the same command line", "no network options"],
)
def test_a_run_of_the_command_before_layers_resumes_exactly(network, tmp_path, capsys):
    """Its run.json holds the network options the command then always passed (3, 3, 1, same):
    resumed with the command line that started it (whose --kernel-size now defaults to the
    estimators' 5) or with none of them, it ends where an uninterrupted run ends.

    Its first two epochs were computed on the machine that recorded the fixture, whose BLAS
    kernels round some sums differently from another CPU's (a few ulps of every weight), so the
    weights and losses are held to 1e-12 relative; everything else must be equal. A resume on
    one machine is bit-identical: the kill-and-resume tests check that."""
    import shutil

    out = tmp_path / "old"
    shutil.copytree(OLD_RUN, out)
    argv = ["train", "--data", "shapes", "--epochs", "4", "--seed", "7", "--quiet"]
    code, _, err = run_main([*argv, *network, "--out", out, "--resume"], capsys)
    assert code == 0, err
    reference = tmp_path / "reference"
    explicit = ["--n-filters", "3", "--kernel-size", "3", "--stride", "1", "--padding", "same"]
    code, _, err = run_main([*argv, *explicit, "--out", reference], capsys)
    assert code == 0, err
    expected, resumed = model_arrays(reference / "model.npz"), model_arrays(out / "model.npz")
    assert expected.keys() == resumed.keys()
    for name in expected:
        if name.startswith("params."):
            assert rel_error(resumed[name], expected[name]) <= 1e-12, name
        elif name != "config":
            np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    expected_config, resumed_config = model_config(reference), model_config(out)
    expected_losses = expected_config["fitted"].pop("loss_curve")
    assert rel_error(resumed_config["fitted"].pop("loss_curve"), expected_losses) <= 1e-12
    assert resumed_config == expected_config
    record = json.loads((out / "run.json").read_text())
    assert [s["from_epoch"] for s in record["sessions"]] == [0, 2]
    assert record["network"]["network_"] == "conv3k3p1-relu-flatten-dense4"
