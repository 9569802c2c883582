"""Forward passes for prediction: large ones shared with helper processes, whose engine is kept
ready for the next pass.

Forking a helper, and the first call after the fork (copy-on-write faults in both processes
on every page either writes, including OpenBLAS's work buffers), cost about what the helper
saves on one pass. Measured on this project's 2-core machine, 10000 images of 28x28 through
the benchmark's ``one`` stack in float32: a fresh engine per call took 200-230 ms with a
helper and 205 ms without; an engine kept across calls takes 122 ms from its second call on
(``lenet``: 283 and 306 ms fresh, 180 ms kept). So the engine of a large pass stays, with its
helpers, for the next pass on the same stack and dtype, and is closed after
:data:`KEEP_SECONDS` without one: an idle helper holds a copy-on-write image of this process
as it was when forked, which would keep memory this process frees from going back to the
system.

The kept engine is fed the inputs of each call through memory its helpers see, in blocks of
whole chunks of at most :data:`BLOCK_BYTES`; its chunks fall where a fresh engine's would, so a
pass gives the same bits whether or not an engine was kept.
"""

from __future__ import annotations

import math
import os
import threading
from typing import TYPE_CHECKING

import numpy as np

from .engine import Engine, _process_limit

if TYPE_CHECKING:
    from .model import Sequential

# A forward pass over fewer samples than this runs in one process: forking a helper costs a few
# milliseconds, about the forward pass of a few hundred small images.
MIN_SAMPLES_TO_SHARE = 1024
# How long the engine of a large pass is kept, with its helpers, for the next one.
KEEP_SECONDS = 2.0
# The kept engine takes at most this many bytes of inputs per call (and at least
# MIN_SAMPLES_TO_SHARE samples); larger inputs go through in blocks.
BLOCK_BYTES = 64 << 20


class _Kept:
    """The kept engine (at most one per process), what it was built for, and its timer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engine: Engine | None = None
        self.key: tuple | None = None
        self.timer: threading.Timer | None = None


_kept = _Kept()


def forward_pass(net: Sequential, params: list[np.ndarray], X: np.ndarray) -> np.ndarray:
    """``net``'s outputs ``(N, *net.output_shape)`` for ``X`` ``(N, C, H, W)`` (checked by the
    caller), in the parameters' dtype."""
    dtype = np.dtype(params[0].dtype) if params else X.dtype
    X = np.asarray(X, dtype=dtype)
    N = X.shape[0]
    if N < MIN_SAMPLES_TO_SHARE or _process_limit(None) == 1:
        return _pass_once(net, params, X, processes=1)
    if not _kept.lock.acquire(blocking=False):
        # Another thread is using the kept engine: a fresh one for this call.
        return _pass_once(net, params, X, processes=None)
    try:
        engine = _engine_for(net, dtype, N)
        if N <= engine.max_samples:
            out = engine.forward(params, X)
        else:
            out = np.empty((N, *net.output_shape), dtype=dtype)
            block = engine.max_samples // engine.chunk * engine.chunk
            for start in range(0, N, block):
                stop = min(start + block, N)
                out[start:stop] = engine.forward(params, X[start:stop])
        _close_later()
        return out
    finally:
        _kept.lock.release()


def release() -> None:
    """Close the kept engine now, if there is one (its helpers exit)."""
    with _kept.lock:
        _release_locked()


def _pass_once(net: Sequential, params: list[np.ndarray], X: np.ndarray,
               processes: int | None) -> np.ndarray:  # fmt: skip
    """A forward pass through an engine of its own, bound to ``X`` itself, closed after."""
    engine = Engine(net, X.dtype, max(1, X.shape[0]), fixed_inputs=X, cache_bytes=0,
                    processes=processes)  # fmt: skip
    try:
        return engine.forward(params, X)
    finally:
        engine.close()


def _engine_for(net: Sequential, dtype: np.dtype, N: int) -> Engine:
    """The kept engine if it fits a pass over ``N`` samples the way a fresh one would (same
    stack, dtype and chunk size), else a new one, kept. Called with the lock held."""
    per_sample = math.prod(net.input_shape) * dtype.itemsize
    wanted = min(N, max(MIN_SAMPLES_TO_SHARE, BLOCK_BYTES // per_sample))
    engine = _kept.engine
    if engine is not None and _kept.key == (net, dtype) and _same_chunks(engine, wanted):
        return engine
    _release_locked()
    engine = Engine(net, dtype, wanted, cache_bytes=0, forward_only=True)
    _kept.engine, _kept.key = engine, (net, dtype)
    return engine


def _same_chunks(engine: Engine, wanted: int) -> bool:
    """Whether ``engine`` cuts ``wanted`` samples into the chunks an engine made for exactly
    ``wanted`` would: its chunk size is then that of the shapes alone, not cut down to its own
    ``max_samples``, and no larger than ``wanted``."""
    if wanted > engine.max_samples:
        return False
    if wanted == engine.max_samples:
        return True
    return engine.chunk < engine.max_samples and engine.chunk <= wanted


def _close_later() -> None:
    """(Re)start the timer that closes the kept engine. Called with the lock held."""
    if _kept.timer is not None:
        _kept.timer.cancel()
    timer = threading.Timer(KEEP_SECONDS, _close_if_idle)
    timer.daemon = True
    _kept.timer = timer
    timer.start()


def _close_if_idle() -> None:
    with _kept.lock:
        if _kept.timer is threading.current_thread():  # not restarted since
            _release_locked()


def _release_locked() -> None:
    if _kept.timer is not None and _kept.timer is not threading.current_thread():
        _kept.timer.cancel()
    _kept.timer = None
    if _kept.engine is not None:
        _kept.engine.close()
    _kept.engine = _kept.key = None


def _forget_in_child() -> None:
    """In a process forked from this one, the kept engine's helpers are not ours, the lock may
    have been held by a thread that does not exist here, and there is no timer: start afresh
    (the engine's finalizers leave the parent's helpers alone)."""
    global _kept
    _kept = _Kept()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
