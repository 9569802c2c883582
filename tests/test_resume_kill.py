"""A real ``tinycnn train`` process stopped by SIGTERM once and killed with SIGKILL several times,
at different moments, and continued with ``--resume`` each time, ends with exactly the weights of
an uninterrupted run.

After every kill the checkpoint must still load (it is written atomically), and it never goes
back in time. The kill moments: right after the first checkpoint appears, right after a later
checkpoint is replaced, and after random short delays (some land during start-up, before any
epoch, some mid-training).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinycnn

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

EPOCHS = 30
# Small batches make each epoch long enough (tens of ms) to be killed in the middle of.
TRAIN_ARGS = ["--data", "shapes", "--epochs", str(EPOCHS), "--n-filters", "4", "--kernel-size", "3",
              "--batch-size", "8", "--seed", "11", "--quiet"]  # fmt: skip
TIMEOUT = 120.0


def start(out: Path, resume: bool, args: list[str] = TRAIN_ARGS) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tinycnn", "train", *args, "--out", str(out)]
    return subprocess.Popen(
        argv + (["--resume"] if resume else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def checkpoint_mark(path: Path) -> tuple[int, int] | None:
    """Something that changes whenever the checkpoint is replaced (inode, mtime)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def wait_for(condition, proc: subprocess.Popen) -> bool:
    """Poll ``condition`` until it holds (True) or the process ends (False)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("timed out waiting for the training process")


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    proc.stderr.close()


def checkpoint_epoch(path: Path) -> int:
    """The checkpoint loads both as a model and as a checkpoint; return its epoch count."""
    from tinycnn import io

    model = tinycnn.load(path)
    est, state = io.load_checkpoint(path)
    assert model.n_iter_ == est.n_iter_
    for a, b in zip(model.params_, est.params_):
        np.testing.assert_array_equal(a, b)
    return int(est.n_iter_)


def model_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def sigterm_mid_run(out: Path) -> int:
    """Resume the run in ``out`` and SIGTERM it as a checkpoint is replaced (most likely during a
    write): like Ctrl-C, it finishes that write, exits 143 with one line saying how to resume,
    and leaves a complete checkpoint and no temporary file. Returns the checkpoint's epoch."""
    checkpoint = out / "checkpoint.npz"
    proc = start(out, resume=True)
    before = checkpoint_mark(checkpoint)
    assert wait_for(lambda: checkpoint_mark(checkpoint) != before, proc)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT)
    err = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted by SIGTERM" in lines[0] and "--resume" in lines[0]
    assert str(checkpoint) in lines[0]
    assert not [p for p in os.listdir(out) if p.startswith(".tinycnn-tmp-")]
    epoch = checkpoint_epoch(checkpoint)  # complete and loadable
    assert 0 < epoch < EPOCHS
    return epoch


def test_sigkilled_training_resumes_to_the_uninterrupted_weights(tmp_path):
    """Six SIGKILLs and a SIGTERM (handled like Ctrl-C), each followed by --resume."""
    rng = random.Random(20260101)
    reference_out = tmp_path / "reference"
    reference = start(reference_out, resume=False)  # runs alongside the killed one

    out = tmp_path / "killed"
    checkpoint = out / "checkpoint.npz"
    seen_epochs: list[int] = []
    kill_plans = [
        ("first checkpoint", 0.0),  # the moment the first checkpoint appears
        ("start", 0.05),  # during start-up, before this process has run an epoch
        ("next checkpoint", 0.0),  # the moment a later checkpoint replaces the previous one
        # Random moments mid-training: some while an epoch runs, some during a write.
        ("next checkpoint", rng.uniform(0.0, 0.3)),
        ("next checkpoint", rng.uniform(0.0, 0.3)),
        ("next checkpoint", rng.uniform(0.0, 0.3)),
    ]
    for i, (moment, delay) in enumerate(kill_plans):
        if i == 1:  # a SIGTERM between the kills, also mid-run
            seen_epochs.append(sigterm_mid_run(out))
        proc = start(out, resume=i > 0)
        if moment == "first checkpoint":
            reached = wait_for(checkpoint.exists, proc)
        elif moment == "next checkpoint":
            before = checkpoint_mark(checkpoint)
            reached = wait_for(lambda b=before: checkpoint_mark(checkpoint) != b, proc)
        else:
            reached = True
        time.sleep(delay)
        reached = reached and proc.poll() is None
        kill(proc)
        assert reached or proc.returncode == 0, "the process failed before it could be killed"
        if checkpoint.exists():
            epoch = checkpoint_epoch(checkpoint)
            assert not seen_epochs or epoch >= seen_epochs[-1], "the checkpoint went back in time"
            seen_epochs.append(epoch)
        if (out / "metrics.json").exists():
            break  # the run finished before this kill; nothing left to interrupt

    print("checkpoint epochs after the kills:", seen_epochs)
    # The kills interrupted the run at different epochs, not all before or after training.
    assert len({e for e in seen_epochs if 0 < e < EPOCHS}) >= 2, seen_epochs

    # Finish: --resume until done (one run is enough unless it is killed again; it is not).
    final = start(out, resume=True)
    _, err = final.communicate(timeout=TIMEOUT)
    assert final.returncode == 0, err.decode()
    _, err = reference.communicate(timeout=TIMEOUT)
    assert reference.returncode == 0, err.decode()

    expected = model_arrays(reference_out / "model.npz")
    resumed = model_arrays(out / "model.npz")
    assert expected.keys() == resumed.keys()
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    for folder in (out, reference_out):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["epochs"] == EPOCHS
        history = json.loads((folder / "history.json").read_text())
        assert history["epoch"] == list(range(1, EPOCHS + 1))
    np.testing.assert_array_equal(
        tinycnn.load(out / "model.npz").loss_curve_,
        tinycnn.load(reference_out / "model.npz").loss_curve_,
    )
    record = json.loads((out / "run.json").read_text())
    assert len(record["sessions"]) >= 3
    # Temporary files of killed writers are cleaned up by the next run; the lock file stays.
    assert sorted(p for p in os.listdir(out) if p.startswith(".")) == [".tinycnn-lock"]


STACK_EPOCHS = 6
STACK_ARGS = ["--data", "shapes", "--epochs", str(STACK_EPOCHS), "--layers",
              "conv3k3p1-relu-max2-conv4k3-relu", "--batch-size", "8", "--seed", "5",
              "--quiet"]  # fmt: skip


def test_a_sigkilled_stack_run_resumes_to_the_uninterrupted_weights(tmp_path):
    """A --layers run killed once mid-training (after its second checkpoint) and resumed."""
    from tinycnn import cli

    out = tmp_path / "killed"
    checkpoint = out / "checkpoint.npz"
    proc = start(out, resume=False, args=STACK_ARGS)
    assert wait_for(checkpoint.exists, proc)
    before = checkpoint_mark(checkpoint)
    assert wait_for(lambda: checkpoint_mark(checkpoint) != before, proc)
    kill(proc)
    epoch = checkpoint_epoch(checkpoint)
    assert 0 < epoch < STACK_EPOCHS
    final = start(out, resume=True, args=STACK_ARGS)
    _, err = final.communicate(timeout=TIMEOUT)
    assert final.returncode == 0, err.decode()

    reference = tmp_path / "reference"
    assert cli.main(["train", *STACK_ARGS, "--out", str(reference)]) == 0
    expected = model_arrays(reference / "model.npz")
    resumed = model_arrays(out / "model.npz")
    assert expected.keys() == resumed.keys()
    assert "params.3.kernel" in expected  # the stack's second conv layer
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    record = json.loads((out / "run.json").read_text())
    assert [s["from_epoch"] for s in record["sessions"]] == [0, epoch]
