"""tinycnn against PyTorch's CPU path and against plain loops: one report, written to RESULTS.md.

Run ``make bench`` (or ``python bench/bench.py --help``; ``--sections`` picks parts). What is
measured, and how: every comparison runs ours and PyTorch's
alternately in one process (2 threads each), a warm-up round first, and quotes the median of the
per-round ratios, so that load from other processes cancels out as far as it can:

* ``epoch``: for each workload (S, M, C, L) and dtype, one full-batch gradient-descent epoch of
  conv -> ReLU -> flatten -> dense with MSE and lr 0.01, by ``tinycnn.training.train`` with its
  engine built once (its setup timed apart) and by the same model in PyTorch.
* ``calls``: ``train_cnn`` as one whole call, setup included (S and M at their epochs per round,
  C and L at 2 and 20 epochs), against the same call in PyTorch (``userpaths.py``).
* ``fit``: ``CNNClassifier.fit`` on mini-batches of 64 with Adam, one whole call, for the stacks
  ``one``, ``lenet`` and ``cifar``, against the loop a PyTorch user writes, on the same batches
  from the same initial weights (so the losses agree).
* ``predict``: ``predict`` on 10000 images of each stack against the module under
  ``torch.no_grad()``.
* ``layers``: where an epoch goes, per layer (forward, backward, and of those the time inside
  matrix products) and in the update, with each layer's FLOPs and its floor at the
  matrix-product peak measured at the start of the run; under each table, the products' sum
  against the epoch the target asks for, from PyTorch's time earlier in the run.
* ``loops``: M with one filter, float64, against ``tinycnn.naive.train_cnn`` (plain loops), per
  epoch: 2 epochs of the loops against 2 calls of ``LOOPS_OURS_FACTOR`` epochs of ours a round.
* ``memory``: the resident-set high-water mark above the level reached after imports and data
  creation, training L (2 full-batch epochs) and ``lenet`` (one epoch of its fit) in float32,
  each library in a fresh subprocess; plus the largest total private memory of that process's
  children (tinycnn's helper processes), sampled every few milliseconds.

PyTorch is needed for the comparisons only; without it the tinycnn columns are still filled.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tinycnn
from tinycnn import naive
from tinycnn.network import ConvNetSpec, init_params_seed
from tinycnn.optim import SGD, Adam
from tinycnn.training import make_engine, train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import userpaths as paths  # noqa: E402  (the paths users take, beside this file)

DTYPES = ("float64", "float32")
LR = 0.01
TORCH_THREADS = 2
# Targets (issues 3 and 12): ratios tinycnn / PyTorch, plain-loop speedup, memory ratio.
TARGET_RATIO, TARGET_LOOP_SPEEDUP, TARGET_MEMORY_RATIO = 0.5, 500.0, 0.5
FLOOR_FACTOR_TO_EXPLAIN = 3.0  # above this many times its floor, RESULTS.md names the bottleneck


@dataclass(frozen=True)
class Workload:
    name: str
    n: int
    channels: int
    size: int
    n_filters: int
    kernel_size: int
    n_outputs: int
    epochs: int  # epochs per timed round: enough that a round is well above timer noise
    what: str

    def spec(self, n_filters: int | None = None) -> ConvNetSpec:
        F = self.n_filters if n_filters is None else n_filters
        s, k = self.size, self.kernel_size
        return ConvNetSpec(self.channels, s, s, F, k, 1, 0, self.n_outputs)

    def gflop(self, n_filters: int | None = None) -> float:
        """Floating-point operations of one epoch (multiply-adds count 2): the conv forward and
        its kernel gradient, and the dense forward and both its gradients (no dx for the
        input)."""
        spec = self.spec(n_filters)
        positions = self.n * spec.out_h * spec.out_w
        window = spec.in_channels * spec.kernel_size**2
        conv = 2 * 2 * spec.n_filters * window * positions
        dense = 3 * 2 * positions * spec.n_filters * spec.n_outputs
        return (conv + dense) / 1e9


WORKLOADS = {
    w.name: w
    for w in (
        Workload("S", 16, 1, 8, 1, 3, 1, 2000, "the seed's own scale"),
        Workload("M", 1797, 1, 8, 8, 3, 10, 50, "scikit-learn's digits"),
        Workload("C", 2000, 3, 32, 16, 3, 10, 4, "CIFAR-sized colour images"),
        Workload("L", 10000, 1, 28, 16, 5, 10, 2, "MNIST-sized, 10k images"),
    )
}


def make_data(w: Workload, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Images uniform in [0, 1) and one-hot targets (uniform targets when O = 1), seed 0.

    Drawn in float32 and cast, so both dtypes see the same values and creating them leaves no
    large temporary behind (which would hide memory growth below the baseline).
    """
    rng = np.random.default_rng(0)
    X = rng.random((w.n, w.channels, w.size, w.size), dtype=np.float32).astype(dtype)
    if w.n_outputs == 1:
        T = rng.random((w.n, 1), dtype=np.float32).astype(dtype)
    else:
        T = np.eye(w.n_outputs, dtype=dtype)[rng.integers(0, w.n_outputs, w.n)]
    return X, T


def initial_params(spec: ConvNetSpec, dtype):
    np.random.seed(0)
    return init_params_seed(spec, dtype)


class Ours:
    """tinycnn's full-batch epochs through ``training.train``, as ``train_cnn`` runs them.

    ``train`` builds an engine for its run (buffers, helper processes); here it is built once,
    timed apart (``setup_ms``) with a first call that unfolds X's windows, and kept across
    rounds, so that the rounds time the epochs themselves, as PyTorch's rounds do once its
    allocator is warm.
    """

    def __init__(self, spec: ConvNetSpec, X, T, dtype):
        self.spec, self.X, self.T = spec, X, T
        self.init = initial_params(spec, dtype)
        start = time.perf_counter()
        self.net = spec.sequential()
        self.engine = make_engine(self.net, dtype, X)
        self.engine.loss_and_grads(list(self.init), X, T, "mse")  # windows kept from here on
        self.setup_ms = (time.perf_counter() - start) * 1e3
        self.last_loss = float("nan")

    def run(self, epochs: int) -> None:
        params = self.init.copy()
        history = train(
            self.net,
            params,
            self.X,
            self.T,
            SGD(LR),
            epochs,
            loss="mse",
            engine=self.engine,
        )
        self.last_loss = history.loss_curve[-1]


class PlainLoops:
    """``tinycnn.naive.train_cnn``: the seed's algorithm written as plain loops."""

    def __init__(self, spec: ConvNetSpec, X, T):
        self.spec, self.X, self.T = spec, X, T

    def run(self, epochs: int) -> None:
        s = self.spec
        np.random.seed(0)
        naive.train_cnn(self.X, self.T, epochs, LR, s.n_filters, s.kernel_size, s.stride, s.pad)


class Torch:
    """The same model in PyTorch, from the same initial weights, on the same data."""

    def __init__(self, torch, spec: ConvNetSpec, X, T, dtype):
        self.torch = torch
        nn = torch.nn
        init = initial_params(spec, dtype)
        tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
        C, F, k, O = spec.in_channels, spec.n_filters, spec.kernel_size, spec.n_outputs
        self.conv = nn.Conv2d(C, F, k, stride=spec.stride, padding=spec.pad).to(tdtype)
        self.fc = nn.Linear(spec.n_hidden, O).to(tdtype)
        self.init = [
            torch.from_numpy(init.kernel.copy()),
            torch.from_numpy(init.bias_conv.copy()),
            torch.from_numpy(init.W_fc.T.copy()),
            torch.from_numpy(init.b_fc.copy()),
        ]
        self.X, self.T = torch.from_numpy(X), torch.from_numpy(T)
        self.last_loss = float("nan")

    def run(self, epochs: int) -> None:
        torch = self.torch
        params = [self.conv.weight, self.conv.bias, self.fc.weight, self.fc.bias]
        with torch.no_grad():
            for p, v in zip(params, self.init):
                p.copy_(v)
        opt = torch.optim.SGD(params, lr=LR)
        loss = None
        for _ in range(epochs):
            opt.zero_grad()
            logits = self.fc(torch.relu(self.conv(self.X)).flatten(1))
            loss = torch.nn.functional.mse_loss(logits, self.T)
            loss.backward()
            opt.step()
        self.last_loss = loss.item()


def alternate(
    first, second, epochs: int, rounds: int
) -> tuple[float, float, float, tuple[float, float]]:
    """Time ``first.run(epochs)`` and ``second.run(epochs)`` alternately (the order flips
    every round) after one warm-up round each. Returns the median ms/epoch of each, the
    median of the per-round ratios first/second, and their (lowest, highest)."""
    first.run(epochs)
    second.run(epochs)
    times_a, times_b, ratios = [], [], []
    for r in range(rounds):
        pair = []
        for runner in (first, second) if r % 2 == 0 else (second, first):
            start = time.perf_counter()
            runner.run(epochs)
            pair.append((runner, (time.perf_counter() - start) * 1e3 / epochs))
        ta = next(t for who, t in pair if who is first)
        tb = next(t for who, t in pair if who is second)
        times_a.append(ta)
        times_b.append(tb)
        ratios.append(ta / tb)
    median_ratio = statistics.median(ratios)
    return statistics.median(times_a), statistics.median(times_b), median_ratio, spread(ratios)


def spread(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def time_alone(runner, epochs: int, rounds: int) -> float:
    runner.run(epochs)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        runner.run(epochs)
        times.append((time.perf_counter() - start) * 1e3 / epochs)
    return statistics.median(times)


def import_torch():
    try:
        import torch
    except ImportError:
        print(
            "PyTorch is not installed: the PyTorch columns stay empty. Install it with "
            "`pip install 'tinycnn[torch]'` (torch==2.13.0) to compare.",
            file=sys.stderr,
        )
        return None
    torch.set_num_threads(TORCH_THREADS)
    return torch


# ---------------------------------------------------------------- memory, in a subprocess


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def private_kib(pid: int) -> int:
    """The memory (KiB) only process ``pid`` maps: for a forked helper, what it allocated and its
    copies of the pages either process wrote since the fork (pages still shared are its
    parent's, counted there); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Private_"))
    except OSError:
        return 0


def child_pids() -> list[int]:
    """This process's children (Linux; none where /proc does not say)."""
    pids: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


class ChildrenMemory:
    """While in use, samples every ``interval`` seconds (in a thread) the private memory of this
    process's children, all together; ``peak_kib`` is the largest total seen. The parent's
    ``ru_maxrss``/``VmHWM`` leave children out, and ``RUSAGE_CHILDREN`` would not do: it is the
    largest single child's RSS, counting the pages it shares with its parent, and only for
    children already reaped."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak_kib = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            total = sum(private_kib(pid) for pid in child_pids())
            self.peak_kib = max(self.peak_kib, total)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> ChildrenMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def memory_child(library: str, workload: str, dtype: str) -> None:
    """Print the peak memory growth (MiB) of training ``workload`` with ``library``: this
    process's RSS above its level after imports and data creation, plus the largest private
    memory its children (helper processes) held at once; for a full-batch workload (S, M, C,
    L) for 2 epochs, or a mini-batch stack (``paths.STACKS``) for one epoch of its fit. Runs in
    its own process."""
    torch = import_torch() if library == "torch" else None
    if library == "torch" and torch is None:
        print(json.dumps({"mib": None}))
        return
    if workload in paths.STACKS:
        net, X, labels = paths.stack_data(workload, dtype)

        def runner_for(X, labels):
            if torch:
                return paths.TorchMiniBatchFit(torch, net, X, labels, dtype)
            return paths.EstimatorFit(net, X, labels, dtype)

        # A first tiny fit loads what each side imports on first use (scikit-learn's modules,
        # PyTorch's kernels) before the baseline: libraries loaded are not training memory.
        runner_for(X[: paths.MINI_BATCH + 1], labels[: paths.MINI_BATCH + 1]).run(1)

        def train_once():  # the model, the engine and the estimator are part of what is measured
            runner_for(X, labels).run(1)
    else:
        w = WORKLOADS[workload]
        X, T = make_data(w, dtype)
        spec = w.spec()

        def train_once():
            runner = Torch(torch, spec, X, T, dtype) if torch else Ours(spec, X, T, dtype)
            runner.run(2)

    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        baseline = _rss_kib("VmRSS")
        with ChildrenMemory() as children:
            train_once()
        peak = _rss_kib("VmHWM")
    except OSError:  # no clear_refs: the high-water mark so far is the baseline
        import resource

        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with ChildrenMemory() as children:
            train_once()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    helpers = children.peak_kib / 1024
    print(json.dumps({"mib": (peak - baseline) / 1024 + helpers, "helpers_mib": helpers}))


def memory_growth(library: str, workload: str, dtype: str) -> dict | None:
    """``{"mib": total, "helpers_mib": the helpers' part}`` from :func:`memory_child` in a
    fresh process; None for PyTorch when it is not installed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", library]
    cmd += ["--memory-workload", workload, "--dtypes", dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return None if result["mib"] is None else result


# ---------------------------------------------------------------- machine description


def machine_description(torch) -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    lines = [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; {platform.platform()}",
        f"- Python {platform.python_version()}, NumPy {np.__version__}, "
        f"tinycnn {tinycnn.__version__}, "
        f"PyTorch {torch.__version__ if torch else 'not installed'}"
        + (f" ({torch.get_num_threads()} threads)" if torch else ""),
    ]
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            about = [pool.get("version"), pool.get("architecture")]
            about = [str(x) for x in about if x] + [f"{pool['num_threads']} threads"]
            lines.append(
                f"- {pool['user_api']}: {pool['internal_api']} ({', '.join(about)}, "
                f"{Path(pool['filepath']).name})"
            )
    except ImportError:
        blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
        lines.append(f"- BLAS: {blas.get('name')} {blas.get('version')} (threadpoolctl absent)")
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP", "MKL"))}
    lines.append(f"- BLAS/OpenMP environment: {env or 'none set'}")
    return lines


# ---------------------------------------------------------------- main


def fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def call_rounds(args) -> int:
    """Timed rounds of the whole-call comparisons: half the per-epoch rounds (7 -> 3)."""
    return max(1, args.rounds // 2)


SECTIONS = ("epoch", "calls", "fit", "predict", "layers", "loops", "memory")


class Report:
    """The rows and lines of one run, printed as they come, and the targets missed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.misses: list[str] = []
        self.torch_ms: dict[str, float] = {}  # PyTorch's ms per call or epoch, by row

    def table(self, title: str, header: list[str]) -> None:
        self.add("", f"### {title}", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header))  # fmt: skip

    def row(self, cells: list[str]) -> None:
        self.add("| " + " | ".join(cells) + " |")

    def add(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(line)
            print(line, flush=True)

    def target(self, what: str, ratio: float | None, limit: float) -> None:
        if ratio is not None and ratio > limit:
            self.misses.append(f"{what}: ratio {ratio:.2f} > {limit}")


def check_losses(what: str, ours: float, theirs: float) -> None:
    if abs(ours - theirs) > 1e-3 * abs(theirs):
        print(f"warning: {what} losses differ: ours {ours}, torch {theirs}", file=sys.stderr)


def compare(report: Report, cells: list[str], ours, theirs, repeats: int, rounds: int,
            what: str, limit: float, check=check_losses) -> None:  # fmt: skip
    """One table row: ours and theirs alternately (``repeats`` runs per timing), ms per run."""
    ms_ours, ms_torch, ratio, (low, high) = alternate(ours, theirs, repeats, rounds)
    report.torch_ms[what] = ms_torch
    if check is not None:
        check(what, ours.last_loss, theirs.last_loss)
    report.row([*cells, f"{ms_ours:.4g}", f"{ms_torch:.4g}", f"{ratio:.2f}",
                f"{low:.2f}-{high:.2f}"])  # fmt: skip
    report.target(what, ratio, limit)


def section_epoch(report, args, torch, names, dtypes, peaks) -> None:
    """Full-batch epochs, per epoch, the engine built once per workload (issue 10's table)."""
    report.table("Full batch, per epoch (engine built once, its setup apart)", [
        "workload", "dtype", "epochs/round", "tinycnn ms/epoch", "PyTorch ms/epoch",
        "ratio (median of rounds)", "ratio, lowest-highest round", "GFLOP/epoch", "floor ms",
        "tinycnn / floor", "tinycnn setup ms"])  # fmt: skip
    for name in names:
        w = WORKLOADS[name]
        epochs = max(1, round(w.epochs * args.epochs_scale))
        for dtype in dtypes:
            X, T = make_data(w, dtype)
            ours = Ours(w.spec(), X, T, dtype)
            floor = w.gflop() / peaks[dtype] * 1e3
            if torch is not None:
                theirs = Torch(torch, w.spec(), X, T, dtype)
                ms_ours, ms_torch, ratio, (low, high) = alternate(ours, theirs, epochs, args.rounds)
                report.torch_ms[f"per-epoch {name} {dtype}"] = ms_torch
                check_losses(f"{name} {dtype}", ours.last_loss, theirs.last_loss)
            else:
                ms_ours, ms_torch, ratio = time_alone(ours, epochs, args.rounds), None, None
                low = high = None
            report.row([name, dtype, str(epochs), f"{ms_ours:.4g}", fmt(ms_torch, ".4g"),
                        fmt(ratio, ".2f"), f"{fmt(low, '.2f')}-{fmt(high, '.2f')}",
                        f"{w.gflop():.3g}", f"{floor:.3g}", f"{ms_ours / floor:.1f}x",
                        f"{ours.setup_ms:.3g}"])  # fmt: skip
            report.target(f"per-epoch {name} {dtype}", ratio, TARGET_RATIO)


def section_calls(report, args, torch, names, dtypes) -> None:
    """``train_cnn`` as one whole call, setup included."""
    report.table("Full batch, `train_cnn` as one call (setup included)", [
        "workload", "dtype", "epochs", "tinycnn ms/call", "PyTorch ms/call",
        "ratio (median of rounds)", "ratio, lowest-highest round"])  # fmt: skip
    for name in names:
        w = WORKLOADS[name]
        counts = [w.epochs] if name in ("S", "M") else [2, 20]
        for epochs in sorted({max(1, round(e * args.epochs_scale)) for e in counts}):
            for dtype in dtypes:
                X, T = make_data(w, dtype)
                ours = paths.TrainCnnCall(w, X, T, dtype)
                theirs = paths.TorchFullBatchCall(torch, w, X, T, dtype)
                compare(report, [name, dtype, str(epochs)], CallOf(ours, epochs),
                        CallOf(theirs, epochs), 1, call_rounds(args),
                        f"train_cnn {name} {dtype} {epochs} epochs", TARGET_RATIO)  # fmt: skip


class CallOf:
    """``runner.run(count)`` as one call, so that ``alternate`` times whole calls."""

    def __init__(self, runner, count: int) -> None:
        self.runner, self.count = runner, count

    def run(self, calls: int) -> None:
        for _ in range(calls):
            self.runner.run(self.count)

    @property
    def last_loss(self):
        return self.runner.last_loss


FIT_TARGETS = {"one": TARGET_RATIO, "lenet": TARGET_RATIO, "cifar": 1.0}


def section_fit(report, args, torch, dtypes) -> dict:
    """``CNNClassifier.fit`` on mini-batches as one whole call; returns the fitted estimators
    (for the inference section)."""
    epochs = paths.EPOCHS_PER_FIT
    report.table(f"Mini-batches of {paths.MINI_BATCH}, Adam: `CNNClassifier.fit` as one call "
                 f"({epochs} epochs)", [
        "stack", "samples", "dtype", "tinycnn ms/fit", "PyTorch ms/fit",
        "ratio (median of rounds)", "ratio, lowest-highest round"])  # fmt: skip
    fitted = {}
    for name in paths.STACKS:
        for dtype in dtypes:
            net, X, labels = paths.stack_data(name, dtype, args.mini_scale)
            ours = paths.EstimatorFit(net, X, labels, dtype)
            theirs = paths.TorchMiniBatchFit(torch, net, X, labels, dtype)
            compare(report, [name, str(X.shape[0]), dtype], CallOf(ours, epochs),
                    CallOf(theirs, epochs), 1, call_rounds(args),
                    f"fit {name} {dtype}", FIT_TARGETS[name])  # fmt: skip
            fitted[(name, dtype)] = ours.est
    return fitted


def section_predict(report, args, torch, dtypes, fitted) -> None:
    n = max(1, round(paths.INFERENCE_SAMPLES * args.mini_scale))
    report.table(f"Inference: `predict` on {n} images as one call", [
        "stack", "dtype", "tinycnn ms/call", "PyTorch ms/call", "ratio (median of rounds)",
        "ratio, lowest-highest round"])  # fmt: skip
    for name in paths.STACKS:
        for dtype in dtypes:
            _, X, _ = paths.stack_data(name, dtype, n=n)
            est = fitted[(name, dtype)]
            ours, theirs = paths.EstimatorPredict(est, X), paths.TorchPredict(torch, est, X)

            def same_labels(what, _a, _b, ours=ours, theirs=theirs):
                if (ours.last != theirs.last).mean() > 0.001:
                    print(f"warning: {what} predictions differ", file=sys.stderr)

            ours.last_loss = theirs.last_loss = None
            compare(report, [name, dtype], ours, theirs, 1, call_rounds(args),
                    f"predict {name} {dtype}", TARGET_RATIO, check=same_labels)  # fmt: skip


def section_layers(report, args, names, peaks) -> None:
    """Where an epoch goes, per layer, in one process, float32: the mini-batch stacks and the
    full-batch workloads among ``names`` other than S (too small to split). Each layer's time
    inside matrix products is a column of its own; under each table, the products' sum against
    the epoch the target asks for, from PyTorch's time earlier in this run (when it ran)."""
    dtype = "float32"
    jobs = []
    for name in paths.STACKS:
        net, X, labels = paths.stack_data(name, dtype, args.mini_scale)
        jobs.append((f"{name} (fit path, batches of {paths.MINI_BATCH})", net, X,
                     np.eye(10, dtype=dtype)[labels], paths.MINI_BATCH,
                     Adam(paths.MINI_LR), "softmax_cross_entropy", f"fit {name} {dtype}",
                     FIT_TARGETS[name], paths.EPOCHS_PER_FIT))  # fmt: skip
    for name in [n for n in names if n != "S"]:
        w = WORKLOADS[name]
        X, T = make_data(w, dtype)
        jobs.append((f"{name} (full batch)", w.spec().sequential(), X, T, None, SGD(LR), "mse",
                     f"per-epoch {name} {dtype}", TARGET_RATIO, 1))  # fmt: skip
    for title, net, X, T, batch, optimizer, loss, row, limit, per in jobs:
        costs, update, whole = paths.profile_epoch(net, X, T, dtype, batch, optimizer, loss)
        report.table(f"Where an epoch of {title} goes, {dtype}, one process: {whole:.4g} ms", [
            "layer", "forward ms", "backward ms", "of them in products ms", "share of the epoch",
            "GFLOP", "floor ms", "ms / floor"])  # fmt: skip
        for c in costs:
            spent = c.forward_ms + c.backward_ms
            floor = c.gflop / peaks[dtype] * 1e3
            report.row([f"`{c.name}`", f"{c.forward_ms:.3g}", f"{c.backward_ms:.3g}",
                        f"{c.product_ms:.3g}" if c.gflop else "", f"{spent / whole:.0%}",
                        f"{c.gflop:.3g}", f"{floor:.3g}",
                        f"{spent / floor:.1f}x" if floor else "-"])  # fmt: skip
        rest = whole - update - sum(c.forward_ms + c.backward_ms for c in costs)
        report.row(["update (optimizer step)", "", f"{update:.3g}", "", f"{update / whole:.0%}",
                    "", "", ""])  # fmt: skip
        report.row(["the rest (loss, batches, engine)", "", f"{rest:.3g}", "",
                    f"{rest / whole:.0%}", "", "", ""])  # fmt: skip
        products = sum(c.product_ms for c in costs)
        line = (f"- matrix products: {products:.4g} ms of the epoch's {whole:.4g} "
                f"({products / whole:.0%})")  # fmt: skip
        torch_ms = report.torch_ms.get(row)
        if torch_ms is not None:
            goal = limit * torch_ms / per
            line += (f"; PyTorch's epoch in this run: {torch_ms / per:.4g} ms"
                     f"{' (its whole fit, per epoch)' if per > 1 else ''}, so the target "
                     f"(ratio <= {limit:g}) asks for <= {goal:.4g} ms: the products alone take "
                     f"{products / goal:.2f}x that")  # fmt: skip
            if batch is None:
                line += " in one process (the epoch above shares its chunks over the CPUs)"
        report.add("", line)


# A round of the plain-loop comparison runs this many times more epochs of tinycnn than of the
# loops. Two epochs of ours (about 3 ms) measured mostly how slow this machine makes the first
# call after seconds of other work: right after the loops, or after a 2.4 s sleep, a 2-epoch
# call took 2-10 ms per epoch, the next call 0.8-1.3 ms (the same with the code of 7e77412,
# which the run of that commit had timed at 1.34 ms; no page faults in either). Two calls of 50
# epochs are timed as the per-epoch table times M, with the loops' round still 2 epochs.
LOOPS_OURS_FACTOR = 50


def section_loops(report, args) -> None:
    w = WORKLOADS["M"]
    X, T = make_data(w, "float64")
    spec1 = w.spec(n_filters=1)
    # Per round, 2 epochs of the plain loops (2.4 s) and 2 calls of LOOPS_OURS_FACTOR epochs of
    # tinycnn's: the ratio is of per-epoch times.
    ours = CallOf(Ours(spec1, X, T, "float64"), LOOPS_OURS_FACTOR)
    ms_ours, ms_loops, ratio, _ = alternate(ours, PlainLoops(spec1, X, T), 2, call_rounds(args))
    ms_ours, ratio = ms_ours / LOOPS_OURS_FACTOR, ratio / LOOPS_OURS_FACTOR
    speedup = 1.0 / ratio
    report.add(
        "",
        f"- M with one 3x3 filter, float64: plain loops (tinycnn.naive.train_cnn) "
        f"{ms_loops:.4g} ms/epoch, tinycnn {ms_ours:.4g} ms/epoch: **{speedup:.0f}x "
        f"faster** (median of per-round ratios; target >= {TARGET_LOOP_SPEEDUP:.0f}x)",
    )
    if speedup < TARGET_LOOP_SPEEDUP:
        report.misses.append(f"plain-loop speedup {speedup:.0f}x < {TARGET_LOOP_SPEEDUP:.0f}x")


def section_memory(report, torch) -> None:
    for workload, how in (("L", "2 full-batch epochs"), ("lenet", "one epoch of its fit")):
        ours = memory_growth("ours", workload, "float32")
        theirs = memory_growth("torch", workload, "float32") if torch is not None else None
        mib_ours, mib_torch = ours["mib"], theirs["mib"] if theirs else None
        ratio = mib_ours / mib_torch if mib_torch else None
        report.add(f"- Peak memory growth training {workload} in float32 ({how}, fresh process "
                   f"each; helper processes' private memory included): tinycnn {mib_ours:.0f} "
                   f"MiB ({ours['helpers_mib']:.0f} of them in its helpers), PyTorch "
                   f"{fmt(mib_torch, '.0f')} MiB: ratio **{fmt(ratio, '.2f')}** "
                   f"(target <= {TARGET_MEMORY_RATIO})")  # fmt: skip
        report.target(f"memory {workload}", ratio, TARGET_MEMORY_RATIO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="S,M,C,L", help="comma-separated, e.g. S,M")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per comparison")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {','.join(SECTIONS)}")  # fmt: skip
    parser.add_argument(
        "--epochs-scale", type=float, default=1.0, help="scale the epochs per round (e.g. 0.2)"
    )
    parser.add_argument(
        "--mini-scale", type=float, default=1.0,
        help="scale the mini-batch stacks' samples and the inference images (e.g. 0.05)",
    )  # fmt: skip
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="'-' to write nothing")
    parser.add_argument("--memory-child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--memory-workload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    for n in names:
        if n not in WORKLOADS:
            parser.error(f"unknown workload {n!r}; choose from {', '.join(WORKLOADS)}")
    for d in dtypes:
        if d not in DTYPES:
            parser.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    for x in sections:
        if x not in SECTIONS:
            parser.error(f"unknown section {x!r}; choose from {', '.join(SECTIONS)}")
    if args.memory_child:
        memory_child(args.memory_child, args.memory_workload, dtypes[0])
        return 0

    torch = import_torch()
    started = time.perf_counter()
    load_before = os.getloadavg()
    peaks = {d: paths.measure_peak_gflops(d) for d in DTYPES}
    report = Report()
    report.add(f"- measured matrix-product peak (square products of 1024, 2 threads): "
               f"{peaks['float32']:.0f} GFLOP/s float32, {peaks['float64']:.0f} float64 "
               "(the floors below use these)")  # fmt: skip
    if "epoch" in sections:
        section_epoch(report, args, torch, names, dtypes, peaks)
    if torch is not None:
        if "calls" in sections:
            section_calls(report, args, torch, names, dtypes)
        fitted = {}
        if {"fit", "predict"} & set(sections):
            fitted = section_fit(report, args, torch, dtypes)
        if "predict" in sections:
            section_predict(report, args, torch, dtypes, fitted)
    if "layers" in sections:
        section_layers(report, args, names, peaks)
    if "loops" in sections:
        section_loops(report, args)
    if "memory" in sections:
        section_memory(report, torch)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(f"targets missed: {'; '.join(report.misses) if report.misses else 'none'}")
    print(f"{elapsed:.0f} s; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    if args.out != "-":
        write_results(Path(args.out), report, torch, args, elapsed,
                      (load_before[0], load_after[0]))  # fmt: skip
    return 0


BEGIN, END = "<!-- bench.py: generated below -->", "<!-- bench.py: generated above -->"


def write_results(path, report: Report, torch, args, elapsed, loads) -> None:
    """Write the generated section of ``path``, keeping any hand-written text around it."""
    misses = report.misses
    generated = [
        BEGIN,
        "## Latest run",
        "",
        *machine_description(torch),
        f"- command: `{' '.join(['python bench/bench.py', *sys.argv[1:]])}`",
        f"- {args.rounds} timed rounds per per-epoch comparison, {call_rounds(args)} per "
        f"whole-call comparison, each after a warm-up round; took {elapsed:.0f} s; load average "
        f"{loads[0]:.2f} before, {loads[1]:.2f} after",
        *report.lines,
        "",
        f"- targets missed: {'; '.join(misses) if misses else 'none'}",
        "",
        END,
    ]
    before, after = "# Benchmark results\n\n", ""
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            before = text[: text.index(BEGIN)]
            after = text[text.index(END) + len(END) :]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(before + "\n".join(generated) + after)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
