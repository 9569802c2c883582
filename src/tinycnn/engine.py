"""The engine: runs any :class:`tinycnn.Sequential` stack, chunk by chunk, in buffers planned once.

``Sequential.forward``/``loss_and_grads`` and the training loop all go through an
:class:`Engine`; the layers' runners (``layers.py``) hold the math, calling the ops. What the
engine adds is what makes every stack fast, the same way for all of them:

* every intermediate lives in a buffer allocated once (per engine) and written with ``out=``
  arguments, so no step pays for page faults on fresh large arrays; a layer whose backward does
  not need its input writes its input's gradient over it, and ReLU works in place;
* the batch goes through in chunks of a size fixed by the shapes (never by timing, so results
  are reproducible): as many samples as fit :data:`CHUNK_ELEMENTS` numbers of buffers, so that a
  chunk's intermediates stay in cache between its forward and backward pass (at least
  :data:`MIN_CHUNK_SAMPLES`, unless that would exceed :data:`MAX_CHUNK_ELEMENTS`). A sample's
  loss gradient depends on that sample alone, so chunking changes only the order of sums;
* when ``X`` is fixed for the whole run (full-batch training), a first conv layer keeps the
  unfolded windows of as many chunks as fit :data:`CACHE_BYTES`, made during the first call;
* parameters are rearranged once per call into the layouts their products want (bias folded
  into a conv's kernel matrix, dense rows in the order of the incoming features);
* the chunks of a call are shared out to helper processes forked from this one
  (``_helper_process.py``), one per further CPU, for full batches and mini-batches alike: the
  prepared parameters, the inputs and targets of a mini-batch, and each share's gradients and
  loss live in memory both processes see. Python threads cannot do this: the GIL changes hands
  at each of the many short NumPy calls of a step. Cache-sized chunks have products OpenBLAS
  runs on one core; larger ones (the 64-sample floor) it would thread, so a call of those is
  shared only where every process can run its BLAS on one thread (``_blas.py``), and only in
  full-batch calls, forward passes and mini-batches of very large samples: other mini-batches
  of them stay in this process, BLAS on every core (as fast, measured, without the hand-over;
  see :func:`mini_batch_plan`).

Results equal the plain ops' up to the order of floating-point sums; with the same shapes and
process count, the same inputs give bit-identical results, whether or not a helper answered.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ._blas import can_limit_blas_threads, one_blas_thread, set_one_blas_thread
from ._helper_process import HelperProcess, SharedArena, available_cpus, can_fork_helpers
from .layers import Flatten, MaxPool2d, ReLU, _Runner, hwc_order
from .ops.losses import mse_loss, softmax_cross_entropy

if TYPE_CHECKING:  # model.py imports this module
    from .model import Sequential

# How many samples a chunk holds: as many as fit this many numbers of buffers...
CHUNK_ELEMENTS = 1 << 17
# ...but at least this many: a dense layer's products read all of its W once per chunk, which
# only pays off over enough rows...
MIN_CHUNK_SAMPLES = 64
# ...unless that many samples of very large images would take more than this many numbers:
# then as many as fit, and at least one.
MAX_CHUNK_ELEMENTS = 1 << 23

# Unfolded windows of a fixed X kept across calls: at most this many bytes (whole chunks, the
# first ones); the other chunks are unfolded again at every call. Kept windows are written
# into fresh memory during the first call, whose page faults cost more than unfolding them
# again each epoch into a chunk's buffer saves, unless the run is long: with 400 MiB, C
# float32's first call took 311 ms against 147 without keeping, for 74-88 ms epochs against
# 79-92; L's epochs were no faster at all. Digits-sized sets (M: 2.6 MB of windows in float32)
# still keep all of theirs: 1.0 ms epochs against 1.3, for 3 ms once.
CACHE_BYTES = 32 << 20

# A call of cache-sized chunks is shared out only if each process gets at least this many
# chunks (fewer are not worth the two pipe messages); a chunk grown to the 64-sample floor is
# milliseconds of work, and one per process is enough.
MIN_CHUNKS_PER_PROCESS = 4
# The most processes an engine uses; TINYCNN_PROCESSES lowers it (1: never fork a helper).
MAX_PROCESSES = 8
# Helpers are kept only if the calls they take part in take at most this fraction of a call
# without them (the fastest of three of each, on the 2nd to 7th calls). Who computes a share
# never changes the result: so this timing decides speed only, never the numbers.
HELPER_MIN_GAIN = 0.95

# (pred (m, O), target (m, O), n_total, out=None) -> (loss, dpred)
LossFn = Callable[..., tuple[float, np.ndarray]]
LOSSES: dict[str, LossFn] = {"mse": mse_loss, "softmax_cross_entropy": softmax_cross_entropy}


def chunk_size_for(per_sample: int) -> int:
    """Samples per chunk for a stack whose buffers take ``per_sample`` numbers per sample."""
    per_sample = max(1, per_sample)
    n = CHUNK_ELEMENTS // per_sample
    if n >= MIN_CHUNK_SAMPLES:
        return n
    return max(1, min(MIN_CHUNK_SAMPLES, MAX_CHUNK_ELEMENTS // per_sample))


def mini_batch_plan(
    batch: int, per_sample: int, chunk: int, limit: int, chunk_size: int | None = None
) -> tuple[int, int]:
    """``(processes, samples per chunk)`` for mini-batches of ``batch`` samples of a stack
    whose buffers take ``per_sample`` numbers a sample, in chunks of ``chunk`` samples past
    the cache size, on at most ``limit`` processes (``chunk_size``: the chunk asked for).

    Such batches stay in one process, BLAS threading their products over every core: shared,
    each process's BLAS on one thread, they measured slower or no faster (a batch of 200 28x28
    images through conv16k5: 8.9 ms alone, 12-13 shared; fits of the bench's ``one`` and
    ``lenet`` in chunks of 16 on two processes: 0.93-1.3x and 0.85-1.3x the time of one
    process, varying from run to run), and a fit saves forking and probing helpers. Only a
    batch of at least two chunks of :data:`MAX_CHUNK_ELEMENTS` numbers (``cifar``'s, 32x32x3
    images through two convs of 32 and 64 filters) is shared, over as many processes as it
    holds such chunks, in chunks of equal size, as many for each process: its hand-overs are
    few against the work (alternated fits in chunks of 16 on two processes took 0.90x the time
    of 30+30+4 in one in float32, 0.77-0.91x in float64). The plan depends on the shapes and
    ``limit`` only, never on timing."""
    processes = min(limit, batch * per_sample // MAX_CHUNK_ELEMENTS)
    if processes < 2 or chunk_size is not None:
        return 1, chunk
    n_chunks = -(-batch // chunk)
    n_chunks = -(-n_chunks // processes) * processes
    return processes, -(-batch // n_chunks)


def run_order(net: Sequential) -> list[int]:
    """The order in which the engine runs ``net``'s layers (indices into ``net.layers``): the
    stack's own, except that a ``ReLU`` right before a ``MaxPool2d`` runs after it.

    ``max`` commutes with ``max(., 0)``, so the outputs are the same numbers, and so are the
    gradients: the pooled gradient goes to the window's first maximum and is kept where that
    maximum is positive, either way (a window of numbers <= 0 or with a NaN maximum sends
    nothing back in both orders). Run after the pooling, the ReLU and its mask cover a quarter
    of the numbers (2x2 windows): cifar's two ReLUs measured 78 ms of a 1175 ms epoch before.
    """
    layers = net.layers
    order = list(range(len(layers)))
    for i in range(len(layers) - 1):
        if isinstance(layers[order[i]], ReLU) and isinstance(layers[order[i + 1]], MaxPool2d):
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def build_runners(net: Sequential, dtype: np.dtype) -> list[_Runner]:
    """One runner per layer, in :func:`run_order`, told whether it may write over its input
    (see ``layers.py``); ``runner.index`` is its layer's position in ``net.layers``."""
    runners: list[_Runner] = []
    protected, perm = True, None  # the network's input is the user's
    shape = net.input_shape
    for i, index in enumerate(run_order(net)):
        layer = net.layers[index]
        runner = layer.runner(shape, dtype, i == 0, protected)
        runner.index = index
        runner.in_perm = perm
        # An input gradient is wanted only if some earlier layer has parameters.
        runner.need_dx = any(r.n_params for r in runners)
        if isinstance(layer, ReLU) or (isinstance(layer, Flatten) and len(shape) == 1):
            runner.out_perm = perm  # elementwise or a no-op: the features keep their order
        perm = runner.out_perm
        # Flatten's output is a view of its input: it stays as protected as that input.
        if isinstance(layer, ReLU):
            protected = False  # in place on an unprotected input, or a buffer of its own
        elif not isinstance(layer, Flatten):
            protected = runner.needs_output
        runners.append(runner)
        shape = runner.out_shape
    return runners


class Engine:
    """Buffers and runners for ``net`` on up to ``max_samples`` samples of ``dtype`` per call.

    ``fixed_inputs`` ``(N, C, H, W)``, if given, is the one ``X`` of full-batch training: a
    first conv layer keeps its windows (as many whole chunks as fit ``cache_bytes``) from the
    first call on; it must not be modified while the engine is in use. ``chunk_size``
    overrides the samples per chunk (tests use it to put chunk boundaries anywhere).

    Calls with enough cache-sized chunks are shared between this process and helper
    processes forked from it (Linux only), ``processes`` in all: by default one per CPU this
    process may use, at most :data:`MAX_PROCESSES` or ``TINYCNN_PROCESSES``, and only as many
    as have :data:`MIN_CHUNKS_PER_PROCESS` chunks each. The split is a fixed function of the
    shapes and the process count. With ``fork_helpers=False`` this process computes every
    share itself, with the same numbers. :meth:`close` stops the helpers. An engine for
    forward passes only (``forward_only``) shares calls on any inputs it is handed, not only
    on ``fixed_inputs``: with no backward pass, sharing large chunks pays there too.
    """

    def __init__(
        self,
        net: Sequential,
        dtype: npt.DTypeLike,
        max_samples: int,
        *,
        fixed_inputs: np.ndarray | None = None,
        cache_bytes: int = CACHE_BYTES,
        chunk_size: int | None = None,
        processes: int | None = None,
        fork_helpers: bool = True,
        forward_only: bool = False,
    ) -> None:
        dt = np.dtype(dtype)
        self.net, self.dtype, self.max_samples = net, dt, int(max_samples)
        self.runners = build_runners(net, dt)
        per_sample = sum(r.per_sample() for r in self.runners) + 2 * math.prod(net.output_shape)
        n = chunk_size_for(per_sample) if chunk_size is None else int(chunk_size)
        n = max(1, min(n, self.max_samples))
        cache_sized = per_sample * n <= CHUNK_ELEMENTS
        # Products of larger chunks are threaded by BLAS: while a call of them is shared, every
        # process runs its BLAS on one thread.
        self._one_blas_thread = not cache_sized
        limit = _process_limit(processes)
        # Each process that takes part gets at least this many chunks of a call.
        self._min_chunks = 1
        if processes is None:
            if cache_sized:
                self._min_chunks = MIN_CHUNKS_PER_PROCESS
            elif not can_limit_blas_threads():
                limit = 1
            elif fixed_inputs is None and not forward_only:
                # Mini-batches of large chunks stay in this process, BLAS threading their
                # products over every core, unless a batch holds at least two chunks of
                # MAX_CHUNK_ELEMENTS (see mini_batch_plan).
                limit, n = mini_batch_plan(self.max_samples, per_sample, n, limit, chunk_size)
        self.chunk = n
        self.fixed_inputs = fixed_inputs
        first = self.runners[0]
        if fixed_inputs is not None and hasattr(first, "keep_windows"):
            first.keep_windows(fixed_inputs.shape[0], n, cache_bytes)

        n_procs = max(1, min(limit, -(-self.max_samples // n) // self._min_chunks))
        self.processes = n_procs
        O = math.prod(net.output_shape)
        layout: dict = {
            "call": ((2,), np.int64),  # the call's number of samples, and its loss code
            "loss_parts": ((n_procs,), np.float64),
            "targets": ((self.max_samples if n_procs > 1 else 1, O), dt),
        }
        if n_procs > 1 and fixed_inputs is None:  # a mini-batch is copied where helpers see it
            layout["inputs"] = ((self.max_samples, *net.input_shape), dt)
        if n_procs > 1:  # what the shares of a forward pass write
            layout["outputs"] = ((self.max_samples, *net.output_shape), dt)
        for i, runner in enumerate(self.runners):
            for name, spec in runner.shared_layout(n_procs).items():
                layout[f"{i}.{name}"] = spec
        arrays = SharedArena(layout).arrays
        self.shared = arrays
        for i, runner in enumerate(self.runners):
            prefix = f"{i}."
            runner.bind({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
            runner.plan(n)
        self.dout = np.zeros((n, O), dtype=dt)
        final_perm = hwc_order(self.runners[-1].out_perm)
        self.final_perm = final_perm
        self.final_inverse = None if final_perm is None else np.argsort(final_perm)
        self.logits = np.zeros((n, O), dtype=dt) if final_perm is not None else None

        # For shares 1, 2, ...: a helper, or None where this process does that share itself.
        self._helpers: list[HelperProcess | None] = [None] * (n_procs - 1)
        if fork_helpers:
            for slot in range(1, n_procs):
                try:
                    self._helpers[slot - 1] = HelperProcess(self._helper_job(slot))
                except OSError:  # no fork today (process limit, memory): we do that share
                    pass
        self._owner = os.getpid()
        self._probe_calls = 0
        self._probe_times: dict[str, list[float]] = {"with": [], "alone": []}

    # -- the plan of a call -----------------------------------------------------------------

    def shares(self, N: int) -> list[tuple[int, int]]:
        """The chunks of a call on ``N`` samples, split into near-equal contiguous shares, one
        per process that takes part (the larger ones first: ours)."""
        n_chunks = -(-N // self.chunk)
        n_procs = min(self.processes, max(1, n_chunks // self._min_chunks))
        bounds = [n_chunks - (n_procs - j) * n_chunks // n_procs for j in range(n_procs + 1)]
        return list(zip(bounds[:-1], bounds[1:]))

    def _forward_chunk(self, X: np.ndarray, start: int, stop: int, index: int, fixed: bool):
        y = X[start:stop]
        m = stop - start
        for runner in self.runners:
            y = runner.forward(y, m, index, fixed)
        if self.final_perm is not None:  # features back to the public (C, H, W) order
            y = np.take(y, self.final_inverse, axis=1, out=self.logits[:m])
        return y

    def _backward_chunk(self, dy: np.ndarray, m: int, slot: int, first_in_share: bool) -> None:
        if self.final_perm is not None:
            dy = np.take(dy, self.final_perm, axis=1)
        for runner in reversed(self.runners):
            if not runner.n_params and not runner.need_dx:
                break  # no parameters before this layer: nothing left to compute
            dy = runner.backward(dy, m, slot, first_in_share)

    def _run_share(self, X, T, N: int, loss: str, slot: int, share: tuple[int, int]) -> None:
        """Forward and backward through chunks ``share[0]:share[1]`` of the call; the share's
        loss into ``loss_parts[slot]``, its gradients into the runners' slot ``slot``."""
        loss_fn = LOSSES[loss]
        fixed = X is self.fixed_inputs
        total = 0.0
        for runner in self.runners:
            runner.training = True
        for index in range(*share):
            start, stop = index * self.chunk, min((index + 1) * self.chunk, N)
            y = self._forward_chunk(X, start, stop, index, fixed)
            m = stop - start
            part, dy = loss_fn(y, T[start:stop], N, out=self.dout[:m])
            total += part
            self._backward_chunk(dy, m, slot, index == share[0])
        self.shared["loss_parts"][slot] = total

    # -- calls ------------------------------------------------------------------------------

    def prepare(self, params: list[np.ndarray]) -> None:
        """Put ``params`` into the runners' layouts (once per call)."""
        self._stop_stale_helpers()
        i = 0
        for runner in self.runners:
            runner.prepare(params[i : i + runner.n_params])
            i += runner.n_params

    def _forward_share(self, X: np.ndarray, N: int, share: tuple[int, int], out: np.ndarray):
        """The outputs of chunks ``share[0]:share[1]`` of a forward pass into ``out``."""
        fixed = X is self.fixed_inputs
        for runner in self.runners:
            runner.training = False
        for index in range(*share):
            start, stop = index * self.chunk, min((index + 1) * self.chunk, N)
            out[start:stop] = self._forward_chunk(X, start, stop, index, fixed)

    def forward(self, params: list[np.ndarray], X: np.ndarray) -> np.ndarray:
        """The stack's output ``(N, *output_shape)`` for ``X`` ``(N, C, H, W)`` (unchecked),
        its chunks shared with the helpers as in :meth:`loss_and_grads`."""
        N = X.shape[0]
        self.prepare(params)
        shares = self.shares(N)
        helpers = []
        if len(shares) > 1 and self._owner == os.getpid() and any(self._helpers):
            helpers = self._helpers
        if not helpers:
            out = np.empty((N, *self.net.output_shape), dtype=self.dtype)
            self._forward_share(X, N, (0, shares[-1][1]), out)
            return out
        staged = X is not self.fixed_inputs
        self.shared["call"][0] = N
        if staged:
            np.copyto(self.shared["inputs"][:N], X)
        out = self.shared["outputs"][:N]
        self._share_out(helpers, shares, _FORWARD_JOB + int(staged),
                        lambda slot, share: self._forward_share(X, N, share, out))  # fmt: skip
        return out.copy()

    def _share_out(self, helpers, shares, job: int, run: Callable[[int, tuple[int, int]], None]):
        """Shares 1, 2, ... to ``helpers`` (job code ``job + 2*slot``; an empty list: none),
        ``run(0, shares[0])`` here, then ``run`` again for each share whose helper is missing,
        failed, died or hangs (60 s plus 50 times our own share's time), in the same order: the
        result is the same either way. BLAS runs on one thread meanwhile if the call is shared
        and its products are large enough for BLAS to thread them."""
        shared = bool(helpers) and self._one_blas_thread
        with one_blas_thread() if shared else contextlib.nullcontext():
            for j in range(1, len(shares)):
                if helpers and helpers[j - 1] is not None:
                    helpers[j - 1].start(job + 2 * j)
            started = time.perf_counter()
            run(0, shares[0])
            timeout = 60.0 + 50 * (time.perf_counter() - started)
            for j in range(1, len(shares)):
                helper = helpers[j - 1] if helpers else None
                if helper is None or not helper.wait(timeout):
                    run(j, shares[j])

    def loss_and_grads(
        self, params: list[np.ndarray], X: np.ndarray, T: np.ndarray, loss: str = "mse"
    ) -> tuple[float, list[np.ndarray]]:
        """The loss of ``params`` on ``X`` ``(N, C, H, W)`` against ``T`` ``(N, O)`` and its
        gradients (new arrays, shaped like ``params``); inputs are not checked."""
        N = X.shape[0]
        if not 0 < N <= self.max_samples or X.dtype != self.dtype:
            raise ValueError(
                f"this engine takes 1 to {self.max_samples} samples of {self.dtype}; "
                f"got X of shape {X.shape} and dtype {X.dtype}"
            )
        loss_fn_code = _LOSS_CODES[loss]  # an unknown loss fails here, in this process
        self.prepare(params)
        shares = self.shares(N)
        helpers: list[HelperProcess | None] = []
        probe_step = None
        if len(shares) > 1:
            # A copy of this engine in a process forked later computes alone: the helpers
            # answer to the process that forked them.
            if self._owner == os.getpid() and any(self._helpers):
                helpers = self._helpers
                if self._probe_calls < len(_PROBE):
                    probe_step = _PROBE[self._probe_calls]
                    self._probe_calls += 1
                    if probe_step == "alone":
                        helpers = []
            if helpers:
                self.shared["call"][:] = (N, loss_fn_code)
                np.copyto(self.shared["targets"][:N], T)
                if X is not self.fixed_inputs:
                    np.copyto(self.shared["inputs"][:N], X)
        started = time.perf_counter()
        staged = int(X is not self.fixed_inputs)
        self._share_out(
            helpers, shares, staged, lambda slot, share: self._run_share(X, T, N, loss, slot, share)
        )
        if probe_step is not None:
            self._record_probe(probe_step, time.perf_counter() - started)

        parts = self.shared["loss_parts"]
        total = float(parts[0])
        for j in range(1, len(shares)):  # in a fixed order
            total += float(parts[j])
        grads: list[np.ndarray] = []
        for runner in self.runners:
            grads.extend(runner.grads(len(shares)))
        return total, grads

    # -- helpers ----------------------------------------------------------------------------

    def _helper_job(self, slot: int):
        """What helper ``slot`` runs for a job code (``2*slot + staged``): its share of the call
        described in shared memory. (A closure over this engine, which the forked helper holds
        a copy of.)"""

        one_thread = [self._one_blas_thread]

        def job(code: int) -> None:
            if one_thread[0]:  # once, in the helper: its BLAS on one thread from now on
                set_one_blas_thread()
                one_thread[0] = False
            N, loss_code = (int(v) for v in self.shared["call"])
            X = self.shared["inputs"] if code % 2 else self.fixed_inputs
            if code >= _FORWARD_JOB:
                share = self.shares(N)[(code - _FORWARD_JOB) // 2]
                self._forward_share(X, N, share, self.shared["outputs"])
                return
            share = self.shares(N)[code // 2]
            with np.errstate(all="ignore"):  # as in training: divergence is the parent's call
                self._run_share(X, self.shared["targets"], N, _LOSS_NAMES[loss_code], code // 2,
                                share)  # fmt: skip

        return job

    def _record_probe(self, step: str, seconds: float) -> None:
        """Note one of the first calls with helpers (see :data:`_PROBE`); after the last, stop
        the helpers unless their fastest call beats the fastest without them."""
        if step in self._probe_times:  # the warm-up call is not timed
            self._probe_times[step].append(seconds)
        if self._probe_calls == len(_PROBE):
            with_helpers, alone = min(self._probe_times["with"]), min(self._probe_times["alone"])
            if with_helpers > HELPER_MIN_GAIN * alone:
                self.close()

    def _stop_stale_helpers(self) -> None:
        """A helper whose answer was never read (an exception interrupted the call that started
        it) may still be writing its share of that call into shared memory: it is stopped (and
        reaped) before this call touches that memory; its shares are done here from now on."""
        if self._owner != os.getpid():
            return
        for j, helper in enumerate(self._helpers):
            if helper is not None and helper.busy:
                helper.close()
                self._helpers[j] = None

    @property
    def helpers_running(self) -> int:
        return sum(h is not None and h.alive for h in self._helpers)

    def close(self) -> None:
        """Stop the helper processes (the engine still works, in this process alone)."""
        for helper in self._helpers:
            if helper is not None:
                helper.close()
        self._helpers = [None] * len(self._helpers)


# The first calls with helpers: the first not timed (copy-on-write faults and cold caches in
# the helpers), then three of each, the calls without helpers together: after a call with
# BLAS on two threads its idle thread spins on for a while, taking the core a helper needs
# (a call with helpers right after one without measured 105 ms against 57 on C float32), so
# alternating them timed every call with helpers slow. Only the first of the three after the
# calls without helpers pays that.
_PROBE = ("warm-up", "with", "alone", "alone", "alone", "with", "with")
# Job codes: 2*slot + staged for a share of loss_and_grads, this plus _FORWARD_JOB for a share
# of a forward pass (slots < MAX_PROCESSES).
_FORWARD_JOB = 32
_LOSS_NAMES = sorted(LOSSES)
_LOSS_CODES = {name: code for code, name in enumerate(_LOSS_NAMES)}


def _process_limit(requested: int | None) -> int:
    """The most processes an engine may use: ``requested`` if given, else one per CPU this
    process may run on, at most :data:`MAX_PROCESSES` and ``TINYCNN_PROCESSES``; 1 where
    helpers cannot be forked."""
    if not can_fork_helpers():
        return 1
    if requested is not None:
        return max(1, int(requested))
    limit = min(available_cpus(), MAX_PROCESSES)
    env = os.environ.get("TINYCNN_PROCESSES", "").strip()
    if env:
        try:
            limit = min(limit, max(1, int(env)))
        except ValueError:
            raise ValueError(
                f"TINYCNN_PROCESSES must be a whole number >= 1, got {env!r}"
            ) from None
    return limit
