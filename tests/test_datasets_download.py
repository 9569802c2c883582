"""tinycnn.datasets.fetch: the real download code against a local HTTP server on 127.0.0.1
serving files the test makes, with the table of sizes and checksums replaced by the test's own.
Good files, wrong bytes, a connection dropped mid-file, no server; the cache is read again
without the network, and nothing is left in it after a failure. No test uses the internet."""

from __future__ import annotations

import gzip
import hashlib
import socket

import numpy as np
import pytest
from conftest import LocalServer, idx_bytes, idx_set

from tinycnn import datasets
from tinycnn.datasets import DatasetError, fetch, load_dataset
from tinycnn.datasets import download as dl


def gz_files(**kwargs) -> dict[str, bytes]:
    arrays = idx_set(**kwargs)
    return {f"{name}.gz": gzip.compress(idx_bytes(a), mtime=0) for name, a in arrays.items()}


@pytest.fixture
def server(monkeypatch):
    """A local server with a small MNIST-style set, and "mnist" in the table pointed at it with
    the files' own sizes and checksums (SHA-256 for the images, MD5 for the labels)."""
    files = gz_files()
    local = LocalServer(files)
    table = {
        name: dl.Checked(len(data), ("sha256", hashlib.sha256(data).hexdigest()))
        if "images" in name
        else dl.Checked(len(data), ("md5", hashlib.md5(data).hexdigest()))
        for name, data in files.items()
    }
    monkeypatch.setitem(dl.SOURCES, "mnist", dl.Source(local.url, table))
    monkeypatch.setattr(dl, "TIMEOUT_SECONDS", 10)
    yield local
    local.stop()


def cache_contents(home) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []


def test_fetch_downloads_checks_and_then_reads_the_cache_offline(server, tmp_path):
    home = tmp_path / "cache"
    folder = fetch("mnist", data_home=home)
    assert folder == home / "mnist"
    assert sorted(server.requests) == sorted(server.files)
    for name, data in server.files.items():
        assert (folder / name).read_bytes() == data
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left
    server.stop()  # no network from here on
    assert fetch("mnist", data_home=home) == folder


def test_load_dataset_by_name_fetches_once_into_tinycnn_data(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYCNN_DATA", str(tmp_path / "env-cache"))
    X, y, info = load_dataset("mnist")
    assert X.shape == (80, 1, 8, 8) and (info.n_test, info.split) == (20, "t10k")
    assert info.class_names == tuple("0123456789")
    arrays = idx_set()
    np.testing.assert_array_equal(y[:60], arrays["train-labels-idx1-ubyte"])
    n_requests = len(server.requests)
    server.stop()
    X2, y2, _ = load_dataset("mnist")
    np.testing.assert_array_equal(X2, X)
    assert len(server.requests) == n_requests


def test_a_damaged_cached_file_is_fetched_anew(server, tmp_path):
    folder = fetch("mnist", data_home=tmp_path)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(b"\x00" * target.stat().st_size)  # right size, wrong bytes
    server.requests.clear()
    fetch("mnist", data_home=tmp_path)
    assert server.requests == ["t10k-labels-idx1-ubyte.gz"]
    assert target.read_bytes() == server.files["t10k-labels-idx1-ubyte.gz"]


def _failure_cases(server, case: str) -> type:
    name = "train-images-idx3-ubyte.gz"
    if case == "wrong bytes":
        data = bytearray(server.files[name])
        data[len(data) // 2] ^= 0xFF
        server.files[name] = bytes(data)
        return DatasetError
    if case == "too many bytes":
        server.files[name] += b"more"
        return DatasetError
    if case == "dropped connection":
        server.behaviour[name] = "drop"
        return OSError
    if case == "not found":
        del server.files[name]
        return OSError
    raise AssertionError(case)


FAILURES = ["wrong bytes", "too many bytes", "dropped connection", "not found"]


@pytest.mark.parametrize("case", FAILURES)
def test_a_failed_download_names_the_url_and_leaves_nothing(server, tmp_path, case):
    error = _failure_cases(server, case)
    home = tmp_path / "cache"
    with pytest.raises(error) as info:
        fetch("mnist", data_home=home)
    message = str(info.value)
    assert server.url + "train-images-idx3-ubyte.gz" in message
    assert "by hand" in message and str(home / "mnist") in message
    assert cache_contents(home) == []  # all or nothing: not even the good files stay


def test_no_server_is_an_oserror_naming_the_url(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    home = tmp_path / "cache"
    with pytest.raises(OSError, match="could not download") as info:
        fetch("kmnist", data_home=home, base_url=url)
    assert url + "train-images-idx3-ubyte.gz" in str(info.value)
    assert cache_contents(home) == []
    assert not home.exists()


def test_base_url_is_joined_with_the_canonical_names(server, tmp_path):
    moved = LocalServer(server.files)  # a mirror elsewhere; the table's checksums still apply
    try:
        fetch("mnist", data_home=tmp_path, base_url=moved.url.rstrip("/"))
        assert sorted(moved.requests) == sorted(server.files) and server.requests == []
    finally:
        moved.stop()


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    fetch("mnist", data_home=tmp_path, progress=True)
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"name": "cifar10"}, ValueError, "name must be one of mnist, fashion-mnist, kmnist"),
        ({"name": "mnist", "base_url": "ftp://x/"}, ValueError, "base_url"),
        ({"name": "mnist", "base_url": 3}, ValueError, "base_url"),
        ({"name": "mnist", "data_home": 3}, TypeError, "data_home"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        fetch(**kwargs)


def test_the_table_covers_every_fetched_set():
    # Four files each, their canonical names, a size and a checksum of a known kind.
    assert set(dl.SOURCES) == set(datasets.FETCHED_DATASETS) == {"mnist", "fashion-mnist", "kmnist"}
    for source in dl.SOURCES.values():
        assert source.base_url.startswith(("http://", "https://"))
        assert sorted(source.files) == sorted(f"{n}.gz" for n in datasets.idx.IDX_FILES)
        for checked in source.files.values():
            algorithm, digest = checked.checksum
            assert checked.size > 0
            assert len(digest) == hashlib.new(algorithm).digest_size * 2
            int(digest, 16)
