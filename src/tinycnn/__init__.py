"""tinycnn: a convolutional network trainer in NumPy, with backprop written out and verified.

Any stack of conv, ReLU, max/avg pooling, flatten and dense layers (``Sequential``), trained
by hand-written backpropagation through the verified ops. See ``train_cnn`` (the seed's
contract), the ops ``conv2d_forward``/``conv2d_backward``/``relu``/``relu_backward`` and
``pool``, and the scikit-learn estimators ``CNNClassifier``/``CNNRegressor``.
"""

from . import gradcheck, naive
from ._version import __version__
from .errors import DivergenceError, ModelFileError
from .layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
from .model import Sequential
from .ops import pool
from .ops.activations import relu, relu_backward
from .ops.conv import conv2d_backward, conv2d_forward
from .seed import predict_cnn, train_cnn

__all__ = [
    "__version__",
    "Sequential",
    "Conv2d",
    "ReLU",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
    "Dense",
    "pool",
    "DivergenceError",
    "ModelFileError",
    "CNNClassifier",
    "CNNRegressor",
    "load",
    "from_torch",
    "conv2d_forward",
    "conv2d_backward",
    "relu",
    "relu_backward",
    "train_cnn",
    "predict_cnn",
    "gradcheck",
    "naive",
]


# The estimators need scikit-learn and the exporters need torch/onnx; the engine needs NumPy only.
# So these names are resolved on first use (PEP 562), and `import tinycnn` imports neither.
_LAZY = {
    "CNNClassifier": ("estimators", "CNNClassifier"),
    "CNNRegressor": ("estimators", "CNNRegressor"),
    "load": ("io", "load_model"),
    "from_torch": ("export", "from_torch"),
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        module_name, attr = _LAZY[name]
        value = getattr(import_module(f".{module_name}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
