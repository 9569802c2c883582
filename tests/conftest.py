"""Shared test helpers: ONE comparison helper for every op, in the style of tinygrad's test_ops.

``check_op`` runs an op in tinycnn and in PyTorch float64 autograd, and compares the forward
output and the gradient of every input; optionally also against the plain-loop ``tinycnn.naive``
version and against central finite differences (``tinycnn.gradcheck.numerical_gradient``).

Inputs are drawn uniformly from [-2, 2] (``uniform``) so that both sides of ReLU are reached.

Relative error, everywhere in these tests, is ``max|actual - expected| / max|expected|`` over the
whole array (``rel_error``): normalising by the array's largest entry rather than entry by entry
keeps near-zero entries (a dead ReLU unit, a pixel no window reaches, a gradient that happens to
cancel) from turning rounding noise into a huge "relative" error. When ``expected`` is all zeros
the absolute error is used.

The data helpers below make the files the data tests read (image folders, IDX files, each
damaged in the ways a user's files are) and serve files from a local HTTP server on 127.0.0.1:
no test reaches the internet.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from hypothesis import settings

from tinycnn import inference
from tinycnn.gradcheck import numerical_gradient

# Two test workers share two cores: one thread each keeps them from fighting over the CPU.
torch.set_num_threads(1)

# deadline=None: timings on a shared 2-core machine are noise, never a test failure.
settings.register_profile("tinycnn", deadline=None, max_examples=30, print_blob=True)
settings.load_profile("tinycnn")


@pytest.fixture(autouse=True)
def no_kept_inference_engine_between_tests():
    """A large forward pass keeps its engine and helper process for a couple of seconds
    (``tinycnn.inference``): closed after every test, so that no test sees another's."""
    yield
    inference.release()


def rel_error(actual, expected) -> float:
    """``max|actual - expected| / max|expected|`` over the array (see the module docstring)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shapes differ: {actual.shape} vs {expected.shape}"
    if actual.size == 0:
        return 0.0
    diff = float(np.max(np.abs(actual - expected)))
    scale = float(np.max(np.abs(expected)))
    return diff / scale if scale > 0 else diff


def assert_close(actual, expected, tol: float, what: str = "value") -> None:
    """Assert ``rel_error(actual, expected) <= tol`` with a message naming ``what``."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    err = rel_error(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def uniform(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """float64 entries uniform in [-2, 2]: both sides of ReLU, magnitudes near 1."""
    return rng.uniform(-2.0, 2.0, size=shape)


@dataclass(frozen=True)
class OpImpl:
    """One implementation of an op as a forward/backward pair of plain functions.

    ``forward(*inputs) -> out`` (an array or a scalar); ``backward(dout, *inputs) -> grads``,
    one gradient per input, ``None`` for an input the op does not differentiate (a target).
    """

    forward: Callable[..., np.ndarray | float]
    backward: Callable[..., Sequence[np.ndarray | None]]


def check_op(
    inputs: Sequence[np.ndarray],
    fast: OpImpl,
    torch_forward: Callable[..., torch.Tensor],
    *,
    naive: OpImpl | None = None,
    finite_differences: bool = False,
    tol: float = 1e-10,
    fd_tol: float = 1e-6,
    seed: int = 0,
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Compare ``fast`` with PyTorch float64 autograd (and with ``naive`` / finite differences).

    A random ``dout`` from [-2, 2] of the output's shape (a scalar for a loss) is back-propagated
    through both; the forward outputs and every input's gradient must agree to ``tol``. Finite
    differences differentiate the scalar ``sum(forward(*inputs) * dout)`` and must agree to
    ``fd_tol``. Returns the fast op's output and gradients.
    """
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    out = np.asarray(fast.forward(*inputs))
    dout = np.asarray(uniform(np.random.default_rng(seed), *out.shape))
    grads = list(fast.backward(dout, *inputs))
    assert len(grads) == len(inputs), "backward must return one gradient (or None) per input"

    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    t_out = torch_forward(*tensors)
    assert_close(out, t_out, tol, "forward vs torch")
    t_out.backward(torch.tensor(dout, dtype=torch.float64))
    for i, (g, t) in enumerate(zip(grads, tensors)):
        if g is not None:
            assert g.shape == inputs[i].shape, f"gradient {i} has shape {g.shape}"
            assert_close(g, t.grad, tol, f"gradient of input {i} vs torch")

    if naive is not None:
        assert_close(out, naive.forward(*inputs), tol, "forward vs naive")
        for i, (g, n) in enumerate(zip(grads, naive.backward(dout, *inputs))):
            if g is not None:
                assert_close(g, n, tol, f"gradient of input {i} vs naive")

    if finite_differences:

        def scalar() -> float:
            return float(np.vdot(np.asarray(fast.forward(*inputs)), dout))

        # Central differences have two errors: truncation, O(h^2), bounded by fd_tol relative to
        # the gradient; and rounding: f = sum(out * dout) is computed to about eps * S, where
        # S = sum|out * dout|, so each difference quotient carries about eps * S / h however
        # small the true gradient entry is (a cancelling sum). That is allowed on top.
        eps = np.finfo(np.float64).eps
        rounding = FD_ROUNDING_FACTOR * eps * float(np.abs(out * dout).sum()) / FD_STEP
        for i, (g, x) in enumerate(zip(grads, inputs)):
            if g is not None:
                numeric = numerical_gradient(scalar, x, h=FD_STEP)
                err = float(np.max(np.abs(g - numeric), initial=0.0))
                allowed = fd_tol * float(np.max(np.abs(numeric), initial=0.0)) + rounding
                assert err <= allowed, (
                    f"gradient of input {i} vs finite differences: max error {err:.3g} > "
                    f"{allowed:.3g} ({fd_tol:g} relative + {rounding:.3g} for rounding)"
                )
    return out, grads


# Finite differences: the step, and how many times eps * sum|out * dout| the rounding of the
# scalar may reach (a few roundings per term, summed).
FD_STEP = 1e-6
FD_ROUNDING_FACTOR = 8


def fill_disk_while_writing(monkeypatch, name_suffix: str = "") -> None:
    """Make tinycnn's atomic writer fail like a full disk: the temporary file of any target whose
    name ends with ``name_suffix`` takes half of what it is given, then ``OSError("disk full")``."""
    import builtins

    import tinycnn._files as files

    class HalfWritten:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError("disk full")

    def open_(file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return HalfWritten(handle) if str(file).endswith(name_suffix) else handle

    monkeypatch.setattr(files, "open", open_, raising=False)


# ---------------------------------------------------------------- data files the tests make


def class_image(k: int, rng: np.random.Generator, size: tuple[int, int], colour: bool):
    """A ``(H, W)`` or ``(H, W, 3)`` uint8 image of class ``k``: a bright square whose place
    (and, in colour, whose channel) tells the class, on a noisy dark background."""
    H, W = size
    shape = (H, W, 3) if colour else (H, W)
    image = rng.integers(0, 60, shape).astype(np.uint8)
    r, c = (k * 3) % max(H - 3, 1), (k * 5) % max(W - 3, 1)
    if colour:
        image[r : r + 4, c : c + 4, k % 3] = 250
    else:
        image[r : r + 4, c : c + 4] = 250
    return image


def make_image_folder(
    root,
    classes=("cat", "dog", "owl"),
    per_class: int = 6,
    sizes=((10, 10),),
    colour: bool = False,
    formats=("png", "jpg"),
    seed: int = 0,
):
    """An image folder in one subfolder per class; file ``i`` of a class has size
    ``sizes[i % len(sizes)]`` and format ``formats[i % len(formats)]``. Returns ``root``."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = class_image(k, rng, sizes[i % len(sizes)], colour)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.{formats[i % len(formats)]}")
    return root


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """``array`` in the IDX format: 00 00, the type code, the number of dimensions, the sizes
    (big-endian 32-bit), the values (big-endian)."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtypes[type_code]).tobytes()


def idx_set(n_train: int = 60, n_test: int = 20, size: int = 8, seed: int = 0):
    """A small MNIST-style data set: ``{canonical name: array}`` of 3 learnable classes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 3
        images = np.stack([class_image(int(k), rng, (size, size), False) for k in labels])
        arrays[f"{part}-images-idx3-ubyte"] = images
        arrays[f"{part}-labels-idx1-ubyte"] = labels
    return arrays


def make_idx_folder(folder, gz: bool = True, **kwargs):
    """Write :func:`idx_set` into ``folder`` (gzipped or not); return ``folder``."""
    import gzip
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in idx_set(**kwargs).items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return folder


DAMAGED_IMAGE_FOLDERS = ("corrupt", "truncated", "bomb", "empty", "one class", "empty class")


def png_bomb(path, side: int = 12_000) -> None:
    """A valid 1-bit PNG of side x side pixels (144 megapixels: past Pillow's warning limit, not
    yet its error limit) that is a few kB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data)
        )

    row = b"\x00" + b"\x00" * (side // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))  # fmt: skip


def damaged_image_folder(tmp_path, case: str):
    """An image folder damaged in one way; returns (folder, the path the error must name)."""
    root = make_image_folder(tmp_path / case, classes=("a", "b"), per_class=2)
    if case == "corrupt":
        bad = root / "b" / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    elif case == "truncated":
        good = (root / "a" / "a_0.png").read_bytes()
        bad = root / "a" / "a_0.png"
        bad.write_bytes(good[: len(good) // 2])
    elif case == "bomb":
        bad = root / "a" / "bomb.png"
        png_bomb(bad)
    elif case == "empty":
        bad = tmp_path / "nothing"
        bad.mkdir()
        root = bad
    elif case == "one class":
        bad = root
        for p in (root / "b").iterdir():
            p.unlink()
        (root / "b").rmdir()
    elif case == "empty class":
        bad = root / "c"
        bad.mkdir()
        (bad / "readme.txt").write_text("no images here")
    return root, bad


def damage_idx_folder(folder, case: str):
    """Damage an IDX folder one way; return the file (or files) the error must name."""
    images, labels = folder / "train-images-idx3-ubyte", folder / "train-labels-idx1-ubyte"
    if case == "truncated":
        data = images.read_bytes()
        images.write_bytes(data[:-7])
        return [images]
    if case == "trailing bytes":
        images.write_bytes(images.read_bytes() + b"\x00")
        return [images]
    if case == "not idx":
        labels.write_bytes(b"P5 this is something else entirely")
        return [labels]
    if case == "labels are images":
        labels.write_bytes(idx_bytes(np.zeros((60, 8, 8), np.uint8)))
        return [labels]
    if case == "images are labels":
        images.write_bytes(idx_bytes(np.zeros(60, np.uint8)))
        return [images]
    if case == "float labels":
        labels.write_bytes(idx_bytes(np.zeros(60), 0x0D))
        return [labels]
    if case == "lengths differ":
        labels.write_bytes(idx_bytes(np.zeros(59, np.uint8)))
        return [images, labels]
    if case == "huge header":
        # announces 10^12 images: refused from the bytes there, nothing of that size allocated
        images.write_bytes(bytes([0, 0, 8, 3]) + np.array([10**9, 1000, 1000], ">u4").tobytes())
        return [images]
    if case == "test size differs":
        (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((20, 9, 9), np.uint8)))
        return [folder / "t10k-images-idx3-ubyte"]
    if case == "missing":
        (folder / "t10k-labels-idx1-ubyte").unlink()
        return ["t10k-labels-idx1-ubyte[.gz]"]
    raise AssertionError(case)


DAMAGED_IDX_FOLDERS = (
    "truncated", "trailing bytes", "not idx", "labels are images", "images are labels",
    "float labels", "lengths differ", "huge header", "test size differs", "missing",
)  # fmt: skip


# ---------------------------------------------------------------- a local HTTP server


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.behaviour[name] == "drop"`` sends half the file under
    the full Content-Length and closes the connection."""

    def do_GET(self):  # noqa: N802 - the name http.server calls
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append(name)
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.behaviour.get(name) == "drop":
            self.wfile.write(data[: len(data) // 2])
        else:
            self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


class LocalServer:
    """An HTTP server on 127.0.0.1 (a free port) in a thread, serving ``files`` ``{name:
    bytes}`` under ``url``; stopped by :meth:`stop`."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files, self.httpd.behaviour, self.httpd.requests = dict(files), {}, []
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def files(self):
        return self.httpd.files

    @property
    def behaviour(self):
        return self.httpd.behaviour

    @property
    def requests(self):
        return self.httpd.requests

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join(timeout=10)
        self.httpd.server_close()
