"""The sealed container of model files and checkpoints: named arrays plus a JSON config in one
``.npz``, never unpickled. It knows nothing of estimators: a writer hands it a config (a JSON
object) and arrays, a reader gets them back after every structural check.

Layout (a ZIP archive, readable by ``np.load(path, allow_pickle=False)``):

- ``config.npy``: the JSON config as a ``uint8`` array of UTF-8 bytes, a JSON object with at
  least ``format`` (``"tinycnn-model"``), ``format_version`` (an int) and ``arrays``, which
  :func:`pack` fills with the ``{"shape": [...], "dtype": "<f8"}`` of every other member;
- ``<name>.npy`` for each array: plain numbers or strings (no objects, no structured dtypes),
  C order, stored uncompressed, with a fixed timestamp (the same content gives the same bytes).

The archive's comment holds ``tinycnn-sha256:`` and the SHA-256 of every byte before it, so any
damage (a flipped bit, a truncation) is detected before anything is parsed. :func:`unpack` then
checks every member's ``.npy`` header against the bytes that hold it (a crafted header cannot
make it allocate more than the file holds) and against the config's ``arrays``, and refuses a
member listed twice, missing, unlisted or compressed. Every failure is a
:class:`tinycnn.ModelFileError` naming the file. :func:`write` puts the bytes on disk by the writer
rule of ``tinycnn._files``: a temporary file beside the target, flushed, renamed over it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Collection
from typing import Any

import numpy as np

from .._files import write_bytes
from .._npy import read_header_fields
from ..errors import ModelFileError
from ._json import is_int

FORMAT = "tinycnn-model"
SEAL_PREFIX = b"tinycnn-sha256:"
SEAL_LENGTH = len(SEAL_PREFIX) + 64
MAX_CONFIG_BYTES = 1 << 24
# A fixed timestamp: the same model always gives the same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def pack(config: dict[str, Any], members: dict[str, np.ndarray]) -> bytes:
    """The sealed bytes of ``config`` and ``members``; ``config["arrays"]`` is set to the shape
    and dtype of every member. A member of an unstorable dtype raises ``TypeError``."""
    listing = {}
    for name, value in members.items():
        if value.dtype.hasobject or value.dtype.kind not in "biufU":
            raise TypeError(f"cannot store {name} of dtype {value.dtype} in a model file")
        listing[name] = {"shape": list(value.shape), "dtype": value.dtype.str}
    config["arrays"] = listing
    config_bytes = json.dumps(config, sort_keys=True).encode("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.comment = b"\0" * SEAL_LENGTH  # placeholder of the seal's length
        for name, value in [("config", np.frombuffer(config_bytes, np.uint8)), *members.items()]:
            with archive.open(zipfile.ZipInfo(name + ".npy", ZIP_DATE), "w") as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
    body = buffer.getvalue()[:-SEAL_LENGTH]
    return body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode("ascii")


def write(path: Any, data: bytes) -> None:
    """Write ``data`` to ``path`` by the writer rule (atomic: the old file or the new one)."""
    write_bytes(path, data)


def read_bytes(path: Any) -> bytes:
    """The bytes of ``path``; ``FileNotFoundError``/``IsADirectoryError`` propagate as they are."""
    with open(os.fspath(path), "rb") as handle:
        return handle.read()


def unpack(
    path: str, data: bytes, versions: Collection[int]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(config, arrays)`` from a file's bytes after every structural check; ``versions`` are
    the ``format_version`` values the caller reads. Raises :class:`tinycnn.ModelFileError`
    naming ``path`` for anything malformed."""
    return _Unpacker(path, data).unpack(versions)


class _Unpacker:
    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = data

    def fail(self, reason: str) -> ModelFileError:
        return ModelFileError(self.path, reason)

    def unpack(self, versions: Collection[int]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self.check_seal()
        try:
            npz = np.load(io.BytesIO(self.data), allow_pickle=False)
        except Exception as exc:
            raise self.fail(f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise self.fail("not an .npz archive of arrays")
        with npz:
            self.npz = npz
            config = self.read_config(versions)
            return config, self.read_arrays(config)

    def check_seal(self) -> None:
        data = self.data
        if len(data) < SEAL_LENGTH + 22:  # 22: the smallest ZIP end record
            raise self.fail(f"only {len(data)} bytes: empty or truncated")
        seal = data[-SEAL_LENGTH:]
        if not seal.startswith(SEAL_PREFIX):
            raise self.fail(
                "no tinycnn checksum at its end: truncated, damaged, or not written by tinycnn"
            )
        digest = hashlib.sha256(data[:-SEAL_LENGTH]).hexdigest().encode("ascii")
        if seal[len(SEAL_PREFIX) :] != digest:
            raise self.fail("checksum mismatch: the file is damaged")

    def member_header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """``(shape, dtype)`` from a member's .npy header, read without its data."""
        info = self.npz.zip.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise self.fail(f"member {name!r} is compressed; tinycnn stores arrays uncompressed")
        with self.npz.zip.open(info) as member:
            try:
                shape, fortran, dtype = read_header_fields(member)
            except ValueError as exc:
                raise self.fail(f"member {name!r} is not a .npy array ({exc})") from None
            offset = member.tell()
        if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields or dtype.subdtype:
            raise self.fail(f"member {name!r} has dtype {dtype}: only plain numbers/strings")
        if fortran and len(shape) > 1:
            raise self.fail(f"member {name!r} is stored in Fortran order")
        nbytes = math.prod(shape) * dtype.itemsize
        # Never allocate more than the file holds: a crafted header cannot claim terabytes.
        if offset + nbytes != info.file_size or info.file_size > len(self.data):
            raise self.fail(
                f"member {name!r} claims shape {shape} of {dtype} ({nbytes} bytes) but holds "
                f"{info.file_size - offset}"
            )
        return shape, dtype

    def load_member(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        got_shape, got_dtype = self.member_header(name)
        if got_shape != shape or got_dtype.str != dtype:
            raise self.fail(
                f"member {name!r} has shape {got_shape} and dtype {got_dtype.str}, but the config "
                f"says {shape} and {dtype}"
            )
        value = self.npz[name]
        if value.shape != shape or value.dtype.str != dtype:  # belt and braces
            raise self.fail(f"member {name!r} does not match its header")
        return value

    def read_config(self, versions: Collection[int]) -> dict[str, Any]:
        names = self.npz.zip.namelist()
        if len(names) != len(set(names)):
            raise self.fail("the archive lists a member twice")
        if "config" not in self.npz.files:
            raise self.fail("no 'config' member")
        shape, dtype = self.member_header("config")
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_CONFIG_BYTES:
            raise self.fail(f"the config member has shape {shape} and dtype {dtype}")
        raw = self.load_member("config", shape, dtype.str).tobytes()
        try:
            config = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise self.fail(f"the config is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise self.fail("the config is not a JSON object")
        if config.get("format") != FORMAT:
            raise self.fail(f"format is {config.get('format')!r}, not {FORMAT!r}")
        version = config.get("format_version")
        if not is_int(version) or version not in versions:
            raise self.fail(
                f"format_version {version!r} is not supported (this tinycnn reads "
                f"{', '.join(str(v) for v in sorted(versions))})"
            )
        if not isinstance(config.get("arrays"), dict):
            raise self.fail("config['arrays'] is missing or not a dict")
        return config

    def read_arrays(self, config: dict[str, Any]) -> dict[str, np.ndarray]:
        listed = config["arrays"]
        present = set(self.npz.files) - {"config"}
        missing = sorted(set(listed) - present)
        unlisted = sorted(present - set(listed))
        if missing:
            raise self.fail(f"members listed in the config are missing: {missing}")
        if unlisted:
            raise self.fail(f"members not listed in the config: {unlisted}")
        arrays = {}
        for name, entry in listed.items():
            if not isinstance(entry, dict) or set(entry) != {"shape", "dtype"}:
                raise self.fail(f"config entry of {name!r} is not {{shape, dtype}}: {entry!r}")
            shape, dtype = entry["shape"], entry["dtype"]
            if not isinstance(shape, list) or not all(is_int(v) and v >= 0 for v in shape):
                raise self.fail(f"config shape of {name!r} is not a list of sizes: {shape!r}")
            if not isinstance(dtype, str):
                raise self.fail(f"config dtype of {name!r} is not a string: {dtype!r}")
            arrays[name] = self.load_member(name, tuple(shape), dtype)
        return arrays
