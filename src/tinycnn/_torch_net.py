"""The PyTorch twin of tinycnn's network, for export (imports torch: load it only through export).

A module-level class, not one built inside a function, so that the exported module pickles (for
``torch.save(module)`` and for ``torch.multiprocessing`` spawn, which pickles its arguments).
"""

from __future__ import annotations

import torch
from torch import nn


class TinyCNNModule(nn.Module):
    """standardise -> conv -> ReLU -> flatten -> dense, on RAW images.

    Input ``x`` ``(N, C, H, W)`` float32; output ``(N, O)`` (a classifier's logits, a regressor's
    predictions). The per-channel standardisation ``(x - input_mean) / input_std`` is done here, by
    buffers of shape ``(1, C, 1, 1)``, so the module is a drop-in for the estimator; it is not
    folded into the conv because the conv zero-pads the *standardised* image, and padding is not
    affine-invariant. ``nn.Flatten`` of ``(N, F, H', W')`` is C order of ``(F, H', W')``, tinycnn's
    flatten order, so ``fc.weight`` is exactly ``W_fc.T``, with no permutation.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_filters: int,
        kernel_size: int,
        stride: int,
        pad: int,
        n_hidden: int,
        n_outputs: int,
    ) -> None:
        super().__init__()
        channels = image_shape[0]
        # The image shape the dense layer was sized for; from_torch checks it.
        self.image_shape = tuple(int(d) for d in image_shape)
        self.register_buffer("input_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("input_std", torch.ones(1, channels, 1, 1))
        self.conv = nn.Conv2d(channels, n_filters, kernel_size, stride=stride, padding=pad)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten(start_dim=1)
        self.fc = nn.Linear(n_hidden, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.conv.weight.dtype
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
        hidden = self.relu(self.conv(x))  # (N, F, H', W')
        return self.fc(self.flatten(hidden))  # (N, F*H'*W') -> (N, O)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}"
