"""Full-batch training shared with helper processes (``tinycnn._helper_process``, used by
``tinycnn.workspace``): the same numbers as the plain path, bit-identical from call to call and
whether or not a helper answered, and no process left behind, whatever happens to either side.
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
from conftest import uniform
from test_speed_paths import assert_same_result, copied

import tinycnn
from tinycnn import workspace as workspace_module
from tinycnn._helper_process import HelperProcess, can_fork_helpers
from tinycnn.network import ConvNetSpec, init_params_he, loss_and_grads
from tinycnn.workspace import Workspace, _process_count

pytestmark = pytest.mark.skipif(not can_fork_helpers(), reason="helpers are forked on Linux only")

SPEC = ConvNetSpec(2, 7, 6, n_filters=3, kernel_size=3, stride=1, pad=1, n_outputs=4)


def problem(n: int = 23, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = uniform(rng, n, SPEC.in_channels, SPEC.height, SPEC.width)
    T = rng.dirichlet(np.ones(SPEC.n_outputs), size=n)
    return X, T, init_params_he(SPEC, rng)


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


@pytest.fixture(autouse=True)
def no_helper_outlives_its_test():
    """Every test here must leave no child process behind, running or unreaped."""
    before = set(children_of(os.getpid()))
    yield
    import gc

    gc.collect()  # workspaces a test dropped: their finalizers stop their helpers
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


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])  # windows unfolded per call, or kept
def test_shared_chunks_give_the_plain_paths_numbers(loss, processes, cache_bytes):
    X, T, params = problem()
    ws = Workspace(
        SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, cache_bytes=cache_bytes,
        processes=processes,
    )  # fmt: skip
    assert ws.processes == processes and len(ws._helpers) == processes - 1
    expected = loss_and_grads(params, SPEC, X, T, loss)
    first = copied(ws.loss_and_grads(params, X, T, loss))
    assert_same_result(first, expected, 1e-12, f"{processes} processes")
    for _ in range(3):  # and bit for bit the same at every call
        again = ws.loss_and_grads(params, X, T, loss)
        assert again[0] == first[0]
        for a, b in zip(again[1], first[1]):
            np.testing.assert_array_equal(a, b)
    ws.close()


def test_the_same_process_count_gives_bit_identical_results_in_fresh_workspaces():
    X, T, params = problem()
    results = []
    for _ in range(2):
        ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
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
    monkeypatch.setattr(workspace_module, "HELPER_MIN_GAIN", gain)
    X, T, params = problem()
    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
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
    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
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
        Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2).loss_and_grads(
            params, X, T
        )
    )
    parent = os.getpid()
    real = Workspace._run_share

    def failing_in_helpers(self, *args):
        if os.getpid() != parent:
            raise RuntimeError("a helper's job fails")
        return real(self, *args)

    monkeypatch.setattr(Workspace, "_run_share", failing_in_helpers)
    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
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
        Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3).loss_and_grads(
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
    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3)
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
    assert not helper.alive and wait_until_gone(helper.pid, 5)
    assert time.monotonic() - started < 5


def test_a_call_interrupted_while_its_helper_works_does_not_confuse_the_next(monkeypatch):
    """An exception in the parent's own share (here: Ctrl-C) leaves the helper's answer unread;
    the next call must not take that stale answer for its own."""
    X, T, params = problem()
    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    expected = copied(ws.loss_and_grads(params, X, T))
    real = Workspace._run_share

    def interrupted(self, X, N, loss, slot, share):
        raise KeyboardInterrupt

    monkeypatch.setattr(Workspace, "_run_share", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ws.loss_and_grads(params, X, T)
    monkeypatch.setattr(Workspace, "_run_share", real)
    other = params._replace(W_fc=params.W_fc * 2)  # a different answer is due now
    result = ws.loss_and_grads(other, X, T)
    assert result[0] != expected[0]
    assert_same_result(result, loss_and_grads(other, SPEC, X, T), 1e-12, "after the interrupt")


def test_close_and_garbage_collection_stop_the_helpers():
    X, T, params = problem()
    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3)
    pids = [h.pid for h in ws._helpers]
    assert all(is_running(pid) for pid in pids)
    ws.close()
    assert not any(is_running(pid) for pid in pids) and ws._helpers == [None, None]
    assert ws.loss_and_grads(params, X, T)[0] > 0  # still works, in this process alone

    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
    pid = ws._helpers[0].pid
    del ws
    assert wait_until_gone(pid, 5)


def test_helpers_exit_when_their_parent_is_killed(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        import numpy as np
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_helper_processes import SPEC, problem
        from tinycnn.workspace import Workspace
        X, T, params = problem()
        ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3)
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
    ws = Workspace(SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=2)
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
        ws = Workspace(
            SPEC, X.dtype, len(X), fixed_inputs=X, chunk_size=3, processes=3, fork_helpers=fork
        )
        assert all(h is not None for h in ws._helpers) == fork
        results.append(copied(ws.loss_and_grads(params, X, T)))
        ws.close()
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


def test_short_runs_fork_no_helper(monkeypatch):
    from tinycnn import training

    monkeypatch.setattr(workspace_module, "available_cpus", lambda: 2)
    monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)
    X, T, params = problem(n=1200)  # 9 chunks of up to 141 samples: two processes
    assert SPEC.chunk_size() == 141
    short = training.make_workspace(params, SPEC, X, epochs=training.MIN_EPOCHS_FOR_HELPERS - 1)
    long = training.make_workspace(params, SPEC, X, epochs=training.MIN_EPOCHS_FOR_HELPERS)
    assert short.processes == long.processes == 2
    assert short._helpers == [None] and long._helpers[0] is not None
    long.close()


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


@pytest.mark.parametrize(
    "requested, n_chunks, cache_sized, env, expected",
    [
        (None, 9, True, None, 2),  # digits: 9 cache-sized chunks, 2 CPUs
        (None, 7, True, None, 1),  # fewer than 4 chunks per process
        (None, 157, False, None, 1),  # chunks past the cache size: OpenBLAS threads them
        (None, 9, True, "1", 1),  # TINYCNN_PROCESSES=1: never fork
        (3, 9, True, None, 3),  # asked for (tests)
        (5, 2, False, None, 2),  # never more processes than chunks
    ],
)
def test_process_count_policy(monkeypatch, requested, n_chunks, cache_sized, env, expected):
    monkeypatch.setattr(workspace_module, "available_cpus", lambda: 2)
    if env is None:
        monkeypatch.delenv("TINYCNN_PROCESSES", raising=False)
    else:
        monkeypatch.setenv("TINYCNN_PROCESSES", env)
    assert _process_count(requested, n_chunks, cache_sized) == expected


def test_a_bad_process_count_in_the_environment_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("TINYCNN_PROCESSES", "two")
    with pytest.raises(ValueError, match="TINYCNN_PROCESSES.*'two'"):
        _process_count(None, 9, True)
