"""bench/bench.py, run for real at a tiny scale: it times tinycnn against PyTorch on the same
model, reports the ratio and its spread, and rewrites only the generated part of its results
file. (Speed itself is never asserted: the table is what a person reads.)"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
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


def rows_of(text: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} |")
    ]


def test_a_tiny_run_fills_the_full_batch_tables_and_keeps_the_hand_written_text(
    bench, tmp_path, capsys
):
    results = tmp_path / "RESULTS.md"
    results.write_text(
        f"# Benchmark results\n\nintro by hand\n\n{bench.BEGIN}\nold table\n{bench.END}\n\n"
        "analysis by hand\n"
    )
    argv = ["--workloads", "S", "--rounds", "2", "--epochs-scale", "0.01"]
    assert bench.main([*argv, "--sections", "epoch,calls", "--out", str(results)]) == 0
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nintro by hand\n\n")
    assert text.endswith(f"{bench.END}\n\nanalysis by hand\n") and "old table" not in text
    assert "measured matrix-product peak" in text
    per_epoch, calls = rows_of(text, "S")[:2], rows_of(text, "S")[2:]
    assert [row[1] for row in per_epoch] == ["float64", "float32"]
    assert [row[1] for row in calls] == ["float64", "float32"]
    for row in per_epoch + calls:
        ours, theirs, ratio = float(row[3]), float(row[4]), float(row[5])
        assert ours > 0 and theirs > 0 and ratio >= 0  # printed to 2 decimals: may be 0.00
        low, high = (float(x) for x in re.fullmatch(r"([\d.]+)-([\d.]+)", row[6]).groups())
        assert low <= ratio <= high
    assert "targets missed:" in text
    # the bench warns when the two libraries' losses differ
    err = capsys.readouterr().err
    assert "differ" not in err, err


def test_a_tiny_run_of_the_stacks_fits_predicts_and_splits_an_epoch_by_layer(
    bench, tmp_path, capsys
):
    results = tmp_path / "RESULTS.md"
    argv = ["--workloads", "S", "--rounds", "2", "--dtypes", "float32", "--mini-scale", "0.01"]
    assert bench.main([*argv, "--sections", "fit,predict,layers", "--out", str(results)]) == 0
    text = results.read_text()
    for stack in ("one", "lenet", "cifar"):
        fit, predict = rows_of(text, stack)
        assert fit[2] == "float32" and predict[1] == "float32"  # (stack, samples, dtype, ...)
        assert float(fit[3]) > 0 and float(fit[4]) > 0
        assert float(predict[2]) > 0 and float(predict[3]) > 0
        assert f"Where an epoch of {stack} (fit path" in text
    assert "| update (optimizer step) |" in text and "`Dense(units=10)`" in text
    # each table says what its products take against the epoch the target asks for
    assert text.count("- matrix products: ") == 3 and "the target (ratio <= 1)" in text
    # the same losses after the same batches, and the same predicted labels, as PyTorch's
    err = capsys.readouterr().err
    assert "differ" not in err, err


def test_the_profile_times_each_layers_products_and_puts_numpy_back(bench):
    """A conv's and a dense layer's time inside matrix products is part of their time, the
    other layers have none, and ``tinycnn.layers`` uses NumPy itself again afterwards."""
    import numpy as np

    from tinycnn import layers
    from tinycnn.optim import SGD

    net, X, labels = bench.paths.stack_data("lenet", "float64", n=96)
    T = np.eye(10)[labels]
    costs, update, whole = bench.paths.profile_epoch(net, X, T, "float64", 32, SGD(0.01), "mse")
    assert layers.np is np
    for c in costs:
        has_products = c.name.startswith(("Conv2d", "Dense"))
        assert (c.product_ms > 0) == has_products, c
        assert c.product_ms <= c.forward_ms + c.backward_ms
    assert 0 < sum(c.forward_ms + c.backward_ms for c in costs) + update <= whole


def test_layer_flops_count_each_product_once(bench):
    """conv forward and kernel gradient (no input gradient for the first layer), dense
    forward, dW and dx: the same count as the per-epoch table's formula for S."""
    w = bench.WORKLOADS["S"]
    flops = bench.paths.layer_flops(w.spec().sequential(), w.n)
    assert sum(flops) == pytest.approx(w.gflop())
    assert flops[1:3] == [0.0, 0.0]  # ReLU, Flatten


def test_the_epoch_flop_count_of_the_seed_workload(bench):
    """S: 16 images 8x8, one 3x3 filter, 36 positions, one output. conv forward and kernel
    gradient: 2 * 2 * 1 * 9 * 16*36; dense forward, dW and dact: 3 * 2 * 16*36 * 1 * 1."""
    expected = (2 * 2 * 9 * 16 * 36 + 3 * 2 * 16 * 36) / 1e9
    assert bench.WORKLOADS["S"].gflop() == pytest.approx(expected)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and fork: Linux only")
def test_the_memory_measure_counts_what_a_forked_child_holds_privately(bench):
    """The helpers' memory is not in their parent's high-water mark: the bench samples what
    each child holds alone (its own allocations), not the pages it shares with its parent."""
    import os

    import numpy as np

    shared = np.ones(8 << 20, dtype=np.uint8)  # 8 MiB the child only reads: shared, not its own
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    with bench.ChildrenMemory(interval=0.001) as children:
        pid = os.fork()
        if pid == 0:  # the child: 24 MiB of its own, held until told to go
            try:
                own = np.ones(24 << 20, dtype=np.uint8)
                assert int(shared[::4096].sum()) == 2048
                os.write(ready_w, b"r")
                os.read(done_r, 1)
                del own
            finally:
                os._exit(0)
        os.read(ready_r, 1)
        deadline = 200
        while children.peak_kib < 24 << 10 and deadline:  # sampled every millisecond
            deadline -= 1
            time.sleep(0.01)
        os.write(done_w, b"d")
        os.waitpid(pid, 0)
    for fd in (ready_r, ready_w, done_r, done_w):
        os.close(fd)
    assert 24 << 10 <= children.peak_kib < 30 << 10
