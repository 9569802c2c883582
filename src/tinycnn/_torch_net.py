"""The PyTorch twin of a tinycnn stack, for export (imports torch: load it only through export).

A module-level class, not one built inside a function, so that the exported module pickles (for
``torch.save(module)`` and for ``torch.multiprocessing`` spawn, which pickles its arguments).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class TinyCNNModule(nn.Module):
    """Standardise, then the stack's layers in order, on RAW images.

    Input ``x`` ``(N, C, H, W)`` float32; output ``(N, O)`` (a classifier's logits, a regressor's
    predictions). The per-channel standardisation ``(x - input_mean) / input_std`` is done here, by
    buffers of shape ``(1, C, 1, 1)``, so the module is a drop-in for the estimator; it is not
    folded into the first conv because the conv zero-pads the *standardised* image, and padding
    is not affine-invariant.

    The layers are the module's children (``nn.Conv2d``, ``nn.ReLU``, ``nn.MaxPool2d``,
    ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Linear``), run in the order they were registered;
    replacing one (``module.fc = nn.Linear(...)``) keeps its place. ``nn.Flatten`` of ``(N, C, H,
    W)`` is C order of ``(C, H, W)``, tinycnn's flatten order, so a ``Linear.weight`` is exactly
    the dense ``W.T``, with no permutation.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], layers: Iterable[tuple[str, nn.Module]]
    ) -> None:
        super().__init__()
        # The image shape the stack was built for: forward checks it, and so does from_torch.
        self.image_shape = tuple(int(d) for d in image_shape)
        channels = self.image_shape[0]
        self.register_buffer("input_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("input_std", torch.ones(1, channels, 1, 1))
        for name, layer in layers:
            assert not hasattr(self, name), name  # a layer name must not shadow an attribute
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.input_mean.dtype
        images = isinstance(x, torch.Tensor) and x.dim() == 4
        if not images or tuple(x.shape[1:]) != self.image_shape:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            C, H, W = self.image_shape
            raise ValueError(
                f"this module takes raw images as a {dtype} tensor (N, {C}, {H}, {W}) (the "
                f"estimator's X reshaped, not standardised), got {got}"
            )
        if x.dtype != dtype:
            raise TypeError(
                f"this module takes a {dtype} tensor (N, C, H, W), got {x.dtype}; convert it "
                f"with x.to({dtype}) or the module with module.to({x.dtype})"
            )
        x = (x - self.input_mean) / self.input_std  # (N, C, H, W)
        for layer in self.children():  # (N, C', H', W') between image layers, (N, D) once flat
            x = layer(x)
        return x  # (N, O)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}"
