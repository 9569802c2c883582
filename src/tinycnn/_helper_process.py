"""A helper process forked from this one, to put a second core to work on NumPy code.

Python threads cannot do it for tinycnn's training step: it is a hundred NumPy calls of 5-30 us
each per epoch, and the GIL changes hands at every call (measured: two threads are slower than
one). A forked process has its own interpreter, and at fork it shares every array of its parent
(copy-on-write), so it starts in about a millisecond with the unfolded windows already there.

The protocol is two pipes and one byte each way: the parent writes a job code, the helper runs
``job(code)`` (which reads and writes memory the two processes share, see :class:`SharedArena`)
and answers ``b"d"`` (done) or ``b"e"`` (it raised). Each side watches its pipe for a
few milliseconds (:data:`SPIN_SECONDS`) before it sleeps in a blocking read: waking a process
asleep on a pipe took about 120 us a round trip here (up to 300 us for the write alone on a
busy machine), a watching one about 12 us, and a training step hands over twice a batch. The
pipe stays the only signal, so nothing is lost whichever side is asleep. The helper ignores
Ctrl-C (the parent handles it), never runs its parent's cleanup code (it leaves by
``os._exit``), and exits when asked or when its parent is gone (its pipe then reads as closed),
so a killed parent leaves no helper behind. A helper that dies or stops answering is noticed
by the parent, which then does the helper's share itself: results do not depend on whether a
helper answered.
"""

from __future__ import annotations

import mmap
import os
import queue
import select
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

_DONE, _FAILED, _QUIT = b"d", b"e", b"q"

# How long each side polls its pipe before sleeping on it: the helper after a job (the
# parent's update and next batch between two calls of mini-batch training took 1-2 ms), the
# parent while its helper finishes a share.
SPIN_SECONDS = 0.005


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork_helpers() -> bool:
    """Helpers are forked on Linux only: macOS's system libraries are not safe to use after a
    fork, and Windows has no fork."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class SharedArena:
    """Arrays in one block of anonymous shared memory: a process forked afterwards sees the same
    bytes (writes by either are seen by both), unlike ordinary arrays, which fork copies."""

    ALIGN = 64  # a cache line: no array shares one with another

    def __init__(self, layout: dict[str, tuple[tuple[int, ...], npt.DTypeLike]]) -> None:
        offsets, size = {}, 0
        for name, (shape, dtype) in layout.items():
            offsets[name] = size
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            size += -(-max(nbytes, 1) // self.ALIGN) * self.ALIGN
        self._memory = mmap.mmap(-1, size)  # anonymous, MAP_SHARED, zero-filled
        buffer = np.frombuffer(self._memory, dtype=np.uint8)
        self.arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in layout.items():
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            start = offsets[name]
            view = buffer[start : start + count * dt.itemsize].view(dt).reshape(shape)
            self.arrays[name] = view


class HelperProcess:
    """A forked process that runs ``job(code)`` each time :meth:`start` is called with ``code``
    (0-99); :meth:`wait` returns True once it has finished, False if it failed, died or did not
    answer within ``timeout`` seconds (it is then stopped and never used again)."""

    def __init__(self, job: Callable[[int], None]) -> None:
        to_helper_r, to_helper_w = os.pipe()
        from_helper_r, from_helper_w = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python >= 3.12 warns about forking a process with threads (BLAS has some);
                # the helper runs only NumPy code that already ran, no import, no lock of ours.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            for fd in (to_helper_r, to_helper_w, from_helper_r, from_helper_w):
                os.close(fd)
            raise
        if pid == 0:  # the helper
            os.close(to_helper_w)
            os.close(from_helper_r)
            _serve(job, to_helper_r, from_helper_w)  # never returns
        os.close(to_helper_r)
        os.close(from_helper_w)
        self.pid, self.owner = pid, os.getpid()
        self._to, self._from = to_helper_w, from_helper_r
        self.alive, self.busy = True, False
        self._finalizer = weakref.finalize(self, _stop, pid, self.owner, to_helper_w, from_helper_r)

    def start(self, code: int) -> None:
        if self.busy:
            # The last job's answer was never read (an exception interrupted the caller): the
            # next byte on the pipe would answer the wrong job. Not worth untangling.
            self.close()
        if not self.alive:
            return
        try:
            os.write(self._to, bytes([code]))
            self.busy = True
        except OSError:  # the helper is gone (BrokenPipeError)
            self.close()

    def wait(self, timeout: float) -> bool:
        if not self.alive:
            return False
        poller = select.poll()  # not select.select: it fails on descriptors past 1023
        poller.register(self._from, select.POLLIN)
        ready = _watch(poller, SPIN_SECONDS) or poller.poll(max(0.0, timeout - SPIN_SECONDS) * 1000)
        reply = os.read(self._from, 1) if ready else b""
        if reply in (_DONE, _FAILED):
            self.busy = False
            return reply == _DONE
        self.close()  # died (pipe closed) or hung (timed out, maybe still writing): gone now
        return False

    def close(self) -> None:
        """Stop the helper (idempotent; also done when this object is garbage-collected): it
        gets no more work, and exits and is reaped in the background (:func:`_stop`). A helper
        still in a job (its answer unread: the caller was interrupted, or it hung) may still
        be writing into memory the next call uses: it is killed, and gone when this returns."""
        if self.alive and self.busy and os.getpid() == self.owner:
            _kill(self.pid)
        self.alive, self.busy = False, False
        self._finalizer()


def _serve(job: Callable[[int], None], commands: int, replies: int) -> None:
    """The helper's whole life: run jobs until told to quit or orphaned; then ``os._exit``."""
    status = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        poller = select.poll()
        poller.register(commands, select.POLLIN)
        while True:
            _watch(poller, SPIN_SECONDS)  # then a blocking read, if nothing came meanwhile
            command = os.read(commands, 1)
            if not command or command == _QUIT:
                break
            try:
                job(command[0])
            except BaseException:  # the parent redoes the job; the helper stays usable
                os.write(replies, _FAILED)
            else:
                os.write(replies, _DONE)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


# A helper told to quit gets this long to exit before it is killed.
_EXIT_GRACE_SECONDS = 0.2


def _watch(poller: select.poll, seconds: float) -> list:
    """Poll without sleeping for up to ``seconds``: what ``poller.poll`` reported ready, or
    an empty list."""
    deadline = time.perf_counter() + seconds
    while True:
        ready = poller.poll(0)
        if ready or time.perf_counter() > deadline:
            return ready


def _stop(pid: int, owner: int, to_helper: int, from_helper: int) -> None:
    """Tell the helper to quit and let go of its pipes, then hand it to this process's reaper
    thread (:func:`_hand_to_reaper`), so that the caller does not wait while the helper's
    memory is torn down (2-6 ms measured, more with a large parent); where no thread can be
    started (interpreter shutdown), reap it here."""
    if os.getpid() != owner:  # a copy of this object in a process forked later: not ours
        return
    try:
        os.write(to_helper, _QUIT)
    except OSError:
        pass
    for fd in (to_helper, from_helper):
        try:
            os.close(fd)
        except OSError:
            pass
    if _exited(pid):
        return
    try:
        _hand_to_reaper(pid)
    except RuntimeError:
        _reap(pid)


# This process's reaper: its queue of helpers to reap, and its thread (which a process forked
# later does not have: there the thread reads as not alive, and that process starts its own).
_reaper: tuple[queue.SimpleQueue, threading.Thread] | None = None


def _hand_to_reaper(pid: int) -> None:
    """Queue ``pid`` for the reaper thread, started at the first stop and kept for the next
    ones: starting a thread per stop took 1.5-2.6 ms of the caller's time at the end of each
    ``train_cnn`` call on M (the exiting helper and BLAS's idle threads held both cores), a
    put on a queue microseconds. Raises RuntimeError where no thread can start."""
    global _reaper
    reaper = _reaper
    if reaper is None or not reaper[1].is_alive():
        pids: queue.SimpleQueue = queue.SimpleQueue()
        thread = threading.Thread(target=_reap_forever, args=(pids,), name="tinycnn-reap",
                                  daemon=True)  # fmt: skip
        thread.start()
        reaper = _reaper = (pids, thread)
    reaper[0].put(pid)


def _reap_forever(pids: queue.SimpleQueue) -> None:
    """The reaper thread: reap each queued helper in turn, blocked (not holding the GIL) while
    it waits for the next one or for one to exit."""
    while True:
        _reap(pids.get())


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited, reaping it if so."""
    try:
        return os.waitpid(pid, os.WNOHANG) != (0, 0)
    except ChildProcessError:  # reaped already
        return True


def _reap(pid: int) -> None:
    """Wait for a helper told to quit; an idle one exits within milliseconds, one stuck in a
    job is killed after :data:`_EXIT_GRACE_SECONDS`. Sleeps in the kernel until the helper
    exits (a pidfd), or where there is none polls every millisecond."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here (Linux < 5.3), or reaped already
        _reap_polling(pid)
        return
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited
        if not poller.poll(_EXIT_GRACE_SECONDS * 1000):
            _kill(pid)
            return
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    finally:
        os.close(pidfd)


def _reap_polling(pid: int) -> None:
    """:func:`_reap` by polling ``waitpid`` every millisecond."""
    deadline = time.monotonic() + _EXIT_GRACE_SECONDS
    while not _exited(pid):  # (which reaps it, or finds it reaped already)
        if time.monotonic() > deadline:
            _kill(pid)
            return
        time.sleep(0.001)


def _kill(pid: int) -> None:
    """Kill the helper ``pid`` and reap it (it is gone when this returns)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):  # gone and reaped already
        pass
