"""A plain MLP baseline: flatten → ``depth`` × (Linear(hidden) → act) → Linear(num_classes).

It ignores the ConvNet fields of an ArchSpec (width, norm, pool); it exists as a cheap,
architecture-poor reference point for proxies and for the search space's lower end.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distdd_nas.models.convnet import make_activation


class MLP(nn.Module):
    """Fully connected classifier on flattened images (``depth`` hidden layers of ``hidden``)."""

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        depth: int,
        hidden: int,
        act: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        features = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(features, hidden), make_activation(act)]
            features = hidden
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last hidden layer."""
        return self.features(x.flatten(1))  # (B, C*H*W) -> (B, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape (B, C, H, W)."""
        return self.classifier(self.embed(x))  # (B, num_classes)
