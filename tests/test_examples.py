"""The examples run end to end, as a user runs them, and print what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
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
    assert "2 processes" in out
    epochs = re.findall(r"DDP epoch (\d+)/(\d+): loss ([0-9.]+)", out)
    assert len(epochs) >= 2 and epochs[-1][0] == epochs[-1][1]
    assert float(epochs[-1][2]) < float(epochs[0][2])  # the distributed training did train
    before = float(re.search(r"test accuracy before: ([0-9.]+)", out).group(1))
    after = float(re.search(r"test accuracy after: +([0-9.]+)", out).group(1))
    assert 0.5 < before <= after <= 1.0, out
