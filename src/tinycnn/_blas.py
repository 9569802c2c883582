"""One BLAS thread per process while helper processes share a call.

OpenBLAS runs a large enough matrix product on every core. When the chunks of a call are
shared between processes, each process already has a core of its own: two processes each
running two BLAS threads on two cores wait on one another at every product (measured: a batch
of 64 of a one-conv stack took 16 ms instead of 3.3 when another process kept one core busy).
So while a call is shared, every process taking part runs its products on one thread.

The thread count is set through threadpoolctl when it is installed (it comes with
scikit-learn); without it the engine shares calls only where the products are too small for
BLAS to thread them (see ``tinycnn.engine``). threadpoolctl is imported here only: the engine
itself needs NumPy alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_UNSET = object()
_controller: Any = _UNSET


def _blas_libraries() -> Any | None:
    """threadpoolctl's handle on the BLAS libraries loaded in this process (found once), or
    None without threadpoolctl or without a BLAS it can set."""
    global _controller
    if _controller is _UNSET:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller = None
        else:
            blas = ThreadpoolController().select(user_api="blas")
            _controller = blas if blas.lib_controllers else None
    return _controller


def can_limit_blas_threads() -> bool:
    """Whether this process can run its BLAS on one thread on demand."""
    return _blas_libraries() is not None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, BLAS runs on one thread (a no-op where that cannot be set)."""
    blas = _blas_libraries()
    if blas is None:
        yield
        return
    with blas.limit(limits=1):
        yield


def set_one_blas_thread() -> None:
    """From now on, BLAS in this process runs on one thread (for a helper process)."""
    blas = _blas_libraries()
    if blas is not None:
        for library in blas.lib_controllers:
            library.set_num_threads(1)
