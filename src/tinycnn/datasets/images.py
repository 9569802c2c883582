"""Image files, read with Pillow (``pip install 'tinycnn[images]'``), and folders of them.

A training folder holds one subfolder per class (the layout of torchvision's ``ImageFolder`` and
Keras' ``image_dataset_from_directory``); the class names are the subfolder names, sorted, and
a class folder's images may sit in folders below it. The rules, the same for training,
``evaluate`` and ``predict``:

* **Which files.** Files whose extension (any case) is one of :data:`IMAGE_EXTENSIONS` are
  images. Hidden files and folders (name starting with ``.``) and files with other extensions
  are skipped and counted. An image file that cannot be decoded is an error naming it, never
  skipped.
* **Grayscale or colour.** One channel when every image file is stored as grayscale (Pillow
  modes ``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``, or a palette whose colours are all grays),
  otherwise three (RGB): grayscale files are then repeated across the channels, and an alpha
  channel is dropped. Pixels are 8-bit values 0-255, as float64.
* **Size.** Every image is resized to ``image_size`` ``(H, W)`` (bilinear, aspect ratio not
  kept, as torchvision's ``Resize((H, W))``); by default the size most of the files have (on a
  tie the smallest of those), refused above :data:`MAX_DEFAULT_SIDE` pixels a side unless
  ``image_size`` is given.
* **Decompression bombs.** Pillow's pixel limit (``Image.MAX_IMAGE_PIXELS``) stays on and its
  warning is an error too: a small file announcing hundreds of megapixels is refused from its
  header, before anything of that size is allocated.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .core import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# Without --image-size, images larger than this on a side are refused: tinycnn trains on small
# images, and a folder of photos would otherwise become gigabytes of float64 pixels.
MAX_DEFAULT_SIDE = 256


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading image files needs Pillow: pip install 'tinycnn[images]'"
        ) from None
    return Image


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name has an image extension and is not hidden."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | os.PathLike) -> tuple[list[Path], int]:
    """The image files under ``folder`` (recursively, sorted, hidden folders left out) and the
    number of files skipped (hidden, or without an image extension)."""
    found: list[Path] = []
    skipped = 0
    for root, dirs, files in os.walk(folder):
        hidden = [d for d in dirs if d.startswith(".")]
        skipped += sum(_count_files(Path(root) / d) for d in hidden)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_image_file(name):
                found.append(Path(root) / name)
            else:
                skipped += 1
    return found, skipped


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _open(path: Path):
    """Open ``path`` with Pillow (header only), a decompression bomb being an error."""
    Image = _pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise OSError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(
            f"{path}: refused as a possible decompression bomb ({exc})"
        ) from None
    except Exception as exc:  # Pillow's decoders raise many types for damaged files
        raise DatasetError(f"{path}: not a readable image ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _is_grayscale(image) -> bool:
    if image.mode in GRAYSCALE_MODES:
        return True
    if image.mode == "P":
        palette = image.getpalette() or []
        rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


def probe_images(paths: Sequence[Path]) -> tuple[int, tuple[int, int]]:
    """Read the headers of ``paths``: ``(channels, (H, W))``, the channel count and default size
    by the rules in the module docstring. Raises :class:`DatasetError` naming an unreadable
    file."""
    sizes: Counter[tuple[int, int]] = Counter()
    gray = True
    for path in paths:
        with _open(path) as image:
            sizes[(image.height, image.width)] += 1
            gray = gray and _is_grayscale(image)
    most = max(sizes.values())
    size = min((s for s, n in sizes.items() if n == most), key=lambda s: (s[0] * s[1], s))
    return (1 if gray else 3), size


def read_image(path: Path, channels: int, image_size: tuple[int, int]) -> np.ndarray:
    """One image file as ``(channels, H, W)`` float64 values 0-255, resized to ``image_size``
    ``(H, W)``. Raises :class:`DatasetError` naming the file when it cannot be decoded."""
    Image = _pillow()
    H, W = image_size
    with _open(path) as image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                converted = image.convert("L" if channels == 1 else "RGB")
                if converted.size != (W, H):
                    converted = converted.resize((W, H), Image.Resampling.BILINEAR)
                pixels = np.asarray(converted, dtype=np.float64)
        except Exception as exc:  # truncated or corrupt data behind a good header
            raise DatasetError(f"{path}: cannot be decoded ({_reason(exc)})") from None
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def read_images(
    paths: Sequence[Path], channels: int, image_size: tuple[int, int]
) -> np.ndarray:
    """``(N, channels, H, W)`` float64: every file of ``paths`` read by :func:`read_image`."""
    H, W = image_size
    X = np.empty((len(paths), channels, H, W))
    for i, path in enumerate(paths):
        X[i] = read_image(path, channels, image_size)
    return X


def check_image_size(image_size: object, name: str = "image_size") -> tuple[int, int] | None:
    """``image_size`` as ``(H, W)`` of two integers >= 1, or ``None``; else ``ValueError`` or
    ``TypeError`` naming ``name`` and the value."""
    if image_size is None:
        return None
    if isinstance(image_size, (str, bytes)) or not isinstance(image_size, Iterable):
        raise TypeError(f"{name} must be a pair (H, W) of integers >= 1, got {image_size!r}")
    values = tuple(image_size)
    if len(values) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    ):
        raise TypeError(f"{name} must be a pair (H, W) of integers >= 1, got {image_size!r}")
    if min(values) < 1:
        raise ValueError(f"{name} must be a pair (H, W) of integers >= 1, got {image_size!r}")
    return int(values[0]), int(values[1])


def check_channels(channels: object) -> int | None:
    """``channels`` as 1 or 3, or ``None``; else ``ValueError`` naming the value."""
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def read_image_folder(
    folder: str | os.PathLike,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], int]:
    """Read a folder of images in one subfolder per class.

    Returns ``X`` ``(N, C, H, W)`` float64 pixel values 0-255 (``C`` and ``(H, W)`` as given by
    ``channels`` and ``image_size``, else decided from the files: module docstring), ``y``
    ``(N,)`` the class names (strings), the sorted class names, and the number of files
    skipped. Raises :class:`DatasetError` naming the folder or file for: no class subfolders,
    only one class, a class folder without images, a file that cannot be decoded, a
    decompression bomb.
    """
    image_size = check_image_size(image_size)
    channels = check_channels(channels)
    folder = Path(folder)
    classes = sorted(
        entry.name for entry in os.scandir(folder) if entry.is_dir() and entry.name[0] != "."
    )
    top_files = [entry for entry in os.scandir(folder) if not entry.is_dir()]
    hidden_dirs = [e for e in os.scandir(folder) if e.is_dir() and e.name.startswith(".")]
    skipped = len(top_files) + sum(_count_files(Path(e.path)) for e in hidden_dirs)
    if not classes:
        loose = sum(1 for e in top_files if is_image_file(e.name))
        hint = f" ({loose} image files lie in it directly)" if loose else ""
        raise DatasetError(
            f"{folder}: no class subfolders{hint}; an image folder holds one subfolder per "
            "class, named after the class, with that class's images in it"
        )
    if len(classes) == 1:
        raise DatasetError(
            f"{folder}: only one class subfolder ({classes[0]!r}); a classifier needs at least "
            "two classes, one subfolder each"
        )
    paths: list[Path] = []
    labels: list[str] = []
    for name in classes:
        found, skipped_here = list_images(folder / name)
        skipped += skipped_here
        if not found:
            raise DatasetError(
                f"{folder / name}: no image files in this class folder (images are "
                f"{', '.join(IMAGE_EXTENSIONS)}; {skipped_here} other files)"
            )
        paths += found
        labels += [name] * len(found)
    detected_channels, default_size = probe_images(paths)
    if image_size is None:
        if max(default_size) > MAX_DEFAULT_SIDE:
            raise DatasetError(
                f"{folder}: most images are {default_size[0]}x{default_size[1]} pixels, larger "
                f"than {MAX_DEFAULT_SIDE} a side; give the size to train at (--image-size H W, "
                "or image_size=(H, W))"
            )
        image_size = default_size
    X = read_images(paths, channels or detected_channels, image_size)
    return X, np.array(labels), tuple(classes), skipped
