"""The paths users take, each timed as a whole call, against the same work in PyTorch.

* ``train_cnn`` (full batch, MSE, lr 0.01) as one call, setup included: S and M at their
  epochs per round, C and L at 2 and at 20 epochs. PyTorch's side builds the same model, copies
  the same initial weights in and runs the same epochs.
* ``CNNClassifier.fit`` on mini-batches of 64 with Adam (lr 1e-3, no L2, shuffled), one call of
  ``EPOCHS_PER_FIT`` epochs, for the stacks ``one``, ``lenet`` and ``cifar``; PyTorch's side is
  the loop a user writes: standardise the channels, build the ``nn.Sequential``, copy the same
  initial weights in, and run Adam on the same batches in the same order (so the losses agree).
* ``predict`` on ``INFERENCE_SAMPLES`` images of each stack against the module's argmax under
  ``torch.no_grad()``, standardisation included on both sides.
* Where an epoch goes, per layer (forward, backward) and in the update, in one process, with
  each layer's FLOPs and its floor at the machine's measured matrix-product peak.

Ours and PyTorch's alternate in one process after a warm-up call each; the ratio is the median
of the per-round ratios (see ``bench.alternate``).
"""

from __future__ import annotations

import collections
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

import tinycnn
from tinycnn import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, Sequential

MINI_BATCH, MINI_LR = 64, 1e-3
EPOCHS_PER_FIT = 2
INFERENCE_SAMPLES = 10000
SEED = 0

# name -> (samples, input shape, the whole stack: hidden layers and the output Dense(10))
STACKS: dict[str, tuple[int, tuple[int, int, int], list[Any]]] = {
    "one": (4000, (1, 28, 28), [Conv2d(16, 5, pad=2), ReLU(), Flatten(), Dense(10)]),
    "lenet": (4000, (1, 28, 28), [
        Conv2d(6, 5, pad=2), ReLU(), MaxPool2d(2), Conv2d(16, 5), ReLU(), MaxPool2d(2),
        Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10),
    ]),
    "cifar": (2000, (3, 32, 32), [
        Conv2d(32, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(64, 3, pad=1), ReLU(), MaxPool2d(2),
        Flatten(), Dense(128), ReLU(), Dense(10),
    ]),
}  # fmt: skip


def measure_peak_gflops(dtype: str, size: int = 1024, repeats: int = 5) -> float:
    """The best of ``repeats`` square matrix products of ``size``: this run's compute peak."""
    a = np.random.default_rng(0).random((size, size)).astype(dtype)
    out = np.empty_like(a)
    np.matmul(a, a, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, a, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ---------------------------------------------------------------- data and the torch module


def stack_data(name: str, dtype, scale: float = 1.0, n: int | None = None):
    """``(net, X, labels)``: the stack, images uniform in [0, 1) and labels 0-9, seed 0;
    ``scale`` times the stack's samples (or ``n`` samples)."""
    samples, shape, layers = STACKS[name]
    if n is None:
        n = max(MINI_BATCH + 1, round(samples * scale))
    rng = np.random.default_rng(SEED)
    X = rng.random((n, *shape), dtype=np.float32).astype(dtype)
    return Sequential(layers, shape), X, rng.integers(0, 10, n)


def estimator_init(net: Sequential, dtype) -> list[np.ndarray]:
    """The weights ``CNNClassifier(random_state=SEED)`` starts from: its initialisation stream
    (the first of three spawned from the seed) through ``Sequential.init_params``."""
    init_stream = np.random.default_rng(np.random.SeedSequence(SEED).spawn(3)[0])
    return net.init_params(init_stream, dtype)


def estimator_shuffles() -> np.random.Generator:
    """The estimator's shuffling stream (the third spawned from the seed)."""
    return np.random.default_rng(np.random.SeedSequence(SEED).spawn(3)[2])


def torch_module(torch, net: Sequential, params, dtype):
    """``net`` as a ``torch.nn.Sequential`` holding copies of ``params``."""
    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    modules, arrays = [], iter(params)
    for layer, shape in zip(net.layers, net.shapes):
        if isinstance(layer, Conv2d):
            m = torch.nn.Conv2d(shape[0], layer.filters, layer.kernel_size, layer.stride,
                                layer.pad)  # fmt: skip
            weight, bias = next(arrays), next(arrays)
        elif isinstance(layer, Dense):
            m = torch.nn.Linear(shape[0], layer.units)
            weight, bias = next(arrays).T, next(arrays)
        elif isinstance(layer, (MaxPool2d, AvgPool2d)):
            kind = torch.nn.MaxPool2d if isinstance(layer, MaxPool2d) else torch.nn.AvgPool2d
            modules.append(kind(layer.size, layer.stride))
            continue
        else:
            modules.append(torch.nn.ReLU() if isinstance(layer, ReLU) else torch.nn.Flatten())
            continue
        m = m.to(tdtype)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            m.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
        modules.append(m)
    return torch.nn.Sequential(*modules)


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


# ---------------------------------------------------------------- full batch, whole calls


class TrainCnnCall:
    """``tinycnn.train_cnn(X, T, epochs, 0.01, n_filters, kernel_size, dtype)``: one call."""

    def __init__(self, workload, X, T, dtype):
        self.w, self.X, self.T, self.dtype = workload, X, T, dtype
        self.last_loss = float("nan")

    def run(self, epochs: int) -> None:
        np.random.seed(0)
        *_, loss = tinycnn.train_cnn(self.X, self.T, epochs, 0.01, n_filters=self.w.n_filters,
                                     kernel_size=self.w.kernel_size, dtype=self.dtype)  # fmt: skip
        self.last_loss = loss


class TorchFullBatchCall:
    """The same as one PyTorch call: tensors from the arrays, the model built with the seed's
    initial weights copied in, ``epochs`` steps of SGD on the MSE."""

    def __init__(self, torch, workload, X, T, dtype):
        self.torch, self.w, self.X, self.T, self.dtype = torch, workload, X, T, dtype
        np.random.seed(0)
        spec = workload.spec()
        from tinycnn.network import init_params_seed

        self.init = init_params_seed(spec, dtype)
        self.net = spec.sequential()
        self.last_loss = float("nan")

    def run(self, epochs: int) -> None:
        torch = self.torch
        module = torch_module(torch, self.net, self.init, self.dtype)
        X, T = torch.from_numpy(self.X), torch.from_numpy(self.T)
        opt = torch.optim.SGD(module.parameters(), lr=0.01)
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(module(X), T)
            loss.backward()
            opt.step()
        self.last_loss = loss.item()


# ---------------------------------------------------------------- mini-batches, whole fits


class EstimatorFit:
    """``CNNClassifier(layers=<hidden stack>, ...).fit(X, labels)``: one whole call."""

    def __init__(self, net: Sequential, X, labels, dtype):
        self.net, self.X, self.labels, self.dtype = net, X, labels, dtype
        self.last_loss = float("nan")
        self.est = None

    def make(self, epochs: int):
        return tinycnn.CNNClassifier(
            layers=tuple(self.net.layers[:-1]), solver="adam", learning_rate_init=MINI_LR,
            batch_size=MINI_BATCH, max_iter=epochs, alpha=0.0, shuffle=True, tol=0.0,
            n_iter_no_change=epochs + 1, early_stopping=False, random_state=SEED,
            dtype=np.dtype(self.dtype).type, standardize=True,
        )  # fmt: skip

    def run(self, epochs: int) -> None:
        est = self.make(epochs)
        _quiet(lambda: est.fit(self.X, self.labels))
        self.last_loss, self.est = est.loss_curve_[-1], est


class TorchMiniBatchFit:
    """What a PyTorch user writes for the same fit: standardise per channel, build the module
    (the estimator's initial weights copied in), Adam over shuffled batches of 64."""

    def __init__(self, torch, net: Sequential, X, labels, dtype):
        self.torch, self.net, self.X, self.labels, self.dtype = torch, net, X, labels, dtype
        self.init = estimator_init(net, dtype)
        self.last_loss = float("nan")

    def run(self, epochs: int) -> None:
        torch = self.torch
        X = torch.from_numpy(self.X)
        mean = X.mean(dim=(0, 2, 3), keepdim=True)
        std = X.std(dim=(0, 2, 3), keepdim=True, correction=0)
        X = (X - mean) / std
        y = torch.from_numpy(self.labels)
        module = torch_module(torch, self.net, self.init, self.dtype)
        opt = torch.optim.Adam(module.parameters(), lr=MINI_LR)
        shuffles, N = estimator_shuffles(), X.shape[0]
        for _ in range(epochs):
            order = torch.from_numpy(shuffles.permutation(N))
            total = 0.0
            for start in range(0, N, MINI_BATCH):
                idx = order[start : start + MINI_BATCH]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(X[idx]), y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
        self.last_loss = total / N


# ---------------------------------------------------------------- inference


class EstimatorPredict:
    """``est.predict(X)`` of a fitted estimator: one whole call."""

    def __init__(self, est, X):
        self.est, self.X = est, X
        self.last = None

    def run(self, calls: int) -> None:
        for _ in range(calls):
            self.last = self.est.predict(self.X)


class TorchPredict:
    """The module's predictions under ``torch.no_grad()``: standardise, forward, argmax."""

    def __init__(self, torch, est, X):
        self.torch, self.X = torch, X
        self.module = torch_module(torch, est.network_, est.params_, X.dtype)
        self.mean = torch.from_numpy(est.input_mean_.astype(X.dtype)).reshape(1, -1, 1, 1)
        self.std = torch.from_numpy(est.input_std_.astype(X.dtype)).reshape(1, -1, 1, 1)
        self.last = None

    def run(self, calls: int) -> None:
        torch = self.torch
        for _ in range(calls):
            with torch.no_grad():
                X = (torch.from_numpy(self.X) - self.mean) / self.std
                self.last = self.module(X).argmax(dim=1).numpy()


# ---------------------------------------------------------------- where an epoch goes


@dataclass
class LayerCost:
    name: str
    forward_ms: float
    backward_ms: float
    gflop: float
    product_ms: float = 0.0  # of forward_ms + backward_ms, the time inside matrix products


def layer_flops(net: Sequential, n: int, first_dx: bool = False) -> list[float]:
    """GFLOP of one epoch over ``n`` samples per layer (multiply-adds count 2): a conv's or
    dense layer's forward product, its weight gradient, and its input gradient unless no
    earlier layer has parameters; elementwise layers count nothing."""
    out, seen_params = [], first_dx
    for layer, shape in zip(net.layers, net.shapes):
        if isinstance(layer, (Conv2d, Dense)):
            if isinstance(layer, Conv2d):
                C = shape[0]
                _, oh, ow = layer.output_shape(shape)
                one = 2 * n * oh * ow * C * layer.kernel_size**2 * layer.filters
            else:
                one = 2 * n * shape[0] * layer.units
            out.append((one * (3 if seen_params else 2)) / 1e9)
            seen_params = True
        else:
            out.append(0.0)
    return out


class _NumpyWith:
    """NumPy with some of its names replaced (``_NumpyWith(matmul=f).matmul is f``)."""

    def __init__(self, **replaced) -> None:
        self.__dict__.update(replaced)

    def __getattr__(self, name: str):
        return getattr(np, name)


def profile_epoch(net: Sequential, X, T, dtype, batch_size: int | None, optimizer, loss: str,
                  epochs: int = 1) -> tuple[list[LayerCost], float, float]:  # fmt: skip
    """``epochs`` epochs of ``training.train`` in this process alone, each layer's forward and
    backward and the optimizer's step timed: ``(per-layer costs, update ms, whole epoch ms)``,
    per epoch. A layer's ``product_ms`` is its time inside ``np.matmul`` (every matrix product
    of the engine's layers is one), timed by handing ``tinycnn.layers`` a stand-in for NumPy
    for the run."""
    from tinycnn import layers
    from tinycnn.engine import Engine
    from tinycnn.training import train

    spent: dict[tuple[int, str], float] = collections.defaultdict(float)
    in_products: dict[int, float] = collections.defaultdict(float)
    running: list[int] = [0]  # id of the runner whose forward or backward runs now

    def timed(owner, method: str) -> None:
        original = getattr(owner, method)

        def wrapper(*args, **kwargs):
            outer, running[0] = running[0], id(owner)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[(id(owner), method)] += time.perf_counter() - start
                running[0] = outer

        setattr(owner, method, wrapper)  # on the instance: only this run is timed

    def matmul(*args, **kwargs):
        start = time.perf_counter()
        try:
            return np.matmul(*args, **kwargs)
        finally:
            in_products[running[0]] += time.perf_counter() - start

    N = X.shape[0]
    full = batch_size is None or batch_size >= N
    engine = Engine(net, np.dtype(dtype), N if full else batch_size,
                    fixed_inputs=X if full else None, processes=1)  # fmt: skip
    for runner in engine.runners:
        timed(runner, "forward")
        timed(runner, "backward")
    timed(optimizer, "step")
    params = [p.copy() for p in net.init_params(0, dtype)]
    layers.np = _NumpyWith(matmul=matmul)
    try:
        start = time.perf_counter()
        train(net, params, X, T, optimizer, epochs, loss=loss, batch_size=batch_size,
              rng=np.random.default_rng(0), engine=engine)  # fmt: skip
        whole = (time.perf_counter() - start) * 1e3 / epochs
    finally:
        layers.np = np
        engine.close()
    costs = []
    flops = layer_flops(net, N)
    # In the engine's order (a ReLU before a max pool runs after it: engine.run_order).
    for runner in engine.runners:
        layer, gflop = net.layers[runner.index], flops[runner.index]
        costs.append(LayerCost(repr(layer), spent[(id(runner), "forward")] * 1e3 / epochs,
                               spent[(id(runner), "backward")] * 1e3 / epochs, gflop,
                               in_products[id(runner)] * 1e3 / epochs))  # fmt: skip
    return costs, spent[(id(optimizer), "step")] * 1e3 / epochs, whole
