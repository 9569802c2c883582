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
* the conv's ``dx`` is never formed (nobody needs it).

The results equal the reference's up to the order of floating-point sums (the tests pin them to
1e-12 of the largest gradient entry, for any chunk size, windows cached or not); with the same
shapes, the same inputs give bit-identical results every time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .network import LOSSES, ConvNetParams, ConvNetSpec
from .ops.conv import unfold

# Unfolded windows of a fixed X kept across epochs: at most this many bytes (whole chunks, the
# first ones); the other chunks are unfolded again at every epoch. 400 MiB hold all the windows
# of 2000 CIFAR-sized images (3 x 32 x 32, 3x3 kernel) in float64, and 70% of those of 10000
# MNIST-sized ones (28 x 28, 5x5 kernel) in float32, whose training takes PyTorch about 1.1 GiB.
CACHE_BYTES = 400 << 20

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

        # Parameters in the layouts the products want, refreshed once per call.
        self.kernel_aug = np.zeros((F, R), dtype=dt)  # [kernel (F, C*k*k) | bias_conv]
        self.W_pf = np.zeros((P * F, self.O_pad), dtype=dt)  # W_fc, rows in (pixel, filter)
        self.W_pf_t = np.zeros((O, P * F), dtype=dt)  # order, and its transpose

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

        # Gradients. Per call: the loss's gradient for every sample, the products with it
        # summed through BLAS once (db = ones @ dlogits); per chunk, [dkernel | dbias].T.
        self.dlogits = np.zeros((max_samples, O), dtype=dt)
        self.shifted_targets = np.zeros((max_samples, O), dtype=dt)  # T - b_fc, for MSE
        self.ones = np.ones(max_samples, dtype=dt)
        self.kernel_parts = np.zeros((n_chunks, R, F), dtype=dt)
        self.grad_kernel_aug_t = np.zeros((R, F), dtype=dt)
        self.grad_W_pf_t = np.zeros((O, P * F), dtype=dt)  # accumulated chunk by chunk
        self.part_W_pf_t = np.zeros((O, P * F), dtype=dt)
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
        loss_fn = LOSSES[loss]
        W_pf, W_pf_t = self.W_pf, self.W_pf_t  # (P*F, O_pad) and (O, P*F)
        np.copyto(self.kernel_aug[:, : R - 1], params.kernel.reshape(F, R - 1))
        self.kernel_aug[:, R - 1] = params.bias_conv
        np.copyto(W_pf[:, :O].reshape(P, F, O), params.W_fc.reshape(F, P, O).transpose(1, 0, 2))
        np.copyto(W_pf_t, W_pf[:, :O].T)
        kernel_aug_t, b_fc = self.kernel_aug.T, params.b_fc  # (R, F), (O,)
        # MSE only sees logits + b_fc - T: subtracting b_fc from the targets once per call
        # saves adding it to the logits chunk by chunk.
        add_bias = loss != "mse"
        if not add_bias:
            T = np.subtract(T, b_fc, out=self.shifted_targets[:N])
        g_W_t, part_W_t = self.grad_W_pf_t, self.part_W_pf_t

        total = 0.0
        fixed = X is self.fixed_inputs
        for i, (start, stop, v, kept) in enumerate(self._plan(N)):
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

            np.matmul(dlogits.T, features, out=part_W_t if i else g_W_t)  # dW.T (O, P*F)
            if i:
                g_W_t += part_W_t
            np.matmul(dlogits, W_pf_t, out=features)  # the activations' buffer gets their gradient
            np.multiply(act, v.mask, out=act)  # ReLU backward: act now holds dz (m*P, F)
            # [dkernel | dbias].T = [cols; 1] @ dz: the bias gradient comes from the ones row
            np.matmul(cols, act, out=self.kernel_parts[i])

        np.sum(self.kernel_parts[: i + 1], axis=0, out=self.grad_kernel_aug_t)
        np.matmul(self.ones[:N], self.dlogits[:N], out=self.grads.b_fc)
        np.copyto(self.grads.W_fc.reshape(F, P, O), g_W_t.reshape(O, P, F).transpose(2, 1, 0))
        return total, self.grads
