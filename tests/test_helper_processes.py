"""Calls shared with helper processes (``tinycnn._helper_process``, used by ``tinycnn.engine``)
for full batches and mini-batches of any stack: the same numbers as in one process,
bit-identical from call to call and whether or not a helper answered, and no process left
behind, whatever happens to either side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from stacks import assert_bit_identical, assert_same_result, copied, problem_for

import tinycnn
from tinycnn import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, Sequential, inference
from tinycnn import engine as engine_module
from tinycnn._helper_process import HelperProcess, can_fork_helpers
from tinycnn.engine import Engine

pytestmark = pytest.mark.skipif(not can_fork_helpers(), reason="helpers are forked on Linux only")

NET = Sequential([Conv2d(3, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(4, 2, pad=1), ReLU(),
                  AvgPool2d(2, 1), Flatten(), Dense(5), ReLU(), Dense(4)], (2, 7, 6))  # fmt: skip


def problem(n: int = 23, seed: int = 0):
    return problem_for(NET, n, seed)


def one_process(params, X, T, loss="mse"):
    return Engine(NET, X.dtype, len(X), processes=1).loss_and_grads(params, X, T, loss)


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, zombies included (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


# A test here that runs longer than this is stuck (the slowest takes a few seconds): waiting
# for a helper that will never answer or exit, say, if the code that kills helpers broke.
TEST_SECONDS_LIMIT = 60


class Hung(Exception):
    pass


@pytest.fixture(autouse=True)
def a_hang_fails_the_test():
    """A stuck test fails, naming itself, instead of hanging the suite until CI's limit (the
    alarm's exception interrupts even a blocking wait for a child)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def hung(signum, frame):
        raise Hung(f"the test ran past {TEST_SECONDS_LIMIT} s: stuck")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(TEST_SECONDS_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def no_helper_outlives_its_test():
    """Every test here must leave no child process behind, running or unreaped."""
    before = set(children_of(os.getpid()))
    yield
    import gc

    inference.release()  # the engine a large forward pass keeps, and its helpers
    gc.collect()  # engines a test dropped: their finalizers stop their helpers
    deadline = time.monotonic() + 5
    while (left := set(children_of(os.getpid())) - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"child processes left behind: {sorted(left)}"


def is_running(pid: int) -> bool:
    """False once ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])  # windows unfolded per call, or kept
def test_shared_chunks_give_the_plain_paths_numbers(loss, processes, cache_bytes):
    X, T, params = problem()
    ws = Engine(
        NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, cache_bytes=cache_bytes,
        processes=processes,
    )  # fmt: skip
    assert ws.processes == processes and len(ws._helpers) == processes - 1
    expected = one_process(params, X, T, loss)
    first = copied(ws.loss_and_grads(params, X, T, loss))
    assert_same_result(first, expected, 1e-12, f"{processes} processes")
    for _ in range(3):  # and bit for bit the same at every call
        again = ws.loss_and_grads(params, X, T, loss)
        assert again[0] == first[0]
        for a, b in zip(again[1], first[1]):
            np.testing.assert_array_equal(a, b)
    ws.close()


def test_the_same_process_count_gives_bit_identical_results_in_fresh_engines():
    X, T, params = problem()
    results = []
    for _ in range(2):
        ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
        results.append(copied(ws.loss_and_grads(params, X, T)))
        ws.close()
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gain, kept", [(0.0, False), (1e9, True)])
def test_helpers_that_do_not_pay_are_stopped_after_the_seventh_call(monkeypatch, gain, kept):
    """Calls 2, 4, 6 are timed with the helpers, 3, 5, 7 without; unless the helpers make the
    fastest call at least 1 - HELPER_MIN_GAIN faster they are stopped. Which process computes a
    share never changes the numbers."""
    monkeypatch.setattr(engine_module, "HELPER_MIN_GAIN", gain)
    X, T, params = problem()
    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    first = copied(ws.loss_and_grads(params, X, T))
    for call in range(2, 11):
        result = ws.loss_and_grads(params, X, T)
        assert result[0] == first[0]
        for a, b in zip(result[1], first[1]):
            np.testing.assert_array_equal(a, b)
        assert (ws._helpers[0] is not None) == (kept or call < 7), call
    assert len(ws._probe_times["with"]) == 3 and len(ws._probe_times["alone"]) == 3
    ws.close()


def test_a_killed_helpers_share_is_done_by_the_parent_with_the_same_result():
    X, T, params = problem()
    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    before = copied(ws.loss_and_grads(params, X, T))
    helper = ws._helpers[0]
    os.kill(helper.pid, signal.SIGKILL)
    assert wait_until_gone(helper.pid)
    after = ws.loss_and_grads(params, X, T)
    assert not helper.alive
    assert after[0] == before[0]
    for a, b in zip(after[1], before[1]):
        np.testing.assert_array_equal(a, b)


def test_a_helper_whose_job_raises_stays_usable_and_its_share_is_redone(monkeypatch):
    X, T, params = problem()
    reference = copied(
        Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2).loss_and_grads(
            params, X, T
        )
    )
    parent = os.getpid()
    real = Engine._run_share

    def failing_in_helpers(self, *args):
        if os.getpid() != parent:
            raise RuntimeError("a helper's job fails")
        return real(self, *args)

    monkeypatch.setattr(Engine, "_run_share", failing_in_helpers)
    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    for _ in range(2):
        result = ws.loss_and_grads(params, X, T)
        assert ws._helpers[0].alive  # it said "failed", it did not die
        assert result[0] == reference[0]
        for a, b in zip(result[1], reference[1]):
            np.testing.assert_array_equal(a, b)
    ws.close()


def test_a_fork_that_fails_leaves_its_share_to_the_parent(monkeypatch):
    X, T, params = problem()
    expected = copied(
        Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3).loss_and_grads(
            params, X, T
        )
    )
    forks = []

    def fork_once():
        if forks:
            raise BlockingIOError("Resource temporarily unavailable")
        forks.append(real_fork())
        return forks[-1]

    real_fork = os.fork
    monkeypatch.setattr(os, "fork", fork_once)
    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3)
    monkeypatch.setattr(os, "fork", real_fork)
    assert ws._helpers[0] is not None and ws._helpers[1] is None
    result = ws.loss_and_grads(params, X, T)
    assert result[0] == expected[0]
    for a, b in zip(result[1], expected[1]):
        np.testing.assert_array_equal(a, b)
    ws.close()


def test_a_hung_helper_is_stopped_after_the_timeout_and_its_share_redone():
    started = time.monotonic()
    helper = HelperProcess(lambda code: time.sleep(60))
    helper.start(0)
    assert helper.wait(timeout=0.2) is False
    assert not helper.alive and not is_running(helper.pid)  # it might still write: killed
    assert time.monotonic() - started < 5


def test_a_call_interrupted_while_its_helper_works_does_not_confuse_the_next(monkeypatch):
    """An exception in the parent's own share (here: Ctrl-C) leaves the helper working on a
    call nobody waits for, its answer unread. The next call (whether or not it would use the
    helper: the third call of the probe does not) must neither take that stale answer for its
    own nor let the stale share be written over its own; the helper is stopped first."""
    parent, real = os.getpid(), Engine._run_share
    interrupt = []

    def slow_in_helpers(self, *args):
        if os.getpid() != parent:
            time.sleep(0.5)  # still writing its share when the next call runs
        elif interrupt:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(Engine, "_run_share", slow_in_helpers)
    X, T, params = problem()
    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    expected = copied(ws.loss_and_grads(params, X, T))
    helper = ws._helpers[0]
    interrupt.append(True)
    with pytest.raises(KeyboardInterrupt):
        ws.loss_and_grads(params, X, T)
    interrupt.clear()
    other = [p * 2 if i == 4 else p for i, p in enumerate(params)]  # a different answer is due
    result = ws.loss_and_grads(other, X, T)
    assert result[0] != expected[0]
    assert_same_result(result, one_process(other, X, T), 1e-12, "after the interrupt")
    assert not helper.alive and not is_running(helper.pid)  # killed before the call went on


def test_close_and_garbage_collection_stop_the_helpers():
    X, T, params = problem()
    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3)
    pids = [h.pid for h in ws._helpers]
    assert all(is_running(pid) for pid in pids)
    ws.close()
    assert ws._helpers == [None, None] and all(wait_until_gone(pid, 5) for pid in pids)
    assert ws.loss_and_grads(params, X, T)[0] > 0  # still works, in this process alone

    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    pid = ws._helpers[0].pid
    del ws
    assert wait_until_gone(pid, 5)


def stuck_helper() -> HelperProcess:
    """A helper busy for a minute in the job it was just given."""
    helper = HelperProcess(lambda code: time.sleep(60))
    helper.start(0)
    return helper


def test_a_dropped_helper_is_reaped_without_the_caller_waiting(monkeypatch):
    """A helper dropped without close() (its engine collected) is told to quit and left to
    the reaper thread; one stuck in a job is killed there after the grace period, while the
    caller has long gone on."""
    import gc

    from tinycnn import _helper_process

    monkeypatch.setattr(_helper_process, "_EXIT_GRACE_SECONDS", 1.0)
    stuck = stuck_helper()
    pid = stuck.pid
    del stuck
    gc.collect()
    assert is_running(pid)  # dropped within the grace period, not after it
    assert wait_until_gone(pid, 10)  # then it was killed


def reaper_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "tinycnn-reap" and t.is_alive()]


def test_one_reaper_thread_reaps_every_stopped_helper():
    """The reaper thread starts once and stays for the next stops (no thread start per stop)."""
    helpers = [HelperProcess(lambda code: None) for _ in range(3)]
    for helper in helpers:
        helper.close()
    assert all(wait_until_gone(helper.pid, 5) for helper in helpers)
    assert len(reaper_threads()) == 1


def test_helpers_are_reaped_without_pidfds_too(monkeypatch):
    """Where the OS has no pidfd, the reaper polls: an idle helper and a stuck one go."""
    from tinycnn import _helper_process

    monkeypatch.delattr(_helper_process.os, "pidfd_open", raising=False)
    idle, stuck = HelperProcess(lambda code: None), stuck_helper()
    pids = idle.pid, stuck.pid
    idle.close()
    del stuck  # dropped while in its job: the reaper kills it after the grace period
    assert all(wait_until_gone(pid, 5) for pid in pids)


def test_closing_a_helper_reaps_it_at_once_where_no_thread_can_start(monkeypatch):
    """At interpreter shutdown no thread starts: a process with no reaper yet then reaps the
    helper before close returns."""
    import threading

    from tinycnn import _helper_process

    def no_thread(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(_helper_process, "_reaper", None)
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    helper = HelperProcess(lambda code: None)
    helper.close()
    assert not is_running(helper.pid)


def test_helpers_exit_when_their_parent_is_killed(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        import numpy as np
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_helper_processes import NET, problem
        from tinycnn.engine import Engine
        X, T, params = problem()
        ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3)
        ws.loss_and_grads(params, X, T)
        print(" ".join(str(h.pid) for h in ws._helpers), flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(is_running(pid) for pid in pids)
        proc.kill()
        proc.wait()
        assert all(wait_until_gone(pid) for pid in pids)
    finally:
        proc.kill()


def test_a_process_forked_later_computes_alone_and_leaves_the_parents_helper_alone():
    X, T, params = problem()
    ws = Engine(NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    expected = copied(ws.loss_and_grads(params, X, T))
    pid = os.fork()
    if pid == 0:  # a copy of this process: it must not talk to (or stop) our helper
        code = 1
        try:
            result = ws.loss_and_grads(params, X, T)
            code = 0 if result[0] == expected[0] else 2
            ws.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ws._helpers[0].alive and is_running(ws._helpers[0].pid)
    assert ws.loss_and_grads(params, X, T)[0] == expected[0]
    ws.close()


def test_without_forking_the_same_shares_give_the_same_bits():
    """fork_helpers=False (short runs) keeps the split into shares: identical numbers."""
    X, T, params = problem()
    results = []
    for fork in (True, False):
        ws = Engine(
            NET, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3, fork_helpers=fork
        )
        assert all(h is not None for h in ws._helpers) == fork
        results.append(copied(ws.loss_and_grads(params, X, T)))
        ws.close()
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


def test_short_runs_fork_no_helper(monkeypatch):
    from tinycnn import training

    monkeypatch.setattr(engine_module, "available_cpus", lambda: 2)
    monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)
    X, T, params = problem(n=9 * NET_CHUNK)  # 9 chunks: two processes
    short = training.make_engine(NET, X.dtype, X, epochs=training.MIN_CALLS_FOR_HELPERS - 1)
    long = training.make_engine(NET, X.dtype, X, epochs=training.MIN_CALLS_FOR_HELPERS)
    assert short.processes == long.processes == 2
    assert short._helpers == [None] and long._helpers[0] is not None
    long.close()


def test_short_runs_of_large_calls_fork_helpers(monkeypatch):
    """A call whose samples take MIN_NUMBERS_FOR_HELPERS numbers of buffers is worth a helper
    even in a run of one call; one number less is not."""
    from tinycnn import training

    monkeypatch.setattr(engine_module, "available_cpus", lambda: 2)
    monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)
    X, T, params = problem(n=9 * NET_CHUNK)  # 9 chunks: two processes
    numbers = len(X) * NET.numbers_per_sample(X.dtype)
    monkeypatch.setattr(training, "MIN_NUMBERS_FOR_HELPERS", numbers)
    large = training.make_engine(NET, X.dtype, X, epochs=1)
    monkeypatch.setattr(training, "MIN_NUMBERS_FOR_HELPERS", numbers + 1)
    small = training.make_engine(NET, X.dtype, X, epochs=1)
    assert large.processes == small.processes == 2
    assert large._helpers[0] is not None and small._helpers == [None]
    shared = copied(large.loss_and_grads(params, X, T))
    assert_bit_identical(shared, small.loss_and_grads(params, X, T))
    large.close()


def test_short_runs_count_calls_not_epochs(monkeypatch):
    """With mini-batches an epoch is many calls: one epoch of 8 batches is run long enough."""
    from tinycnn import training

    monkeypatch.setattr(engine_module, "available_cpus", lambda: 2)
    monkeypatch.setattr(engine_module, "can_limit_blas_threads", lambda: True)
    monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)
    batch = 8 * NET_CHUNK  # batches of 8 cache-sized chunks: two processes
    X = np.zeros((8 * batch, *NET.input_shape))
    one_epoch = training.make_engine(NET, X.dtype, X, batch_size=batch, epochs=1)
    short = training.make_engine(NET, X.dtype, X[: 7 * batch], batch_size=batch, epochs=1)
    assert one_epoch.processes == short.processes == 2
    assert one_epoch._helpers[0] is not None and short._helpers == [None]
    one_epoch.close()


NET_CHUNK = Engine(NET, np.float64, 10_000, processes=1).chunk  # cache-sized
# Chunks past the cache size: a sample of this stack takes ~42000 numbers of buffers.
LARGE = Sequential([Conv2d(16, 5, pad=2), ReLU(), Flatten(), Dense(10)], (1, 28, 28))
# Chunks capped below the 64-sample floor: a sample takes ~274000 numbers (the bench's cifar).
HUGE = Sequential(
    [Conv2d(32, 3, pad=1), ReLU(), MaxPool2d(2), Conv2d(64, 3, pad=1), ReLU(), MaxPool2d(2),
     Flatten(), Dense(128), ReLU(), Dense(10)],
    (3, 32, 32),
)  # fmt: skip


@pytest.mark.parametrize(
    "net, max_samples, processes, blas, env, expected",
    [
        # as digits: 9 cache-sized chunks, 2 CPUs
        (NET, 9 * NET_CHUNK, None, True, None, (NET_CHUNK, 2)),
        (NET, 7 * NET_CHUNK, None, True, None, (NET_CHUNK, 1)),  # < 4 chunks per process
        (NET, 9 * NET_CHUNK, None, True, "1", (NET_CHUNK, 1)),  # TINYCNN_PROCESSES=1
        # mini-batches of large chunks: in one process, BLAS threading their products
        (LARGE, 64, None, True, None, (64, 1)),
        (LARGE, 200, None, True, None, (64, 1)),
        # ...unless a batch holds two chunks of MAX_CHUNK_ELEMENTS: 64 samples, chunks of at
        # most 30, so 4 chunks of 16, 2 for each process
        (HUGE, 64, None, True, None, (16, 2)),
        (HUGE, 64, None, True, "1", (30, 1)),  # TINYCNN_PROCESSES=1: 30 + 30 + 4
        (HUGE, 64, None, False, None, (30, 1)),  # BLAS cannot be held to one thread
        (HUGE, 60, None, True, None, (30, 1)),  # less than two chunks' worth of numbers
        # full batch: chunks at the 64-sample floor, shared if BLAS can be held to one thread
        (LARGE, 2000, None, True, "fixed", (64, 2)),
        (LARGE, 2000, None, False, "fixed", (64, 1)),
        (NET, 9 * NET_CHUNK, 3, False, None, (NET_CHUNK, 3)),  # asked for (tests)
        (LARGE, 64, 5, False, None, (64, 1)),  # never more processes than chunks
    ],
)
def test_the_plan_of_chunks_and_processes(monkeypatch, net, max_samples, processes, blas, env,
                                          expected):  # fmt: skip
    monkeypatch.setattr(engine_module, "available_cpus", lambda: 2)
    monkeypatch.setattr(engine_module, "can_limit_blas_threads", lambda: blas)
    fixed = None
    if env == "fixed":  # full-batch training on max_samples samples
        fixed, env = np.zeros((max_samples, *net.input_shape)), None
    if env is None:
        monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)
    else:
        monkeypatch.setenv("TINYCNN_PROCESSES", env)
    engine = Engine(net, np.float64, max_samples, processes=processes, fork_helpers=False,
                    fixed_inputs=fixed, cache_bytes=0)  # fmt: skip
    assert (engine.chunk, engine.processes) == expected


def test_a_mini_batch_is_shared_over_as_many_processes_as_it_holds_chunks_of_the_cap():
    """More CPUs do not change the plan of a batch worth two capped chunks (so neither its
    numbers); a batch worth three takes three processes, each as many chunks; a chunk size
    asked for is kept, in one process."""
    per_sample = engine_module.MAX_CHUNK_ELEMENTS // 30 + 1  # a chunk holds 29 samples
    assert engine_module.mini_batch_plan(64, per_sample, 29, 2) == (2, 16)
    assert engine_module.mini_batch_plan(64, per_sample, 29, 8) == (2, 16)
    assert engine_module.mini_batch_plan(90, per_sample, 29, 8) == (3, 15)
    assert engine_module.mini_batch_plan(90, per_sample, 29, 2) == (2, 23)
    assert engine_module.mini_batch_plan(59, per_sample, 29, 8) == (1, 29)
    assert engine_module.mini_batch_plan(64, per_sample, 29, 8, chunk_size=29) == (1, 29)


def test_a_shared_call_of_large_chunks_runs_blas_on_one_thread_in_every_process(monkeypatch):
    """Two processes each threading their products over both cores would wait on each other:
    while a call is shared, this process's BLAS runs on one thread, and the helper's always."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(engine_module, "available_cpus", lambda: 2)
    monkeypatch.setattr(engine_module, "HELPER_MIN_GAIN", 1e9)  # kept, however slow here
    monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)

    numpy_blas = os.path.dirname(np.__file__)  # numpy's own BLAS (numpy.libs/...)

    def blas_threads() -> int:
        """NumPy's BLAS's threads: the engine's products run there (a BLAS another library
        loaded later, such as SciPy's, is not the engine's and keeps its threads)."""
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        own = [i for i in blas if i["filepath"].startswith(numpy_blas)] or blas
        return max(i["num_threads"] for i in own)

    seen = []
    original = Engine._run_share
    parent = os.getpid()

    def run_share(self, X, T, N, loss, slot, share):
        threads = blas_threads()
        if os.getpid() == parent:
            seen.append(threads)
        elif threads != 1:  # in the helper: fail its job (the parent then redoes the share)
            raise RuntimeError(f"helper BLAS on {threads} threads")
        return original(self, X, T, N, loss, slot, share)

    monkeypatch.setattr(Engine, "_run_share", run_share)
    rng = np.random.default_rng(0)
    X = rng.random((128, *LARGE.input_shape))  # two chunks, full batch
    T = rng.dirichlet(np.ones(10), size=128)
    params = LARGE.init_params(0)
    before = blas_threads()
    engine = Engine(LARGE, X.dtype, 128, fixed_inputs=X)
    assert engine.processes == 2 and engine._helpers[0] is not None
    failed = []
    monkeypatch.setattr(engine._helpers[0], "wait",
                        lambda timeout, w=engine._helpers[0].wait: failed.append(not w(timeout))
                        or not failed[-1])  # fmt: skip
    for _ in range(3):  # the probe's calls: warm-up and with helpers, then alone
        engine.loss_and_grads(params, X, T, "softmax_cross_entropy")
    engine.close()
    assert failed[:2] == [False, False], failed  # the helper's jobs ran on one thread
    assert seen == [1, 1, before, before], seen  # ours too, but not when not shared
    assert blas_threads() == before  # restored after each call


def test_train_cnn_with_helpers_equals_train_cnn_without(monkeypatch):
    """End to end, on digits-sized data with enough chunks for two processes."""
    rng = np.random.default_rng(3)
    X, y = rng.random((700, 1, 8, 8)), rng.random((700, 3))
    results = []
    for processes in ("1", "2"):
        monkeypatch.setenv("TINYCNN_PROCESSES", processes)
        np.random.seed(0)
        results.append(tinycnn.train_cnn(X, y, 5, 0.05, n_filters=8))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_a_bad_process_count_in_the_environment_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("TINYCNN_PROCESSES", "two")
    with pytest.raises(ValueError, match="TINYCNN_PROCESSES.*'two'"):
        Engine(NET, np.float64, 9 * NET_CHUNK, fork_helpers=False)


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_mini_batches_are_shared_through_the_same_mechanism(monkeypatch, loss):
    """No fixed X: each batch is copied where the helpers see it; every batch (and a shorter
    last one) gives the numbers of one process, bit for bit from call to call."""
    monkeypatch.setattr(engine_module, "HELPER_MIN_GAIN", 1e9)  # kept, however slow here
    X, T, params = problem(n=40, seed=5)
    engine = Engine(NET, X.dtype, 12, chunk_size=3, processes=2)
    assert engine.processes == 2 and engine._helpers[0] is not None
    for start in (0, 12, 24, 36):  # batches of 12, 12, 12 and 4 samples
        xb, tb = X[start : start + 12], T[start : start + 12]
        first = copied(engine.loss_and_grads(params, xb, tb, loss))
        assert_same_result(first, one_process(params, xb, tb, loss), 1e-12, f"batch {start}")
        assert_bit_identical(engine.loss_and_grads(params, xb, tb, loss), first)
    assert engine._helpers[0].alive
    assert len(engine.shares(12)) == 2 and len(engine.shares(4)) == 2
    engine.close()


def test_mini_batch_training_with_helpers_equals_training_without(monkeypatch):
    X, T, start = problem(n=60, seed=6)
    results = []
    for processes in (1, 2):
        params = [p.copy() for p in start]
        engine = Engine(NET, X.dtype, 24, chunk_size=3, processes=processes)
        tinycnn.training.train(NET, params, X, T, tinycnn.optim.Adam(0.01), 3, batch_size=24,
                               rng=np.random.default_rng(1), engine=engine)  # fmt: skip
        engine.close()
        results.append(params)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("fixed", [True, False], ids=["X seen by the helpers", "X staged"])
def test_a_forward_pass_is_shared_with_the_same_outputs(fixed):
    """The helpers compute their shares of a forward pass too (X of the engine, or a batch
    copied where they see it): the outputs of one process, bit for bit, also when a helper
    dies and its share is done here."""
    X, _, params = problem(n=31)
    expected = Engine(NET, X.dtype, len(X), chunk_size=4, processes=1).forward(params, X)
    engine = Engine(NET, X.dtype, len(X), fixed_inputs=X if fixed else None, chunk_size=4,
                    processes=2)  # fmt: skip
    helper = engine._helpers[0]
    jobs = []
    original_start = helper.start
    helper.start = lambda code: jobs.append(code) or original_start(code)
    out = engine.forward(params, X)
    assert jobs == [engine_module._FORWARD_JOB + 2 + (0 if fixed else 1)]
    np.testing.assert_array_equal(out, expected)
    os.kill(helper.pid, signal.SIGKILL)
    assert wait_until_gone(helper.pid)
    np.testing.assert_array_equal(engine.forward(params, X), expected)
    assert not helper.alive
    engine.close()


@pytest.fixture
def kept(monkeypatch):
    """``tinycnn.inference`` sharing passes from 64 samples on, between two processes."""
    monkeypatch.setattr(engine_module, "available_cpus", lambda: 2)
    monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)
    monkeypatch.setattr(inference, "MIN_SAMPLES_TO_SHARE", 64)
    inference.release()
    yield inference
    inference.release()


def fresh_forward(params, X):
    """A pass through an engine of its own over X itself, in one process (no engine kept)."""
    return Engine(NET, X.dtype, len(X), fixed_inputs=X, cache_bytes=0, processes=1).forward(
        params, X
    )


def test_small_passes_run_in_one_process_and_keep_nothing(kept):
    X, _, params = problem(n=63)
    before = set(children_of(os.getpid()))
    np.testing.assert_array_equal(kept.forward_pass(NET, params, X), fresh_forward(params, X))
    assert kept._kept.engine is None and set(children_of(os.getpid())) == before


def test_a_large_pass_keeps_its_engine_and_helper_for_the_next_one(kept):
    X, _, params = problem(n=700)
    out = kept.forward_pass(NET, params, X)
    np.testing.assert_array_equal(out, fresh_forward(params, X))
    engine = kept._kept.engine
    assert engine is not None and engine.processes == 2 and engine.runners[0].n_kept_chunks == 0
    helper = engine._helpers[0]
    jobs = []
    original_start = helper.start
    helper.start = lambda code: jobs.append(code) or original_start(code)
    # Fewer samples, cut into the same chunks: the same engine, its helper doing a share.
    assert engine.chunk < 650
    np.testing.assert_array_equal(kept.forward_pass(NET, params, X[:650]),
                                  fresh_forward(params, X[:650]))  # fmt: skip
    assert kept._kept.engine is engine and helper.alive
    assert jobs == [engine_module._FORWARD_JOB + 2 + 1]  # its share, of staged inputs
    # Another dtype: a new engine, and the old one's helper exits.
    X32, params32 = X.astype(np.float32), [p.astype(np.float32) for p in params]
    np.testing.assert_array_equal(kept.forward_pass(NET, params32, X32),
                                  fresh_forward(params32, X32))  # fmt: skip
    assert kept._kept.engine is not engine and wait_until_gone(helper.pid, 5)


@pytest.mark.skipif(not engine_module.can_limit_blas_threads(), reason="needs threadpoolctl")
def test_a_large_pass_of_large_chunks_is_shared_too(kept):
    """Chunks past the cache size (the 64-sample floor of 40x40 images through a 5x5 conv):
    a mini-batch of them stays in one process, a forward pass is shared, BLAS on one thread."""
    net = Sequential([Conv2d(16, 5, pad=2), ReLU(), Flatten(), Dense(3)], (1, 40, 40))
    X, _, params = problem_for(net, 200, 3)
    assert Engine(net, X.dtype, 200).processes == 1  # a training engine for such batches
    out = kept.forward_pass(net, params, X)
    engine = kept._kept.engine
    assert engine.chunk == 64 and engine.processes == 2 and engine._one_blas_thread
    expected = Engine(net, X.dtype, 200, fixed_inputs=X, cache_bytes=0, processes=1).forward(
        params, X
    )
    np.testing.assert_array_equal(out, expected)


def test_a_pass_of_fewer_samples_than_a_chunk_gets_an_engine_of_its_own_size(kept):
    """Reusing an engine with 71-sample chunks for 64 samples would cut them differently from
    a fresh engine (one chunk of 64): a new engine is made instead."""
    X, _, params = problem(n=700)
    kept.forward_pass(NET, params, X)
    engine = kept._kept.engine
    assert engine.chunk == 71
    np.testing.assert_array_equal(kept.forward_pass(NET, params, X[:64]),
                                  fresh_forward(params, X[:64]))  # fmt: skip
    assert kept._kept.engine is not engine and kept._kept.engine.max_samples == 64


def test_the_kept_engine_closes_after_a_while_without_passes(kept, monkeypatch):
    monkeypatch.setattr(inference, "KEEP_SECONDS", 0.1)
    X, _, params = problem(n=700)
    kept.forward_pass(NET, params, X)
    helper, timer = kept._kept.engine._helpers[0], kept._kept.timer
    timer.join(5)  # the timer's thread stops the helper, then lets go of the engine
    assert not timer.is_alive() and wait_until_gone(helper.pid, 5)
    assert kept._kept.engine is None and kept._kept.timer is None


def test_inputs_larger_than_a_block_go_through_in_blocks_with_the_same_bits(kept, monkeypatch):
    """Blocks of whole chunks (4 x 71 samples of a 300-sample engine), so that the chunks fall
    where a fresh engine's do."""
    X, _, params = problem(n=900)
    monkeypatch.setattr(inference, "BLOCK_BYTES", 300 * X[0].nbytes)
    blocks = []
    original = Engine.forward

    def forward(self, p, x):
        blocks.append(len(x))
        return original(self, p, x)

    monkeypatch.setattr(Engine, "forward", forward)
    out = kept.forward_pass(NET, params, X)
    engine = kept._kept.engine
    assert engine.max_samples == 300 and engine.chunk == 71
    assert blocks == [284, 284, 284, 48]
    np.testing.assert_array_equal(out, fresh_forward(params, X))


def test_a_pass_while_another_thread_holds_the_kept_engine_gets_its_own(kept):
    X, _, params = problem(n=700)
    with kept._kept.lock:
        np.testing.assert_array_equal(kept.forward_pass(NET, params, X), fresh_forward(params, X))
        assert kept._kept.engine is None


def test_a_forked_process_starts_without_the_parents_kept_engine(kept):
    X, _, params = problem(n=700)
    kept.forward_pass(NET, params, X)
    with kept._kept.lock:  # held across the fork, as by another thread
        pid = os.fork()
        if pid == 0:  # the child: a fresh, free lock and no engine
            fresh = kept._kept.engine is None and kept._kept.lock.acquire(blocking=False)
            os._exit(0 if fresh else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert kept._kept.engine is not None and kept._kept.engine._helpers[0].alive
