"""The fast training path: every buffer one training run needs, allocated once and reused.

:func:`tinycnn.network.loss_and_grads` computes the loss and gradients plainly, allocating fresh
arrays at every step (the readable reference). A :class:`Workspace` computes the same numbers
with the memory traffic taken out, which is where an epoch's time goes (see
``../shared/BENCHMARKS.md``):

* every intermediate lives in a buffer allocated once and written with ``out=`` arguments, so no
  epoch pays for page faults on fresh large arrays;
* the batch goes through in chunks of a size fixed by the shapes (never tuned by timing, so
  results are reproducible), small enough that a chunk's windows and activations stay in cache
  between its forward and its backward pass (:meth:`ConvNetSpec.chunk_size`, the one policy
  the plain path follows too);
* when ``X`` is fixed for the whole run (full-batch training), the unfolded windows of as many
  chunks as fit :data:`CACHE_BYTES` are made once and reused by every epoch (copying windows
  out of the images costs about as much as a matrix product);
* the unfolded windows carry an extra row of ones and the kernel an extra column holding the
  bias, so one matrix product gives the conv plus its bias and one gives ``dkernel`` and
  ``dbias`` together (a sum as a product with ones goes through BLAS);
* the conv output is laid out ``(sample, pixel, filter)``, so that each sample's features are
  one row and the dense layer is one product per chunk; W_fc is rearranged to match once per
  call, in the layouts in which its products run fastest;
* about a dozen NumPy calls per chunk: the loss's gradients and the partial kernel gradients
  go to buffers reduced once per call (the output bias's gradient is one product with ones);
* the conv's ``dx`` is never formed (nobody needs it);
* in full-batch training on cache-sized chunks (digits-sized images), whose products OpenBLAS
  runs on one core, the chunks are shared with helper processes forked from this one, one per
  further CPU (``_helper_process.py``): parameters, targets and each share's results live in
  memory both processes see, and the windows are shared from the fork on. Python threads
  cannot do this: the GIL changes hands at each of the hundred short NumPy calls of an epoch.

The results equal the reference's up to the order of floating-point sums (the tests pin them to
1e-12 of the largest gradient entry, for any chunk size, windows cached or not, in one process
or several); with the same shapes and process count, the same inputs give bit-identical results
every time, whether or not a helper answered.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ._helper_process import HelperProcess, SharedArena, available_cpus, can_fork_helpers
from .network import CHUNK_ELEMENTS, LOSSES, ConvNetParams, ConvNetSpec
from .ops.conv import unfold

# Unfolded windows of a fixed X kept across epochs: at most this many bytes (whole chunks, the
# first ones); the other chunks are unfolded again at every epoch. 400 MiB hold all the windows
# of 2000 CIFAR-sized images (3 x 32 x 32, 3x3 kernel) in float64, and 70% of those of 10000
# MNIST-sized ones (28 x 28, 5x5 kernel) in float32, whose training takes PyTorch about 1.1 GiB.
CACHE_BYTES = 400 << 20

# Full-batch training on at least this many chunks per process is split between this process
# and helper processes forked from it (see _helper_process.py), one per further CPU: each runs
# a contiguous share of the chunks. Fewer chunks are not worth the two pipe messages per call.
# Only cache-sized chunks are shared out (at most network.CHUNK_ELEMENTS numbers, such as
# digits): their products are too small for OpenBLAS to split across cores, so one process
# leaves the other cores idle. Chunks grown to the 64-sample floor (CIFAR- or MNIST-sized
# images) have products OpenBLAS already runs on every core; helpers there would double the
# threads and measured 2x slower.
MIN_CHUNKS_PER_PROCESS = 4
# The most processes a workspace uses; the environment variable TINYCNN_PROCESSES lowers it
# (1: never fork a helper).
MAX_PROCESSES = 8
# Helpers are kept only if the calls they take part in take at most this fraction of a call
# without them (the fastest of three of each, on the 2nd to 7th calls). Where a BLAS library
# does thread a chunk's products after all, two processes each running its threads on the same
# cores are many times slower, not faster. Who computes a share never changes the result: the
# shares, and the order in which they are added, are fixed; so this timing decides speed only,
# never the numbers.
HELPER_MIN_GAIN = 0.95

# The dense forward product runs on W_fc with its O columns padded by zeros to a multiple of
# this: BLAS kernels work on column blocks of 8 or 16, and a width like 10 takes a slow path.
OUTPUT_BLOCK = 8


class _ChunkViews(NamedTuple):
    """The workspace's buffers cut to a chunk of ``m`` samples (views, made once per size)."""

    cols: np.ndarray  # (R, m*P) unfolded windows, last row ones (when not cached)
    padded: np.ndarray | None  # (m, C, H + 2*pad, W + 2*pad) zero-bordered images
    act: np.ndarray  # (m*P, F) conv output, ReLU'd in place, later its gradient
    features: np.ndarray  # (m, P*F) the same buffer, one row of features per sample
    mask: np.ndarray  # (m*P, F) ReLU's derivative
    logits_padded: np.ndarray  # (m, O_pad)
    logits: np.ndarray  # (m, O) view of the above


class Workspace:
    """Buffers for computing the loss and gradients of ``spec``'s network on up to
    ``max_samples`` samples of ``dtype``.

    ``fixed_inputs`` (``(N, C, H, W)``), if given, is the one ``X`` this workspace will be used
    with (full-batch training): the windows of its first ``n_cached`` samples, as many whole
    chunks as fit ``cache_bytes``, are unfolded once, and it must not be modified while the
    workspace is in use. Without it any ``X`` of up to ``max_samples`` samples may be passed
    (mini-batches). ``chunk_size`` overrides the samples per chunk (tests use it to put chunk
    boundaries anywhere).

    With ``fixed_inputs``, the chunks are shared between this process and helper processes
    forked from it (Linux only), ``processes`` in all: by default one per CPU this process may
    use, at most :data:`MAX_PROCESSES` or the environment variable ``TINYCNN_PROCESSES``, and
    only as many as have :data:`MIN_CHUNKS_PER_PROCESS` chunks each. The split is a fixed
    function of the shapes and the process count, so results are bit-reproducible for a given
    count; they differ between counts only in the order of the last sums. With
    ``fork_helpers=False`` (short runs) this process computes every share itself, with the same
    numbers. :meth:`close` stops the helpers (so does garbage collection).

    The gradients returned by :meth:`loss_and_grads` are views of this workspace's buffers: they
    are overwritten by the next call (the optimizer may overwrite them too).
    """

    def __init__(
        self,
        spec: ConvNetSpec,
        dtype: npt.DTypeLike,
        max_samples: int,
        *,
        fixed_inputs: np.ndarray | None = None,
        cache_bytes: int = CACHE_BYTES,
        chunk_size: int | None = None,
        processes: int | None = None,
        fork_helpers: bool = True,
    ) -> None:
        dt = np.dtype(dtype)
        F, O, C, k = spec.n_filters, spec.n_outputs, spec.in_channels, spec.kernel_size
        P = spec.out_h * spec.out_w
        R = C * k * k + 1  # window rows plus the row of ones
        n = spec.chunk_size() if chunk_size is None else int(chunk_size)
        n = max(1, min(n, max_samples))
        n_chunks = -(-max_samples // n)
        self.spec, self.dtype, self.max_samples, self.chunk = spec, dt, max_samples, n
        self.P, self.R, self.O_pad = P, R, -(-O // OUTPUT_BLOCK) * OUTPUT_BLOCK

        n_procs = 1
        if fixed_inputs is not None:
            cache_sized = spec.numbers_per_sample * n <= CHUNK_ELEMENTS
            n_procs = _process_count(processes, -(-fixed_inputs.shape[0] // n), cache_sized)
        self.processes = n_procs
        # What every process of the call reads or writes, in memory shared with the helpers.
        shared = SharedArena(
            {
                # the parameters in the layouts the products want, refreshed once per call
                "kernel_aug": ((F, R), dt),  # [kernel (F, C*k*k) | bias_conv]
                "W_pf": ((P * F, self.O_pad), dt),  # W_fc, rows in (pixel, filter) order
                "W_pf_t": ((O, P * F), dt),  # and its transpose
                "b_fc": ((O,), dt),
                "targets": ((max_samples, O), dt),  # T (minus b_fc for MSE)
                # per sample, the loss's gradient; per chunk, [dkernel | dbias].T; per
                # process, its share of the loss and of dW.T
                "dlogits": ((max_samples, O), dt),
                "kernel_parts": ((n_chunks, R, F), dt),
                "loss_parts": ((n_procs,), np.float64),
                "W_t_parts": ((n_procs, O, P * F), dt),
            }
        ).arrays
        self.kernel_aug = shared["kernel_aug"]
        self.W_pf = shared["W_pf"]
        self.W_pf_t = shared["W_pf_t"]
        self.b_fc = shared["b_fc"]
        self.targets = shared["targets"]
        self.dlogits = shared["dlogits"]
        self.kernel_parts = shared["kernel_parts"]
        self.loss_parts = shared["loss_parts"]
        self.W_t_parts = shared["W_t_parts"]

        # One chunk's intermediates.
        self.cols = np.zeros(R * n * P, dtype=dt)
        self.act = np.zeros(n * P * F, dtype=dt)
        self.mask = np.zeros(n * P * F, dtype=bool)
        self.logits = np.zeros(n * self.O_pad, dtype=dt)
        self.padded = None
        if spec.pad:  # only the interior is ever written: the border stays zero
            H, W, pad = spec.height, spec.width, spec.pad
            self.padded = np.zeros((n, C, H + 2 * pad, W + 2 * pad), dtype=dt)
        self._views: dict[int, _ChunkViews] = {}
        self._ones_size = 0  # the chunk size whose row of ones self.cols holds
        # Per number of samples: each chunk's (start, stop, views, kept windows or None).
        self._plans: dict[int, list[tuple[int, int, _ChunkViews, np.ndarray | None]]] = {}

        # Gradients: the products with the loss's gradient summed through BLAS once per call
        # (db = ones @ dlogits); each process's dW.T accumulated chunk by chunk.
        self.ones = np.ones(max_samples, dtype=dt)
        self.grad_kernel_aug_t = np.zeros((R, F), dtype=dt)
        self.part_W_pf_t = np.zeros((O, P * F), dtype=dt)  # one chunk's dW.T
        gk = self.grad_kernel_aug_t[: R - 1].T.reshape(spec.param_shapes["kernel"])
        assert np.shares_memory(gk, self.grad_kernel_aug_t)  # a view, never a copy
        self.grads = ConvNetParams(
            gk,
            self.grad_kernel_aug_t[R - 1],
            np.zeros(spec.param_shapes["W_fc"], dtype=dt),
            np.zeros(O, dtype=dt),
        )

        self.fixed_inputs = fixed_inputs
        self.cached_cols, self.n_cached = None, 0  # windows of samples :n_cached, kept
        if fixed_inputs is not None:
            N = fixed_inputs.shape[0]
            n_cached = min(N, cache_bytes // (R * P * dt.itemsize))
            if n_cached < N:
                n_cached -= n_cached % n  # whole chunks only
            if n_cached > 0:
                # np.empty, then each byte written once (np.ones would fill it first, slowly)
                self.cached_cols = np.empty((R, n_cached * P), dtype=dt)
                self.cached_cols[R - 1] = 1
                for start in range(0, n_cached, n):  # chunk by chunk, in cache
                    m = min(n, n_cached - start)
                    cols = self._chunk_cols(fixed_inputs, start, self._chunk_views(m))
                    np.copyto(self.cached_cols[: R - 1, start * P : (start + m) * P], cols[: R - 1])
                self.n_cached = n_cached

        # Each process's contiguous share of the chunks of fixed_inputs (the first is ours),
        # then the helpers, forked last so that they share the windows made above.
        self._shares: list[tuple[int, int]] = []
        self._helpers: list[HelperProcess | None] = []  # for shares 1, 2, ...; None: ours
        if fixed_inputs is not None:
            n_fixed = -(-fixed_inputs.shape[0] // n)
            # Near-equal shares, the larger ones ours: a helper starts its share only once our
            # message has woken it up, and we add up the shares after.
            bounds = [n_fixed - (n_procs - j) * n_fixed // n_procs for j in range(n_procs + 1)]
            self._shares = list(zip(bounds[:-1], bounds[1:]))
            assert all(first < last for first, last in self._shares), self._shares
            self._plan(fixed_inputs.shape[0])
            for j in range(1, n_procs):
                helper = None  # we do that share ourselves
                if fork_helpers:
                    try:
                        helper = HelperProcess(self._helper_job(j))
                    except OSError:  # no fork today (process limit, memory)
                        pass
                self._helpers.append(helper)
            self._owner = os.getpid()
        # The first calls with helpers: see HELPER_MIN_GAIN.
        self._probe_calls = 0
        self._probe_times: dict[str, list[float]] = {"with": [], "alone": []}

    def _chunk_views(self, m: int) -> _ChunkViews:
        """The buffers cut to ``m`` samples (made once per size)."""
        views = self._views.get(m)
        if views is None:
            P, R, F = self.P, self.R, self.spec.n_filters
            cols = self.cols[: R * m * P].reshape(R, m * P)
            act = self.act[: m * P * F].reshape(m * P, F)
            logits = self.logits[: m * self.O_pad].reshape(m, self.O_pad)
            views = _ChunkViews(
                cols,
                None if self.padded is None else self.padded[:m],
                act,
                act.reshape(m, P * F),
                self.mask[: m * P * F].reshape(m * P, F),
                logits,
                logits[:, : self.spec.n_outputs],
            )
            if len(self._views) > 2:  # sizes in use: the chunk and a shorter last chunk
                self._views.clear()
            self._views[m] = views
        return views

    def _chunk_cols(self, X: np.ndarray, start: int, views: _ChunkViews) -> np.ndarray:
        """Windows plus the row of ones, ``(R, m*P)``, of samples ``start:start+m`` of ``X``."""
        m = views.features.shape[0]
        if start + m <= self.n_cached and X is self.fixed_inputs:
            return self.cached_cols[:, start * self.P : (start + m) * self.P]
        x = X[start : start + m]
        if views.padded is not None:
            pad = self.spec.pad
            views.padded[:, :, pad:-pad, pad:-pad] = x
            x = views.padded
        unfold(x, self.spec.kernel_size, self.spec.stride, 0, out=views.cols[: self.R - 1])
        if self._ones_size != m:
            # Where a chunk of this size has its row of ones: a shorter chunk's lies inside a
            # full chunk's windows, so it is set again whenever the size changes.
            views.cols[self.R - 1] = 1
            self._ones_size = m
        return views.cols

    def _plan(self, N: int) -> list[tuple[int, int, _ChunkViews, np.ndarray | None]]:
        """Each chunk of ``N`` samples: ``(start, stop, views, kept)``, ``kept`` its windows
        made once (of ``fixed_inputs``) or None; made once per ``N`` (views cost microseconds,
        a chunk of M about a hundred)."""
        plan = self._plans.get(N)
        if plan is None:
            plan = []
            for start in range(0, N, self.chunk):
                stop = min(start + self.chunk, N)
                kept = None
                if stop <= self.n_cached:
                    kept = self.cached_cols[:, start * self.P : stop * self.P]
                plan.append((start, stop, self._chunk_views(stop - start), kept))
            if len(self._plans) > 2:  # N in use: the batch size and a shorter last batch
                self._plans.clear()
            self._plans[N] = plan
        return plan

    def loss_and_grads(
        self, params: ConvNetParams, X: np.ndarray, T: np.ndarray, loss: str = "mse"
    ) -> tuple[float, ConvNetParams]:
        """What :func:`tinycnn.network.loss_and_grads` returns for ``X`` ``(N, C, H, W)`` and
        ``T`` ``(N, O)``, computed in this workspace's buffers.

        The returned gradients are views of the workspace (overwritten by the next call).
        """
        N = X.shape[0]
        if not 0 < N <= self.max_samples or X.dtype != self.dtype:
            raise ValueError(
                f"this workspace holds 1 to {self.max_samples} samples of {self.dtype}; "
                f"got X of shape {X.shape} and dtype {X.dtype}"
            )
        F, O = self.spec.n_filters, self.spec.n_outputs
        P, R = self.P, self.R
        LOSSES[loss]  # an unknown loss fails here, in this process
        np.copyto(self.kernel_aug[:, : R - 1], params.kernel.reshape(F, R - 1))
        self.kernel_aug[:, R - 1] = params.bias_conv
        W_pf = self.W_pf[:, :O]
        np.copyto(W_pf.reshape(P, F, O), params.W_fc.reshape(F, P, O).transpose(1, 0, 2))
        np.copyto(self.W_pf_t, W_pf.T)
        np.copyto(self.b_fc, params.b_fc)
        if loss == "mse":
            # MSE only sees logits + b_fc - T: subtracting b_fc from the targets once per call
            # saves adding it to the logits chunk by chunk.
            np.subtract(T, params.b_fc, out=self.targets[:N])
        else:
            np.copyto(self.targets[:N], T)

        n_chunks = len(self._plan(N))
        shares = [(0, n_chunks)]
        helpers: list[HelperProcess | None] = []
        probe_step = None
        if X is self.fixed_inputs and self._shares:
            shares = self._shares
            # A copy of this workspace in a process forked later computes alone: the helpers
            # answer to the process that forked them.
            if self._owner == os.getpid() and any(self._helpers):
                helpers = self._helpers
                if self._probe_calls < len(_PROBE):
                    probe_step = _PROBE[self._probe_calls]
                    self._probe_calls += 1
                    if probe_step == "alone":
                        helpers = []
        started = time.perf_counter()
        for helper in helpers:
            if helper is not None:
                helper.start(_LOSS_CODES[loss])
        self._run_share(X, N, loss, 0, shares[0])
        # A helper that failed, died or hangs (60 s plus 50 times our own share's time) has its
        # share done here, in the same order: the result is the same either way.
        timeout = 60.0 + 50 * (time.perf_counter() - started)
        for j in range(1, len(shares)):
            helper = helpers[j - 1] if helpers else None
            if helper is None or not helper.wait(timeout):
                self._run_share(X, N, loss, j, shares[j])
        if probe_step is not None:
            self._record_probe(probe_step, time.perf_counter() - started)

        total = float(self.loss_parts[0])
        g_W_t = self.W_t_parts[0]  # (O, P*F)
        for j in range(1, len(shares)):  # in a fixed order
            total += float(self.loss_parts[j])
            g_W_t += self.W_t_parts[j]
        np.sum(self.kernel_parts[:n_chunks], axis=0, out=self.grad_kernel_aug_t)
        np.matmul(self.ones[:N], self.dlogits[:N], out=self.grads.b_fc)
        np.copyto(self.grads.W_fc.reshape(F, P, O), g_W_t.reshape(O, P, F).transpose(2, 1, 0))
        return total, self.grads

    def _run_share(self, X: np.ndarray, N: int, loss: str, slot: int, share: tuple[int, int]):
        """Forward and backward through chunks ``share[0]:share[1]`` of ``X``'s ``N`` samples,
        with the parameters and targets this call put in shared memory: each chunk's loss
        gradient into ``dlogits``, its [dkernel | dbias].T into ``kernel_parts``, and the
        share's loss and dW.T into ``loss_parts[slot]`` and ``W_t_parts[slot]``."""
        loss_fn = LOSSES[loss]
        add_bias = loss != "mse"  # for MSE the targets already hold T - b_fc
        kernel_aug_t, W_pf, W_pf_t = self.kernel_aug.T, self.W_pf, self.W_pf_t
        T, b_fc, g_W_t, part_W_t = self.targets, self.b_fc, self.W_t_parts[slot], self.part_W_pf_t
        fixed = X is self.fixed_inputs
        plan = self._plan(N)
        total = 0.0
        first, last = share
        for i in range(first, last):
            start, stop, v, kept = plan[i]
            cols = kept if fixed and kept is not None else self._chunk_cols(X, start, v)  # (R, m*P)
            act, features, logits = v.act, v.features, v.logits
            np.matmul(cols.T, kernel_aug_t, out=act)  # conv + bias
            np.maximum(act, 0, out=act)  # ReLU, in place
            np.greater(act, 0, out=v.mask)  # its derivative, while the activations are in cache
            np.matmul(features, W_pf, out=v.logits_padded)  # the padding columns stay 0
            if add_bias:
                np.add(logits, b_fc, out=logits)
            dlogits = self.dlogits[start:stop]  # (m, O)
            total += loss_fn(logits, T[start:stop], N, out=dlogits)[0]

            np.matmul(dlogits.T, features, out=part_W_t if i > first else g_W_t)  # dW.T
            if i > first:
                g_W_t += part_W_t
            np.matmul(dlogits, W_pf_t, out=features)  # the activations' buffer gets their gradient
            np.multiply(act, v.mask, out=act)  # ReLU backward: act now holds dz (m*P, F)
            # [dkernel | dbias].T = [cols; 1] @ dz: the bias gradient comes from the ones row
            np.matmul(cols, act, out=self.kernel_parts[i])
        self.loss_parts[slot] = total

    def _helper_job(self, slot: int):
        """What helper ``slot`` runs for a job code: its share of a call on ``fixed_inputs``.
        (A closure over this workspace, which the forked helper holds a copy of.)"""
        X = self.fixed_inputs
        N = X.shape[0]
        share = self._shares[slot]

        def job(code: int) -> None:
            with np.errstate(all="ignore"):  # as in training: divergence is the parent's call
                self._run_share(X, N, _LOSS_NAMES[code], slot, share)

        return job

    def _record_probe(self, step: str, seconds: float) -> None:
        """Note one of the first calls (see :data:`_PROBE`); after the last, stop the helpers
        unless their fastest call beats the fastest without them (:data:`HELPER_MIN_GAIN`)."""
        if step in self._probe_times:  # the warm-up call is not timed
            self._probe_times[step].append(seconds)
        if self._probe_calls == len(_PROBE):
            with_helpers, alone = min(self._probe_times["with"]), min(self._probe_times["alone"])
            if with_helpers > HELPER_MIN_GAIN * alone:
                self.close()

    def close(self) -> None:
        """Stop the helper processes (the workspace still works, in this process alone)."""
        for helper in self._helpers:
            if helper is not None:
                helper.close()
        self._helpers = [None] * len(self._helpers)


# The first calls with helpers: the first not timed (copy-on-write faults and cold caches in
# the helpers), then with and without them in turn, three of each: the fastest of each is
# compared, so that one call slowed by another program does not decide.
_PROBE = ("warm-up", "with", "alone", "with", "alone", "with", "alone")
_LOSS_NAMES = sorted(LOSSES)
_LOSS_CODES = {name: code for code, name in enumerate(_LOSS_NAMES)}


def _process_count(requested: int | None, n_chunks: int, cache_sized: bool) -> int:
    """How many processes share a fixed batch of ``n_chunks`` chunks (see :class:`Workspace`)."""
    if not can_fork_helpers():
        return 1
    if requested is not None:
        return max(1, min(int(requested), n_chunks))
    if not cache_sized:
        return 1
    limit = min(available_cpus(), MAX_PROCESSES)
    env = os.environ.get("TINYCNN_PROCESSES", "").strip()
    if env:
        try:
            limit = min(limit, max(1, int(env)))
        except ValueError:
            raise ValueError(
                f"TINYCNN_PROCESSES must be a whole number >= 1, got {env!r}"
            ) from None
    return max(1, min(limit, n_chunks // MIN_CHUNKS_PER_PROCESS))
