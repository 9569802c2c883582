"""tinycnn against PyTorch's CPU path and against plain loops: one table, written to RESULTS.md.

Run ``make bench`` (or ``python bench/bench.py --help``). What is measured, and how (see
``../shared/BENCHMARKS.md``):

* For each workload (S, M, C, L) and dtype (float64, float32): one full-batch gradient-descent
  epoch of conv -> ReLU -> flatten -> dense with MSE and lr 0.01, by ``tinycnn.training.train``
  (the code path ``train_cnn`` takes) and by the same model in PyTorch (``nn.Conv2d``,
  ``nn.Linear``, ``mse_loss``, ``optim.SGD``, 2 threads). Both run alternately in one process,
  each round training a fresh copy of the same initial weights for a fixed number of epochs
  (ours includes building its engine and a first call that unfolds X); after a warm-up round, the
  quoted ratio is the median of the per-round ratios, so load from other processes on the
  machine cancels out as far as it can.
* Mini-batches: one epoch of Adam (lr 1e-3) on batches of 64 in a shuffled order, softmax
  cross-entropy, through ``tinycnn.training.train`` (the path the estimators take) and through
  the same ``torch.nn.Sequential`` with ``torch.optim.Adam`` on the same batches, for the stacks
  ``one`` (4000x1x28x28, conv16 k5 pad 2 -> ReLU -> dense 10) and ``lenet`` (LeNet-5), both
  dtypes, alternately, median of per-round ratios.
* M with one filter, float64, against ``tinycnn.naive.train_cnn`` (the seed's algorithm as plain
  loops), alternately too.
* Peak memory growth while training L in float32: the resident-set high-water mark above the
  level reached after imports and data creation, each library in a fresh subprocess.
* The compute floor: the epoch's floating-point operations at the machine's measured matrix
  product peak (235 GFLOP/s in float32, 120 in float64).

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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tinycnn
from tinycnn import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, Sequential, naive
from tinycnn.network import ConvNetSpec, init_params_seed
from tinycnn.optim import SGD, Adam
from tinycnn.training import make_engine, train

HERE = Path(__file__).resolve().parent
PEAK_GFLOPS = {"float32": 235.0, "float64": 120.0}
LR = 0.01
TORCH_THREADS = 2
# Targets of issue 3.
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


# Mini-batch stacks: (samples, input shape, layers); batches of 64, Adam at 1e-3.
MINI_BATCH, MINI_LR = 64, 1e-3
MINI_STACKS = {
    "one": (4000, (1, 28, 28), [Conv2d(16, 5, pad=2), ReLU(), Flatten(), Dense(10)]),
    "lenet": (
        4000,
        (1, 28, 28),
        [
            Conv2d(6, 5, pad=2),
            ReLU(),
            MaxPool2d(2),
            Conv2d(16, 5),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Dense(120),
            ReLU(),
            Dense(84),
            ReLU(),
            Dense(10),
        ],
    ),  # fmt: skip
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


def mini_data(name: str, dtype, scale: float = 1.0) -> tuple[Sequential, np.ndarray, np.ndarray]:
    """The stack, images uniform in [0, 1) and one-hot targets of 10 classes, seed 0;
    ``scale`` times the stack's number of samples."""
    n, shape, layers = MINI_STACKS[name]
    n = max(MINI_BATCH + 1, round(n * scale))
    rng = np.random.default_rng(0)
    X = rng.random((n, *shape), dtype=np.float32).astype(dtype)
    T = np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]
    return Sequential(layers, shape), X, T


class MiniOurs:
    """Mini-batch epochs of ``net`` through ``training.train`` (the estimators' path), from the
    same initial weights every round; the engine is built inside the timed call."""

    def __init__(self, net: Sequential, X, T, dtype):
        self.net, self.X, self.T = net, X, T
        self.init = net.init_params(0, dtype)
        self.last_loss = float("nan")

    def run(self, epochs: int) -> None:
        params = [p.copy() for p in self.init]
        history = train(
            self.net, params, self.X, self.T, Adam(MINI_LR), epochs,
            loss="softmax_cross_entropy", batch_size=MINI_BATCH, rng=np.random.default_rng(0),
        )  # fmt: skip
        self.last_loss = history.loss_curve[-1]


class MiniTorch:
    """The same stack as a ``torch.nn.Sequential``, on the same batches in the same order."""

    def __init__(self, torch, net: Sequential, X, T, dtype):
        self.torch = torch
        tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
        init = net.init_params(0, dtype)
        modules, self.params, i = [], [], 0
        for layer, shape in zip(net.layers, net.shapes):
            if isinstance(layer, Conv2d):
                m = torch.nn.Conv2d(shape[0], layer.filters, layer.kernel_size, layer.stride,
                                    layer.pad).to(tdtype)  # fmt: skip
                values = (init[i], init[i + 1])
            elif isinstance(layer, Dense):
                m = torch.nn.Linear(shape[0], layer.units).to(tdtype)
                values = (init[i].T.copy(), init[i + 1])
            else:
                kind = {ReLU: "ReLU", MaxPool2d: "MaxPool2d", AvgPool2d: "AvgPool2d"}
                name = kind.get(type(layer), "Flatten")
                args = () if name in ("ReLU", "Flatten") else (layer.size, layer.stride)
                modules.append(getattr(torch.nn, name)(*args))
                continue
            self.params += [(m.weight, torch.from_numpy(values[0].copy())),
                            (m.bias, torch.from_numpy(values[1].copy()))]  # fmt: skip
            modules.append(m)
            i += 2
        self.module = torch.nn.Sequential(*modules)
        self.X, self.T = torch.from_numpy(X), torch.from_numpy(T)
        self.last_loss = float("nan")

    def run(self, epochs: int) -> None:
        torch = self.torch
        with torch.no_grad():
            for p, v in self.params:
                p.copy_(v)
        opt = torch.optim.Adam([p for p, _ in self.params], lr=MINI_LR)
        rng, N = np.random.default_rng(0), self.X.shape[0]
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(N))
            total = 0.0
            for start in range(0, N, MINI_BATCH):
                idx = order[start : start + MINI_BATCH]
                opt.zero_grad()
                out = self.module(self.X[idx])
                loss = -(self.T[idx] * torch.log_softmax(out, dim=1)).sum() / len(idx)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.last_loss = total / N


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


def memory_child(library: str, workload: str, dtype: str) -> None:
    """Print the peak RSS growth (MiB) of training ``workload`` for 2 epochs with
    ``library``, above the RSS after imports and data creation. Runs in its own process."""
    w = WORKLOADS[workload]
    torch = import_torch() if library == "torch" else None
    if library == "torch" and torch is None:
        print(json.dumps({"mib": None}))
        return
    X, T = make_data(w, dtype)
    spec = w.spec()

    def train_two_epochs():  # the model and the engine are part of what is measured
        runner = Torch(torch, spec, X, T, dtype) if torch else Ours(spec, X, T, dtype)
        runner.run(2)

    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        baseline = _rss_kib("VmRSS")
        train_two_epochs()
        peak = _rss_kib("VmHWM")
    except OSError:  # no clear_refs: the high-water mark so far is the baseline
        import resource

        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        train_two_epochs()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mib": (peak - baseline) / 1024}))


def memory_growth(library: str, workload: str, dtype: str) -> float | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", library]
    cmd += ["--workloads", workload, "--dtypes", dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["mib"]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="S,M,C,L", help="comma-separated, e.g. S,M")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per comparison")
    parser.add_argument(
        "--epochs-scale", type=float, default=1.0, help="scale the epochs per round (e.g. 0.2)"
    )
    parser.add_argument("--no-loops", action="store_true", help="skip the plain-loop timing")
    parser.add_argument("--no-minibatch", action="store_true", help="skip the mini-batch stacks")
    parser.add_argument(
        "--mini-scale", type=float, default=1.0, help="scale the mini-batch samples (e.g. 0.05)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="'-' to write nothing")
    parser.add_argument("--memory-child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for n in names:
        if n not in WORKLOADS:
            parser.error(f"unknown workload {n!r}; choose from {', '.join(WORKLOADS)}")
    for d in dtypes:
        if d not in PEAK_GFLOPS:
            parser.error(f"unknown dtype {d!r}; choose from {', '.join(PEAK_GFLOPS)}")
    if args.memory_child:
        memory_child(args.memory_child, names[0], dtypes[0])
        return 0

    torch = import_torch()
    started = time.perf_counter()
    load_before = os.getloadavg()
    header = (
        "| workload | dtype | epochs/round | tinycnn ms/epoch | PyTorch ms/epoch | ratio "
        "(median of rounds) | ratio, lowest-highest round | GFLOP/epoch | floor ms | "
        "tinycnn / floor | tinycnn setup ms |"
    )
    rows = [header, "|" + "---|" * 11]
    misses, above_floor = [], []
    print(header, flush=True)
    for name in names:
        w = WORKLOADS[name]
        epochs = max(1, round(w.epochs * args.epochs_scale))
        for dtype in dtypes:
            X, T = make_data(w, dtype)
            ours = Ours(w.spec(), X, T, dtype)
            if torch is not None:
                theirs = Torch(torch, w.spec(), X, T, dtype)
                ms_ours, ms_torch, ratio, (low, high) = alternate(ours, theirs, epochs, args.rounds)
                if abs(ours.last_loss - theirs.last_loss) > 1e-3 * abs(theirs.last_loss):
                    print(
                        f"warning: {name} {dtype} losses differ: ours {ours.last_loss}, "
                        f"torch {theirs.last_loss}",
                        file=sys.stderr,
                    )
            else:
                ms_ours, ms_torch, ratio = time_alone(ours, epochs, args.rounds), None, None
                low = high = None
            floor = w.gflop() / PEAK_GFLOPS[dtype] * 1e3
            row = (
                f"| {name} | {dtype} | {epochs} | {ms_ours:.4g} | {fmt(ms_torch, '.4g')} | "
                f"{fmt(ratio, '.2f')} | {fmt(low, '.2f')}-{fmt(high, '.2f')} | "
                f"{w.gflop():.3g} | {floor:.3g} | {ms_ours / floor:.1f}x | {ours.setup_ms:.3g} |"
            )
            rows.append(row)
            print(row, flush=True)
            if ratio is not None and ratio > TARGET_RATIO:
                misses.append(f"{name} {dtype}: ratio {ratio:.2f} > {TARGET_RATIO}")
            if ms_ours > FLOOR_FACTOR_TO_EXPLAIN * floor:
                above_floor.append(f"{name} {dtype} ({ms_ours / floor:.1f}x)")

    extra = []
    if not args.no_minibatch and torch is not None:
        mini_header = (
            "| mini-batch stack | dtype | tinycnn ms/epoch | PyTorch ms/epoch | ratio (median of "
            "rounds) | ratio, lowest-highest round |"
        )
        mini_rows = ["", mini_header, "|" + "---|" * 6]
        print(mini_header, flush=True)
        for name in MINI_STACKS:
            for dtype in dtypes:
                net, X, T = mini_data(name, dtype, args.mini_scale)
                ours, theirs = MiniOurs(net, X, T, dtype), MiniTorch(torch, net, X, T, dtype)
                ms_ours, ms_torch, ratio, (low, high) = alternate(
                    ours, theirs, 1, max(3, args.rounds // 2)
                )
                if abs(ours.last_loss - theirs.last_loss) > 1e-3 * abs(theirs.last_loss):
                    print(f"warning: {name} {dtype} losses differ: ours {ours.last_loss}, "
                          f"torch {theirs.last_loss}", file=sys.stderr)  # fmt: skip
                row = (f"| {name} | {dtype} | {ms_ours:.4g} | {ms_torch:.4g} | {ratio:.2f} | "
                       f"{low:.2f}-{high:.2f} |")  # fmt: skip
                mini_rows.append(row)
                print(row, flush=True)
        rows += mini_rows
    if not args.no_loops:
        w = WORKLOADS["M"]
        X, T = make_data(w, "float64")
        spec1 = w.spec(n_filters=1)
        ms_ours, ms_loops, ratio, _ = alternate(
            Ours(spec1, X, T, "float64"), PlainLoops(spec1, X, T), 2, max(3, args.rounds // 2)
        )
        speedup = 1.0 / ratio
        line = (
            f"M with one 3x3 filter, float64: plain loops (tinycnn.naive.train_cnn) "
            f"{ms_loops:.4g} ms/epoch, tinycnn {ms_ours:.4g} ms/epoch: **{speedup:.0f}x faster** "
            f"(median of per-round ratios; target >= {TARGET_LOOP_SPEEDUP:.0f}x)"
        )
        extra.append(line)
        print(line, flush=True)
        if speedup < TARGET_LOOP_SPEEDUP:
            misses.append(f"plain-loop speedup {speedup:.0f}x < {TARGET_LOOP_SPEEDUP:.0f}x")
    if not args.no_memory:
        mib_ours = memory_growth("ours", "L", "float32")
        mib_torch = memory_growth("torch", "L", "float32") if torch is not None else None
        mratio = mib_ours / mib_torch if mib_torch else None
        line = (
            f"Peak memory growth training L in float32 (2 epochs, fresh process each): tinycnn "
            f"{mib_ours:.0f} MiB, PyTorch {fmt(mib_torch, '.0f')} MiB: ratio "
            f"**{fmt(mratio, '.2f')}** (target <= {TARGET_MEMORY_RATIO})"
        )
        extra.append(line)
        print(line, flush=True)
        if mratio is not None and mratio > TARGET_MEMORY_RATIO:
            misses.append(f"memory ratio {mratio:.2f} > {TARGET_MEMORY_RATIO}")

    if above_floor:
        extra.append(
            f"above {FLOOR_FACTOR_TO_EXPLAIN:g}x the compute floor (the hand-written section names "
            f"the next bottleneck): {', '.join(above_floor)}"
        )
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(f"targets missed: {'; '.join(misses) if misses else 'none'}")
    print(f"{elapsed:.0f} s; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    if args.out != "-":
        write_results(
            Path(args.out),
            rows,
            extra,
            misses,
            torch,
            args,
            elapsed,
            (load_before[0], load_after[0]),
        )
    return 0


BEGIN, END = "<!-- bench.py: generated below -->", "<!-- bench.py: generated above -->"


def write_results(path, rows, extra, misses, torch, args, elapsed, loads) -> None:
    """Write the generated section of ``path``, keeping any hand-written text around it."""
    generated = [
        BEGIN,
        "## Latest run",
        "",
        *machine_description(torch),
        f"- command: `{' '.join(['python bench/bench.py', *sys.argv[1:]])}`",
        f"- {args.rounds} timed rounds per comparison after a warm-up round; took {elapsed:.0f} s;"
        f" load average {loads[0]:.2f} before, {loads[1]:.2f} after",
        "",
        *rows,
        "",
        *(f"- {line}" for line in extra),
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
