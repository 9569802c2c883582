"""The fast training path: every buffer one training run needs, allocated once and reused.

:func:`tinycnn.network.loss_and_grads` computes the loss and gradients plainly, allocating fresh
arrays at every step (the readable reference). A :class:`Workspace` computes the same numbers
with the memory traffic taken out, which is where an epoch's time goes (see
``../shared/BENCHMARKS.md``):

* every intermediate lives in a buffer allocated once and written with ``out=`` arguments, so no
  epoch pays for page faults on fresh large arrays;
* the batch goes through in chunks of a size fixed by the shapes (never tuned by timing, so
  results are reproducible), small enough that a chunk's windows and activations stay in cache
  between its forward and its backward pass;
* when ``X`` is fixed for the whole run (full-batch training), the unfolded windows of as many
  chunks as fit :data:`CACHE_BYTES` are made once and reused by every epoch (copying windows
  out of the images costs about as much as a matrix product);
* the unfolded windows carry an extra row of ones and the kernel an extra column holding the
  bias, so one matrix product gives the conv plus its bias and one gives ``dkernel`` and
  ``dbias`` together (a sum as a product with ones goes through BLAS);
* the dense weights are read as ``(F, O, P)``, the layout in which both products that use them
  run fastest, and the conv's ``dx`` is never formed (nobody needs it).

The results equal the reference's up to the order of floating-point sums (about 1e-16
relative); for one workspace, the same inputs give bit-identical results every time.
"""

from __future__ import annotations

import numpy as np

from .network import LOSSES, ConvNetParams, ConvNetSpec
from .ops.conv import unfold

# Unfolded windows of a fixed X kept across epochs: at most this many bytes (whole chunks, the
# first ones); the other chunks are unfolded again at every epoch. 384 MiB hold all the windows
# of 2000 CIFAR-sized images (3 x 32 x 32, 3x3 kernel) in float64, and two thirds of those of
# 10000 MNIST-sized ones (28 x 28, 5x5 kernel) in float32, for which PyTorch's own training
# takes about three times as much memory.
CACHE_BYTES = 384 << 20

# A chunk holds as many samples as fit this many numbers of windows and activations, so that
# they stay in cache between the forward and the backward pass...
CHUNK_ELEMENTS = 1 << 17
# ...but at least this many: the dense layer's products read all of W_fc once per chunk, which
# only pays off over enough rows.
MIN_CHUNK_SAMPLES = 64

# The dense forward product runs on W_fc with its O columns padded by zeros to a multiple of
# this: BLAS kernels work on column blocks of 8 or 16, and a width like 10 takes a slow path.
OUTPUT_BLOCK = 8


def chunk_samples(spec: ConvNetSpec, itemsize: int) -> int:
    """Samples per chunk for arrays of ``itemsize`` bytes: a fixed function of the shapes."""
    P = spec.out_h * spec.out_w
    per_sample = (spec.in_channels * spec.kernel_size**2 + 1 + spec.n_filters) * P
    return max(MIN_CHUNK_SAMPLES, CHUNK_ELEMENTS // per_sample)


class Workspace:
    """Buffers for computing the loss and gradients of ``spec``'s network on up to
    ``max_samples`` samples of ``dtype``.

    ``fixed_inputs`` (``(N, C, H, W)``), if given, is the one ``X`` this workspace will be used
    with (full-batch training): the windows of its first ``n_cached`` samples, as many whole
    chunks as fit ``cache_bytes``, are unfolded once, and it must not be modified while the
    workspace is in use. Without it any ``X`` of up to
    ``max_samples`` samples may be passed (mini-batches). ``chunk_size`` overrides the samples
    per chunk (tests use it to put chunk boundaries anywhere).

    The gradients returned by :meth:`loss_and_grads` are views of this workspace's buffers: they
    are overwritten by the next call (the optimizer may overwrite them too).
    """

    def __init__(
        self,
        spec: ConvNetSpec,
        dtype,
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
        n = chunk_samples(spec, dt.itemsize) if chunk_size is None else int(chunk_size)
        n = max(1, min(n, max_samples))
        self.spec, self.dtype, self.max_samples, self.chunk = spec, dt, max_samples, n

        # Parameters in the layouts the products want, refreshed once per call.
        self.kernel_aug = np.zeros((F, R), dtype=dt)  # [kernel (F, C*k*k) | bias_conv]
        O_pad = -(-O // OUTPUT_BLOCK) * OUTPUT_BLOCK
        self.W_pf = np.zeros((P * F, O_pad), dtype=dt)  # W_fc, rows in (pixel, filter) order
        self.W_pf_t = np.zeros((O, P * F), dtype=dt)  # and its transpose (each product has its
        # fastest layout)

        # One chunk's intermediates.
        self.cols = np.zeros(R * n * P, dtype=dt)  # (R, n*P) windows; the last row stays 1
        self.cols.reshape(R, n * P)[R - 1] = 1
        self.act = np.zeros((n * P, F), dtype=dt)  # conv output, ReLU'd in place, then its grad
        self.mask = np.zeros((n * P, F), dtype=bool)  # ReLU's derivative
        self.logits = np.zeros((n, O_pad), dtype=dt)
        self.ones = np.ones(n, dtype=dt)
        pad = spec.pad
        if pad:  # a zero-bordered copy of the chunk: only the interior is ever written
            self.padded = np.zeros((n, C, spec.height + 2 * pad, spec.width + 2 * pad), dtype=dt)

        # Gradients: accumulated over chunks (the first chunk writes, the others add).
        self.grad_kernel_aug_t = np.zeros((R, F), dtype=dt)  # [dkernel | dbias].T
        self.grad_W_pf_t = np.zeros((O, P * F), dtype=dt)
        self.part_kernel_aug_t = np.zeros((R, F), dtype=dt)
        self.part_W_pf_t = np.zeros((O, P * F), dtype=dt)
        self.part_b_fc = np.zeros(O, dtype=dt)
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
                    cols = self._chunk_cols(fixed_inputs, start, m)
                    np.copyto(self.cached_cols[: R - 1, start * P : (start + m) * P], cols[: R - 1])
                self.n_cached = n_cached

    def _chunk_cols(self, X: np.ndarray, start: int, m: int) -> np.ndarray:
        """Windows plus the row of ones, ``(R, m*P)``, of samples ``start:start+m`` of ``X``."""
        spec = self.spec
        P = spec.out_h * spec.out_w
        if start + m <= self.n_cached and X is self.fixed_inputs:
            return self.cached_cols[:, start * P : (start + m) * P]
        R = self.kernel_aug.shape[1]
        cols = self.cols[: R * m * P].reshape(R, m * P)
        x = X[start : start + m]
        pad = spec.pad
        if pad:
            padded = self.padded[:m]
            padded[:, :, pad:-pad, pad:-pad] = x
            x = padded
        unfold(x, spec.kernel_size, spec.stride, 0, out=cols[: R - 1])
        if m != self.chunk:  # a shorter last chunk's row of ones sits elsewhere in the buffer
            cols[R - 1] = 1
        return cols

    def loss_and_grads(
        self, params: ConvNetParams, X: np.ndarray, T: np.ndarray, loss: str = "mse"
    ) -> tuple[float, ConvNetParams]:
        """What :func:`tinycnn.network.loss_and_grads` returns for ``X`` ``(N, C, H, W)`` and
        ``T`` ``(N, O)``, computed in this workspace's buffers.

        The returned gradients are views of the workspace (overwritten by the next call).
        """
        spec = self.spec
        N = X.shape[0]
        if N > self.max_samples or X.dtype != self.dtype:
            raise ValueError(
                f"this workspace holds up to {self.max_samples} samples of {self.dtype}; "
                f"got X of shape {X.shape} and dtype {X.dtype}"
            )
        F, O = spec.n_filters, spec.n_outputs
        P = spec.out_h * spec.out_w
        R = self.kernel_aug.shape[1]
        loss_fn = LOSSES[loss]
        W_pf, W_pf_t = self.W_pf, self.W_pf_t  # (P*F, O_pad) and (O, P*F)
        np.copyto(self.kernel_aug[:, : R - 1], params.kernel.reshape(F, R - 1))
        self.kernel_aug[:, R - 1] = params.bias_conv
        np.copyto(W_pf[:, :O].reshape(P, F, O), params.W_fc.reshape(F, P, O).transpose(1, 0, 2))
        np.copyto(W_pf_t, W_pf[:, :O].T)
        kernel_aug_t = self.kernel_aug.T  # (R, F)
        g_k, g_W_t, g_b = self.grad_kernel_aug_t, self.grad_W_pf_t, self.grads.b_fc

        total = 0.0
        n = self.chunk
        for start in range(0, N, n):
            m = min(n, N - start)
            first = start == 0
            cols = self._chunk_cols(X, start, m)  # (R, m*P)
            act = self.act[: m * P]  # (m*P, F): sample, pixel, filter
            np.matmul(cols.T, kernel_aug_t, out=act)  # conv + bias
            np.maximum(act, 0, out=act)  # ReLU, in place
            act2 = act.reshape(m, P * F)  # each row is one sample's features, in (P, F) order
            np.matmul(act2, W_pf, out=self.logits[:m])
            logits = self.logits[:m, :O]  # the padding columns hold zeros
            logits += params.b_fc
            part, dlogits = loss_fn(logits, T[start : start + m], N)  # dlogits (m, O)
            total += part

            # dense backward: dW.T = dlogits.T @ act2; db = ones @ dlogits (a sum through BLAS)
            np.matmul(dlogits.T, act2, out=g_W_t if first else self.part_W_pf_t)
            np.matmul(self.ones[:m], dlogits, out=g_b if first else self.part_b_fc)
            if not first:
                g_W_t += self.part_W_pf_t
                g_b += self.part_b_fc
            mask = self.mask[: m * P]
            np.greater(act, 0, out=mask)  # the last use of the activations:
            np.matmul(dlogits, W_pf_t, out=act2)  # their buffer now receives their gradient
            np.multiply(act, mask, out=act)  # ReLU backward: act now holds dz (m*P, F)
            # [dkernel | dbias].T = [cols; 1] @ dz: the bias gradient comes from the ones row
            np.matmul(cols, act, out=g_k if first else self.part_kernel_aug_t)
            if not first:
                g_k += self.part_kernel_aug_t
        np.copyto(self.grads.W_fc.reshape(F, P, O), g_W_t.reshape(O, P, F).transpose(2, 1, 0))
        return total, self.grads
