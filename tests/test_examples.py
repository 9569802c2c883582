"""The examples run end to end, as a user runs them, and print what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, timeout: float, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=EXAMPLES.parent,
    )


def test_scale_out_ddp_continues_training_and_brings_the_weights_back():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    # Generous: it finishes in seconds alone, but the suite shares 2 cores with other tests.
    result = run_example("scale_out_ddp.py", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # a LeNet-like stack: two conv -> ReLU -> max-pool blocks, then dense layers
    assert re.search(r"tinycnn stack: conv\w+-relu-max2-conv\w+-relu-max2-flatten-dense", out), out
    assert "2 processes" in out
    epochs = re.findall(r"DDP epoch (\d+)/(\d+): loss ([0-9.]+)", out)
    assert len(epochs) >= 2 and epochs[-1][0] == epochs[-1][1]
    assert float(epochs[-1][2]) < float(epochs[0][2])  # the distributed training did train
    before = float(re.search(r"test accuracy before: ([0-9.]+)", out).group(1))
    after = float(re.search(r"test accuracy after: +([0-9.]+)", out).group(1))
    assert 0.5 < before <= after <= 1.0, out


def test_mnist5k_table_prints_a_row_per_model():
    # --quick: one epoch each, the plumbing of the README's table (the full run takes minutes);
    # its first row is `tinycnn train --data mnist-5k` on the fixed 4000/1000 split.
    pytest.importorskip("sklearn")
    result = run_example("mnist5k_vs_mlp.py", 240, "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| model | held-out accuracy | epochs | training seconds |"
    assert len(rows) == 4 and "tinycnn train" in rows[1] and "MLPClassifier" in rows[3]
    for row in rows[1:]:
        accuracy = float(row.split("|")[2])
        assert 0.5 < accuracy <= 1.0, row  # real digits, learnt in one epoch


def test_defaults_suite_prints_a_row_per_task_with_three_models(tmp_path):
    # --quick: 60 training samples and 2 epochs per task, the plumbing of docs/defaults.md's
    # table (the full run takes minutes); --write writes the same table.
    pytest.importorskip("sklearn")
    table = tmp_path / "table.md"
    result = run_example("defaults_suite.py", 240, "--quick", "--write", str(table))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| task | kind | metric | tinycnn default | s | MLP default | s |")
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == ["digits", "mnist-5k", "position", "count", "shapes", "shapes-size",
                     "photo-crops"]  # fmt: skip
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] in ("classification", "regression") and len(cells) == 9, row
        for score in cells[3::2]:
            assert -100 < float(score) <= 1.0, row
    written = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    assert written == rows
