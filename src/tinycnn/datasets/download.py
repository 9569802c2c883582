"""Fetching MNIST, Fashion-MNIST and KMNIST once into a local cache: :func:`fetch`.

Each data set is four IDX files, fetched from ``base_url`` plus its canonical name. Every file is
checked against the size and checksum in :data:`SOURCES`, the one table of what the right bytes
are. None of the three publishers gives a SHA-256, so the table holds the MD5 values that
torchvision's loaders publish for the same files (MD5 is no defence against a forger, but it
does catch a truncated, damaged or substituted download, which is what is asked of it here);
a SHA-256 goes in the same table as ``("sha256", hex)`` wherever a publisher gives one.

A fetch is all or nothing: the missing files are downloaded to temporary files beside their
destination, and only when all of them have the right size and checksum are they renamed into
place (atomically, by ``tinycnn._files.atomic_path``). A network error, a dropped connection or
wrong bytes raise ``OSError`` / :class:`DatasetError` naming the URL and how to place the files
by hand, and leave nothing in the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from .._files import atomic_path
from .core import DatasetError
from .idx import IDX_FILES


class Checked(NamedTuple):
    """What one file must be: its size in bytes and its checksum ``(algorithm, hex digest)``."""

    size: int
    checksum: tuple[str, str]


class Source(NamedTuple):
    """Where a data set lives (``base_url``, its home) and what each of its files must be."""

    base_url: str
    files: dict[str, Checked]


def _md5_files(*rows: tuple[str, int, str]) -> dict[str, Checked]:
    """``{file name: Checked}`` from rows ``(file name, size, MD5 hex digest)``."""
    return {name: Checked(size, ("md5", digest)) for name, size, digest in rows}


# Sizes and checksums of the gzipped files; MD5 values as published with torchvision's loaders.
# MNIST's original home (yann.lecun.com) now refuses most downloads; its files are served
# unchanged from the mirror below, the one torchvision uses.
SOURCES: dict[str, Source] = {
    "mnist": Source(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        _md5_files(
            ("train-images-idx3-ubyte.gz", 9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", 28881, "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", 1648877, "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", 4542, "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "fashion-mnist": Source(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        _md5_files(
            ("train-images-idx3-ubyte.gz", 26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", 29515, "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", 4422102, "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", 5148, "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    "kmnist": Source(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        _md5_files(
            ("train-images-idx3-ubyte.gz", 18165135, "bdb82020997e1d708af4cf47b453dcf7"),
            ("train-labels-idx1-ubyte.gz", 29497, "e144d726b3acfaa3e44228e80efcd344"),
            ("t10k-images-idx3-ubyte.gz", 3041136, "5c965bf0a639b31b8f53240b1b52f4d7"),
            ("t10k-labels-idx1-ubyte.gz", 5120, "7320c461ea6c1c855c0b718fb2a4b134"),
        ),
    ),
}
# Class names in label order 0-9, as the publishers give them.
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}  # fmt: skip
DATA_HOME_VARIABLE = "TINYCNN_DATA"
TIMEOUT_SECONDS = 30
_CHUNK = 1 << 16


def data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``data_home`` if given, else ``$TINYCNN_DATA``, else
    ``~/.cache/tinycnn``."""
    if data_home is not None:
        return Path(data_home)
    env = os.environ.get(DATA_HOME_VARIABLE)
    return Path(env) if env else Path.home() / ".cache" / "tinycnn"


def fetch(
    name: str,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    *,
    progress: bool | None = None,
) -> Path:
    """Download data set ``name`` (``"mnist"``, ``"fashion-mnist"`` or ``"kmnist"``) once; return
    the folder holding its four IDX files.

    Each file comes from ``base_url`` (default: the data set's home in :data:`SOURCES`) plus its
    canonical name (``train-images-idx3-ubyte.gz``, ...) into ``data_home/name`` (see
    :func:`data_home`). Files already there with the right size and checksum are not fetched
    again; a wrong one is fetched anew. ``progress``: a progress bar on stderr (needs tqdm;
    default: when stderr is a terminal). Raises ``ValueError`` for an unknown ``name`` or a
    ``base_url`` that is not http(s):// or file://, ``OSError`` when the server cannot be
    reached or the connection drops, :class:`DatasetError` when the bytes are wrong; each names
    the URL and how to put the files in place by hand, and leaves nothing in the cache.
    """
    if not isinstance(name, str) or name not in SOURCES:
        raise ValueError(f"name must be one of {', '.join(SOURCES)}, got {name!r}")
    source = SOURCES[name]
    if base_url is None:
        base_url = source.base_url
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://", "file:")):
        raise ValueError(f"base_url must be an http://, https:// or file: URL, got {base_url!r}")
    if not base_url.endswith("/"):
        base_url += "/"
    folder = _data_home_arg(data_home) / name
    wanted = [f for f, checked in source.files.items() if not _cached(folder / f, checked)]
    if not wanted:
        return folder
    created = _make_folders(folder)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    try:
        with contextlib.ExitStack() as renames:
            # Every file to a temporary beside its destination; renamed only if all are right.
            for file_name in wanted:
                # Not held: Ctrl-C must stop a download at once (nothing is renamed then).
                tmp = renames.enter_context(atomic_path(folder / file_name, hold_interrupts=False))
                _download(base_url + file_name, tmp, source.files[file_name], show,
                          _by_hand(name, base_url, folder))  # fmt: skip
    except BaseException:
        for made in reversed(created):  # folders this call made and left empty
            with contextlib.suppress(OSError):
                made.rmdir()
        raise
    return folder


def _data_home_arg(value: str | os.PathLike | None) -> Path:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"data_home must be a path or None, got {value!r}")
    return data_home(value)


def _make_folders(folder: Path) -> list[Path]:
    """``mkdir -p folder``; return the folders it created, outermost first."""
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        missing.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _by_hand(name: str, base_url: str, folder: Path) -> str:
    return (
        f"to place the files by hand, download {', '.join(f + '.gz' for f in IDX_FILES)} from "
        f"{base_url} (or a mirror of {name}) into {folder}"
    )


def checksum(path: str | os.PathLike, algorithm: str) -> str:
    """The hex digest of the file at ``path`` with ``hashlib`` algorithm ``algorithm``."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(path: Path, checked: Checked) -> bool:
    """Whether ``path`` holds the right bytes already (a wrong file is then fetched anew)."""
    try:
        if path.stat().st_size != checked.size:
            return False
    except OSError:
        return False
    return checksum(path, checked.checksum[0]) == checked.checksum[1]


def _download(url: str, tmp: str, checked: Checked, show: bool, by_hand: str) -> None:
    """Stream ``url`` into ``tmp``, hashing as it goes; raise unless size and checksum match."""
    algorithm, expected = checked.checksum
    digest = hashlib.new(algorithm)
    received = 0
    bar = _bar(show, checked.size, url.rsplit("/", 1)[-1])
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(
            tmp, "wb"
        ) as out:
            while received <= checked.size:
                chunk = response.read(min(_CHUNK, checked.size + 1 - received))
                if not chunk:
                    break
                received += len(chunk)
                digest.update(chunk)
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc  # incl. refused connections and timeouts
        raise OSError(f"could not download {url} ({reason}); {by_hand}") from None
    finally:
        if bar is not None:
            bar.close()
    if received < checked.size:
        raise OSError(
            f"the download of {url} stopped after {received} of its {checked.size} bytes "
            f"(connection closed); {by_hand}"
        )
    if received > checked.size:
        raise DatasetError(
            f"{url} sent more than the {checked.size} bytes its file has; {by_hand}"
        )
    if digest.hexdigest() != expected:
        raise DatasetError(
            f"the file downloaded from {url} has the wrong {algorithm} checksum "
            f"({digest.hexdigest()}, expected {expected}); {by_hand}"
        )


def _bar(show: bool, total: int, name: str):
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety: the download goes on without it
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr, leave=False)
