"""The one writer rule (``tinycnn._files``): what happens to every kind of destination, errors
that name the user's path, folder locks, cleaning of temporaries, interrupts during a write.

Special files, read-only and full file systems are made for real where the machine allows
(``os.mknod`` and ``mount`` need root), and skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

from tinycnn import _files
from tinycnn._files import TEMP_PREFIX


def temporaries(folder) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(TEMP_PREFIX)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small fitted classifier."""
    pytest.importorskip("sklearn")
    import tinycnn

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 1, 5, 5)), np.arange(12) % 2
    return tinycnn.CNNClassifier(n_filters=2, kernel_size=3, max_iter=1, random_state=0).fit(X, y)


# Linux's memory devices: (1, 3) is /dev/null, (1, 7) /dev/full (every write: "no space left").
NULL, FULL = (1, 3), (1, 7)


def make_device(path, device: tuple[int, int] = NULL) -> None:
    """A character device at ``path`` (a copy of /dev/null by default), or skip. Tests never
    write to the system's own devices: a writer that replaced them would break the machine."""
    if not hasattr(os, "mknod") or not sys.platform.startswith("linux"):
        pytest.skip("device numbers of /dev/null and /dev/full are Linux's")
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*device))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")


# ---------------------------------------------------------------- the writer rule


def test_a_regular_file_is_replaced_atomically_keeping_its_permissions(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    _files.write_json(path, {"x": 1})
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert temporaries(tmp_path) == []


def test_a_device_is_written_in_place_never_replaced(model, tmp_path):
    device = tmp_path / "null"
    make_device(device)
    model.save(device)
    _files.write_npy(device, np.zeros(3))
    assert stat.S_ISCHR(os.lstat(device).st_mode), "the device was replaced by a regular file"
    assert temporaries(tmp_path) == []


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    _files.write_bytes(fifo, b"through the pipe")
    reader.join(timeout=30)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_is_followed_and_its_target_written(model, tmp_path):
    import tinycnn

    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.npz"
    link = tmp_path / "model.npz"
    link.symlink_to(target)  # dangling until the first save
    model.save(link)
    assert link.is_symlink() and target.is_file()
    tinycnn.load(target)
    first = target.read_bytes()
    model.save(link)  # over an existing target: still a link, the target replaced
    assert link.is_symlink() and target.read_bytes() == first
    assert temporaries(tmp_path) == [] and temporaries(tmp_path / "real") == []


def test_a_folder_is_refused_naming_it(tmp_path):
    with pytest.raises(IsADirectoryError, match="it is a folder") as info:
        _files.write_bytes(tmp_path, b"x")
    assert str(tmp_path) in str(info.value) and TEMP_PREFIX not in str(info.value)


def test_a_missing_folder_is_named_not_a_temporary_file(model, tmp_path):
    path = tmp_path / "missing" / "model.npz"
    with pytest.raises(FileNotFoundError) as info:
        model.save(path)
    message = str(info.value)
    assert str(path) in message and "does not exist" in message
    assert TEMP_PREFIX not in message


@contextlib.contextmanager
def mounted_tmpfs(folder, options: str):
    """A small tmpfs mounted on ``folder`` (root only), or skip."""
    if os.geteuid() != 0:
        pytest.skip("mounting a test file system needs root")
    folder.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tinycnn-test", str(folder)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_file_system_is_named(model, tmp_path):
    if os.geteuid() != 0:  # without root a read-only folder is enough
        folder = tmp_path / "ro"
        folder.mkdir()
        os.chmod(folder, 0o555)
        context = contextlib.nullcontext(folder)
    else:  # root writes into any folder: only a read-only file system stops it
        context = mounted_tmpfs(tmp_path / "ro", "ro,size=64k")
    with context as folder:
        path = folder / "model.npz"
        with pytest.raises(OSError) as info:
            model.save(path)
        message = str(info.value)
        assert str(path) in message and TEMP_PREFIX not in message
        assert "read-only" in message or "permission" in message


def test_a_full_disk_is_named_and_leaves_the_old_file(model, tmp_path):
    with mounted_tmpfs(tmp_path / "small", "size=64k") as folder:
        path = folder / "data.npy"
        _files.write_npy(path, np.zeros(10))
        with pytest.raises(OSError) as info:
            _files.write_npy(path, np.zeros(100_000))  # 800 kB on a 64 kB disk
        message = str(info.value)
        assert str(path) in message and "no space left" in message
        assert TEMP_PREFIX not in message
        np.testing.assert_array_equal(np.load(path), np.zeros(10))
        assert temporaries(folder) == []


def test_a_full_device_is_named(tmp_path):
    full = tmp_path / "full"
    make_device(full, FULL)
    with pytest.raises(OSError, match=f"cannot write {full}: no space left"):
        _files.write_bytes(full, b"x" * 10_000)
    assert stat.S_ISCHR(os.lstat(full).st_mode)


# ---------------------------------------------------------------- outputs of a command


def test_check_output_refuses_an_input_through_any_name(tmp_path):
    source = tmp_path / "X.npy"
    np.save(source, np.zeros(3))
    link = tmp_path / "link.npy"
    link.symlink_to(source)
    hard = tmp_path / "hard.npy"
    os.link(source, hard)
    for output in (source, link, hard):
        with pytest.raises(ValueError, match="is the --input file"):
            _files.check_output(output, {"--input": source}, name="--output")
    _files.check_output(tmp_path / "y.npy", {"--input": source}, name="--output")
    with pytest.raises(IsADirectoryError, match="--output"):
        _files.check_output(tmp_path, {}, name="--output")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _files.check_output(tmp_path / "no" / "y.npy", {}, name="--output")


# ---------------------------------------------------------------- locks and temporaries


def test_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    with _files.lock_folder(tmp_path):
        with pytest.raises(_files.FolderBusyError) as info:
            with _files.lock_folder(tmp_path):
                pass
        assert info.value.pid == os.getpid()
    with _files.lock_folder(tmp_path):  # released: free again
        pass


def test_only_temporaries_no_live_writer_holds_are_removed(tmp_path):
    stale = tmp_path / f"{TEMP_PREFIX}left-by-a-killed-writer.npz"
    stale.write_bytes(b"half")
    with _files.atomic_write(tmp_path / "model.npz") as handle:
        handle.write(b"being written")
        _files.remove_stale_temporaries(tmp_path)  # as a second process would, mid-write
        assert not stale.exists()
        assert len(temporaries(tmp_path)) == 1  # the live writer's file is kept
        handle.write(b", finished")
    assert (tmp_path / "model.npz").read_bytes() == b"being written, finished"
    assert temporaries(tmp_path) == []


# ---------------------------------------------------------------- interrupts


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_a_write_lets_it_finish(signum, tmp_path):
    from tinycnn.cli import _interrupts_between_writes

    path = tmp_path / "checkpoint.bin"
    path.write_bytes(b"old")
    before = signal.getsignal(signum)
    with _interrupts_between_writes():
        with pytest.raises(KeyboardInterrupt) as info:
            with _files.atomic_write(path) as handle:
                handle.write(b"first half, ")
                os.kill(os.getpid(), signum)  # handled at once, held until the write ends
                handle.write(b"second half")
        assert info.value.signum == signum
        assert path.read_bytes() == b"first half, second half"
        assert temporaries(tmp_path) == []
        with pytest.raises(KeyboardInterrupt):  # between writes: at once
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) == before


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs POSIX signals")
def test_a_long_writer_may_be_interrupted_at_once(tmp_path):
    from tinycnn.cli import _interrupts_between_writes

    path = tmp_path / "download.gz"
    path.write_bytes(b"old")
    with _interrupts_between_writes():
        with pytest.raises(KeyboardInterrupt):
            with _files.atomic_path(path, hold_interrupts=False) as tmp:
                with open(tmp, "wb") as handle:
                    handle.write(b"part")
                    os.kill(os.getpid(), signal.SIGTERM)
                    handle.write(b" never written")  # pragma: no cover
    assert path.read_bytes() == b"old" and temporaries(tmp_path) == []
