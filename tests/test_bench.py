"""bench/bench.py, run for real at a tiny scale: it times tinycnn against PyTorch on the same
model, reports the ratio and its spread, and rewrites only the generated part of its results
file. (Speed itself is never asserted: the table is what a person reads.)"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tinycnn_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_tiny_run_fills_the_table_and_keeps_the_hand_written_text(bench, tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text(
        f"# Benchmark results\n\nintro by hand\n\n{bench.BEGIN}\nold table\n{bench.END}\n\n"
        "analysis by hand\n"
    )
    argv = ["--workloads", "S", "--rounds", "2", "--epochs-scale", "0.01", "--no-loops"]
    argv += ["--mini-scale", "0.02"]
    assert bench.main([*argv, "--no-memory", "--out", str(results)]) == 0
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nintro by hand\n\n")
    assert text.endswith(f"{bench.END}\n\nanalysis by hand\n") and "old table" not in text
    rows = [line for line in text.splitlines() if line.startswith("| S |")]
    assert [row.split(" | ")[1] for row in rows] == ["float64", "float32"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        ours, theirs, ratio = float(cells[3]), float(cells[4]), float(cells[5])
        assert ours > 0 and theirs > 0 and ratio >= 0  # printed to 2 decimals: may be 0.00
        low, high = (float(x) for x in re.fullmatch(r"([\d.]+)-([\d.]+)", cells[6]).groups())
        assert low <= ratio <= high
    for stack in ("one", "lenet"):
        mini = [line for line in text.splitlines() if line.startswith(f"| {stack} |")]
        assert [row.split(" | ")[1] for row in mini] == ["float64", "float32"], stack
        assert all(float(row.split(" | ")[2]) > 0 for row in mini)
    assert "targets missed:" in text
    # the bench warns when the two libraries' losses after the same epochs differ
    assert "losses differ" not in capsys.readouterr().err


def test_the_epoch_flop_count_of_the_seed_workload(bench):
    """S: 16 images 8x8, one 3x3 filter, 36 positions, one output. conv forward and kernel
    gradient: 2 * 2 * 1 * 9 * 16*36; dense forward, dW and dact: 3 * 2 * 16*36 * 1 * 1."""
    expected = (2 * 2 * 9 * 16 * 36 + 3 * 2 * 16 * 36) / 1e9
    assert bench.WORKLOADS["S"].gflop() == pytest.approx(expected)
