"""Small CNN building blocks shared by the baselines (sized for CPU training)."""

from __future__ import annotations

import torch
from torch import nn


def encoder2d(in_ch: int, widths: tuple[int, ...], size: int) -> tuple[nn.Sequential, int]:
    """Conv(3x3)-ReLU-MaxPool(2) blocks.

    Args:
        in_ch: input channels. widths: output channels per block. size: input side S.

    Returns:
        (module mapping (B, in_ch, S, S) -> (B, D) flattened features, D).
    """
    layers: list[nn.Module] = []
    c = in_ch
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c = w
        size //= 2
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), c * size * size


def mlp(d_in: int, hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear-ReLU-(Dropout)-Linear head: (B, d_in) -> (B, d_out)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, d_out))


class Regressor2D(nn.Module):
    """CNN regressor: (B, C, S, S) depth crop(s) -> (B, n_out) values.

    Args:
        in_ch: input channels C. size: crop side S. n_out: outputs.
        widths: channels of the conv blocks. hidden: FC width.
    """

    def __init__(self, in_ch: int, size: int, n_out: int, widths=(16, 32, 64), hidden: int = 512, dropout: float = 0.1):
        super().__init__()
        self.features, d = encoder2d(in_ch, tuple(widths), size)
        self.head = mlp(d, hidden, n_out, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def joint_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean squared joint error: (B, J, 3) normalised -> scalar (mean over B, J of the squared distance)."""
    return ((pred - gt) ** 2).sum(-1).mean()
