"""Every file tinycnn writes goes through here: one writer rule, atomic writes, clear errors.

The writer rule (:func:`atomic_path`, and :func:`atomic_write`, :func:`write_bytes`,
:func:`write_json`, :func:`write_npy` built on it), for a destination ``path``:

* a regular file or a missing path: the content goes to a temporary file beside it (in the same
  folder), is flushed to disk, and only then replaces ``path`` with ``os.replace`` (atomic on
  POSIX and Windows): a reader, or a process killed mid-write, sees the old file or the new one,
  never half a file; an existing file keeps its permissions;
* a symlink: it is followed, and its target is written by the same rule (the link stays a link);
* a device, FIFO or other special file (``/dev/null``, ``/dev/stdout``, a named pipe): written
  in place, never replaced by a regular file;
* a folder: refused.

Every error a write meets (a missing folder, a read-only file system, a full disk, a folder in
the way) is raised as the same kind of ``OSError`` with a message naming the user's ``path``,
never the temporary file's name. :func:`check_output` makes the same checks before a command
does its work, and refuses an output that is one of the command's inputs.

A new writer (CSV, PNG, ...) needs only::

    with atomic_write(path, "w") as handle:   # or: with atomic_path(path) as target: ...
        handle.write(text)

Interrupts (Ctrl-C, and SIGTERM when :func:`install_interrupt_handlers` was called, as the
``tinycnn`` command does) that arrive while an atomic write is in progress are held until it
has finished, then raised as :class:`Interrupted` (a ``KeyboardInterrupt``): the file is
complete.

Temporary files are named ``.tinycnn-tmp-*`` and locked (``fcntl.flock``) by their writer for
as long as it writes, so :func:`remove_stale_temporaries` removes only those of dead writers.
:func:`lock_folder` gives one process at a time a folder (a run folder of ``tinycnn train``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

try:  # POSIX; elsewhere there is no locking (and no cleaning of other writers' files)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Temporary files start with this, so leftovers of a killed process can be recognised and removed.
TEMP_PREFIX = ".tinycnn-tmp-"
# The lock file of a folder owned by one process (lock_folder); it stays, the lock goes.
LOCK_NAME = ".tinycnn-lock"


# ---------------------------------------------------------------- the writer rule


def _kind(path: str) -> str:
    """``"missing"``, ``"file"``, ``"folder"`` or ``"special"`` for ``path`` (links followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "special"


def _shown(path: str) -> str:
    """The user's ``path`` as an error shows it: with the target a symlink leads to."""
    if os.path.islink(path):
        return f"{path} (a link to {os.path.realpath(path)})"
    return path


def write_error(exc: OSError, path: str | os.PathLike, verb: str = "write") -> OSError:
    """``exc`` as the same kind of ``OSError``, its message naming ``path`` only."""
    if getattr(exc, "names_user_path", False):
        return exc  # already says what it has to
    path = os.fspath(path)
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    code = exc.errno
    if code == errno.ENOENT and not os.path.isdir(folder):
        reason = f"the folder {folder} does not exist"
    elif code == errno.EISDIR or (code is None and os.path.isdir(target)):
        reason = "it is a folder"
    elif code == errno.ENOTDIR:
        reason = f"{folder} is not a folder"
    elif exc.strerror:
        reason = exc.strerror[0].lower() + exc.strerror[1:]
    elif code is None and _nearly_full(folder):
        # NumPy's tofile reports a short write with no errno ("800 requested and 76 written").
        reason = f"no space left on device ({exc})"
        code = errno.ENOSPC
    else:
        reason = str(exc) or type(exc).__name__
    cls = type(exc) if type(exc).__module__ == "builtins" else OSError
    try:
        new = cls(f"cannot {verb} {_shown(path)}: {reason}")
    except TypeError:  # pragma: no cover - an OSError subclass with another signature
        new = OSError(f"cannot {verb} {_shown(path)}: {reason}")
    new.errno = code
    new.names_user_path = True
    return new


def _nearly_full(folder: str) -> bool:
    try:
        fs = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return fs.f_bavail * fs.f_frsize < (1 << 20)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, hold_interrupts: bool = True) -> Iterator[str]:
    """Yield the path a writer should fill for the destination ``path``, by the writer rule of
    the module docstring: a temporary file beside ``path`` (or beside a symlink's target) that is
    flushed and renamed onto it when the block ends without error, and removed otherwise; or,
    for a device/FIFO, the path itself. Errors name ``path``, never the temporary file.

    ``hold_interrupts=False`` is for a long writer (a download): an interrupt then abandons the
    block's work at once (the destination stays as it was); only the final rename is held."""
    path = os.fspath(path)
    target = os.path.realpath(path)  # a symlink's (final) target; the path itself otherwise
    kind = _kind(target)
    if kind == "folder":
        raise write_error(IsADirectoryError(errno.EISDIR, "Is a directory"), path)
    if kind == "special":
        # Nothing to keep whole, and an interrupt must still end a write to a FIFO that no
        # one reads: not held.
        try:
            yield target
        except OSError as exc:
            raise write_error(exc, path) from None
        return
    with _holding_interrupts() if hold_interrupts else contextlib.nullcontext():
        with _temporary_beside(target, path) as tmp:
            try:
                yield tmp
                with _holding_interrupts():  # nested: raised by the outermost hold
                    with open(tmp, "rb+") as written:
                        os.fsync(written.fileno())
                    os.replace(tmp, target)
            except OSError as exc:
                raise write_error(exc, path) from None
        _fsync_folder(os.path.dirname(target))


@contextlib.contextmanager
def _temporary_beside(target: str, shown: str) -> Iterator[str]:
    """A new, locked ``.tinycnn-tmp-*`` file in ``target``'s folder, with the permissions the
    target has (or a plain ``open`` would give); removed on error, unlocked when done."""
    folder = os.path.dirname(target)
    while True:
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=TEMP_PREFIX, suffix=os.path.basename(target), dir=folder
            )
        except OSError as exc:
            raise write_error(exc, shown) from None
        if fcntl is None:
            break
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A cleaner may have removed the file between its creation and the lock: then retry.
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        try:
            mode = os.stat(target).st_mode & 0o777
        except FileNotFoundError:
            # mkstemp creates the file private (0600); give it what a plain open() would.
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    finally:
        os.close(fd)  # releases the lock


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable; not every platform can open a folder, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` to write by the writer rule (``mode`` ``"wb"`` or ``"w"``): the file is
    complete when the block ends without error, and left as it was otherwise."""
    with atomic_path(path) as tmp:
        try:
            handle = open(tmp, mode)
        except OSError as exc:
            raise write_error(exc, path) from None
        with handle:
            yield handle


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` by the writer rule."""
    with atomic_write(path) as handle:
        handle.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` by the writer rule."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array in ``.npy`` format to exactly ``path`` (no suffix added), by the writer
    rule."""
    with atomic_write(path) as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)


# ---------------------------------------------------------------- outputs of a command


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are the same existing file (through links and other names)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    path: str | os.PathLike, inputs: Mapping[str, str | os.PathLike] = {}, name: str = "output"
) -> None:
    """Refuse, before any work is done, an output ``path`` that the writer rule cannot write
    (a folder, a missing folder) or that is one of the command's ``inputs`` (``{"--model":
    path, ...}``): ``IsADirectoryError``/``FileNotFoundError`` or ``ValueError`` naming
    ``name``, the path and the input."""
    path = os.fspath(path)
    target = os.path.realpath(path)
    if _kind(target) == "folder":
        raise IsADirectoryError(f"{name} {_shown(path)}: it is a folder; name a file in it")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{name} {_shown(path)}: the folder {folder} does not exist")
    if _kind(target) == "special":
        return  # /dev/null and the like: written in place, and never an input worth guarding
    for option, source in inputs.items():
        if same_file(path, source):
            raise ValueError(
                f"{name} {path} is the {option} file {os.fspath(source)}: writing it would "
                f"destroy it; choose another {name}"
            )


# ---------------------------------------------------------------- folders and temporaries


class FolderBusyError(OSError):
    """Another live process holds the folder's lock (see :func:`lock_folder`); ``pid`` is its
    process id, or None when it could not be read."""

    def __init__(self, folder: str, pid: int | None) -> None:
        self.folder, self.pid = folder, pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{folder} is in use by {holder}")


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike) -> Iterator[None]:
    """Own ``folder`` for the block: an exclusive ``fcntl.flock`` on its ``.tinycnn-lock``
    file, which holds this process's pid. The kernel releases the lock when the process ends,
    however it ends. Raises :class:`FolderBusyError` at once if a live process holds it."""
    folder = os.fspath(folder)
    if fcntl is None:  # pragma: no cover - no flock: no locking
        yield
        return
    lock_path = os.path.join(folder, LOCK_NAME)
    try:
        # No O_TRUNC: opening must not touch the holder's pid.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(exc, folder, verb="lock") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(folder, _holder_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiter)


def _holder_pid(fd: int) -> int | None:
    """The pid a lock file holds; its holder writes it just after locking, so wait briefly."""
    import time

    for _ in range(50):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete the ``.tinycnn-tmp-*`` files in ``folder`` that no live writer holds (those a
    killed writer left); a file a writer is still filling is locked by it and kept."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if not (entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False)):
                continue
            with contextlib.suppress(OSError):
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    if fcntl is not None:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: BlockingIOError
                    os.remove(entry.path)
                finally:
                    os.close(fd)


# ---------------------------------------------------------------- interrupts


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM, raised between writes; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class _Held:
    depth = 0  # writes in progress (nested atomic_path blocks)
    signum: int | None = None  # an interrupt that arrived during one
    owner: int | None = None  # the pid that installed the handlers


@contextlib.contextmanager
def _holding_interrupts() -> Iterator[None]:
    _Held.depth += 1
    try:
        yield
    finally:
        _Held.depth -= 1
        if _Held.depth == 0 and _Held.signum is not None:
            signum, _Held.signum = _Held.signum, None
            raise Interrupted(signum)  # the interrupt wins over a failed write's error


def _on_interrupt(signum: int, frame: Any) -> None:
    if os.getpid() != _Held.owner:
        # A process forked from the owner (a helper): the signal ends it the default way.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _Held.depth:
        _Held.signum = _Held.signum or signum  # raised when the write has finished
        return
    raise Interrupted(signum)


def install_interrupt_handlers() -> None:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` in this process, held back while a
    write is in progress. Call from the main thread (the ``tinycnn`` command does)."""
    _Held.owner = os.getpid()
    for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if signum is not None:
            signal.signal(signum, _on_interrupt)
