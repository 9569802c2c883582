"""tinycnn: a convolutional network trainer in NumPy, with backprop written out and verified.

conv -> ReLU -> dense, trained by hand-written backpropagation. See ``train_cnn`` (the seed's
contract), the ops ``conv2d_forward``/``conv2d_backward``/``relu``/``relu_backward``, and the
scikit-learn estimators ``CNNClassifier``/``CNNRegressor``.
"""

from . import gradcheck, naive
from ._version import __version__
from .errors import DivergenceError
from .ops.activations import relu, relu_backward
from .ops.conv import conv2d_backward, conv2d_forward
from .seed import predict_cnn, train_cnn

__all__ = [
    "__version__",
    "DivergenceError",
    "conv2d_forward",
    "conv2d_backward",
    "relu",
    "relu_backward",
    "train_cnn",
    "predict_cnn",
    "gradcheck",
    "naive",
]
