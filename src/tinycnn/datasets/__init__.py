"""Data for tinycnn: built-in sets, folders of image files, MNIST-format IDX files, a user's .npz.

``load_dataset(name_or_path)`` returns ``(X, y, info)`` for any of them (see its docstring);
``fetch(name)`` downloads MNIST, Fashion-MNIST or KMNIST once into a local cache. One module per
concern:

* :mod:`~tinycnn.datasets.core`: :class:`DatasetError`, :class:`DatasetInfo`, the task rule and
  the test split;
* :mod:`~tinycnn.datasets.builtin`: the data sets known by name;
* :mod:`~tinycnn.datasets.synthetic`: the generated ``shapes`` and ``shapes-size``;
* :mod:`~tinycnn.datasets.images`: image files and folders of them (Pillow);
* :mod:`~tinycnn.datasets.idx`: the IDX format (:func:`read_idx`);
* :mod:`~tinycnn.datasets.download`: :func:`fetch` and the table of sizes and checksums;
* :mod:`~tinycnn.datasets.arrays`: a user's ``.npy``/``.npz`` files;
* :mod:`~tinycnn.datasets.load`: :func:`load_dataset`.
"""

from .arrays import read_array_file, read_npz_dataset
from .builtin import BUILTIN_DATASETS, FETCHED_DATASETS
from .core import (
    MAX_INFERRED_CLASSES,
    TASKS,
    TEST_SIZE,
    DatasetError,
    DatasetInfo,
    held_out_split,
    infer_task,
    split_dataset,
)
from .download import SOURCES, data_home, fetch
from .idx import read_idx, read_idx_folder
from .images import IMAGE_EXTENSIONS, read_image_folder
from .load import load_dataset, source_kind
from .synthetic import (
    SHAPE_NAMES,
    SYNTHETIC_NOISE,
    SYNTHETIC_SAMPLES,
    SYNTHETIC_SEED,
    SYNTHETIC_SIZE,
    make_shape_sizes,
    make_shapes,
)

__all__ = [
    "BUILTIN_DATASETS",
    "FETCHED_DATASETS",
    "IMAGE_EXTENSIONS",
    "MAX_INFERRED_CLASSES",
    "SHAPE_NAMES",
    "SOURCES",
    "SYNTHETIC_NOISE",
    "SYNTHETIC_SAMPLES",
    "SYNTHETIC_SEED",
    "SYNTHETIC_SIZE",
    "TASKS",
    "TEST_SIZE",
    "DatasetError",
    "DatasetInfo",
    "data_home",
    "fetch",
    "held_out_split",
    "infer_task",
    "load_dataset",
    "make_shape_sizes",
    "make_shapes",
    "read_array_file",
    "read_idx",
    "read_idx_folder",
    "read_image_folder",
    "read_npz_dataset",
    "source_kind",
    "split_dataset",
]
