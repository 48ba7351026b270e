"""DC's ConvNet family: ``depth`` × [Conv 3×3 → norm → act → pool 2×2], then one linear layer.

Semantics follow Dataset Condensation (Zhao et al., ICLR 2021), so parameter counts and the
720-network NAS space match the paper:

* "instance" norm is ``GroupNorm(C, C, affine=True)`` (no running statistics, which suits FL),
  "group" is ``GroupNorm(4, C)``, "layer" is ``LayerNorm([C, H, W])`` over the conv output, and
  "batch" is ``BatchNorm2d(C)``.
* A 1-channel 28×28 input (MNIST, Fashion-MNIST) gets padding 3 in the first conv, so it is
  processed as 32×32 and yields the same 4×4 feature map as CIFAR after three pooled blocks.

Feature-map sizes are computed analytically, so a ConvNet can be built on the ``meta`` device.
"""

from __future__ import annotations

import torch
from torch import nn

from distdd_nas.errors import ConfigError
from distdd_nas.models.pooling import AvgPool2x2


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module: ``relu``, ``leakyrelu`` (slope 0.01) or ``sigmoid``.

    ReLU is not in-place (unlike DC's) so the models stay safe under ``torch.func``/vmap and
    double-backward, which gradient matching may use; the function computed is identical.
    """
    if name == "relu":
        return nn.ReLU()
    if name == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ConfigError(f"unknown activation {name!r}; use one of relu, leakyrelu, sigmoid")


def make_norm(name: str, shape: tuple[int, int, int]) -> nn.Module:
    """Return DC's normalisation layer ``name`` for a conv output of ``shape`` (C, H, W)."""
    channels, h, w = shape
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    if name == "layer":
        return nn.LayerNorm([channels, h, w], elementwise_affine=True)
    if name == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if name == "group":
        return nn.GroupNorm(4, channels, affine=True)
    raise ConfigError(f"unknown norm {name!r}; use one of none, batch, layer, instance, group")


def make_pool(name: str) -> nn.Module:
    """Return a 2×2/stride-2 pooling layer (``max``/``avg``) or identity for ``none``.

    ``avg`` is :class:`~distdd_nas.models.pooling.AvgPool2x2`: ``nn.AvgPool2d(2, 2)``'s bits,
    forward and backward, without its slow CPU kernel.
    """
    if name == "max":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if name == "avg":
        return AvgPool2x2()
    if name == "none":
        return nn.Identity()
    raise ConfigError(f"unknown pool {name!r}; use one of none, max, avg")


class ConvNet(nn.Module):
    """The DC ConvNet (width 128, depth 3, instance norm, 3×32×32 → 10 classes: 320,010 params).

    Attributes:
        features: ``depth`` blocks of conv → norm → act → pool.
        classifier: Linear layer on the flattened final feature map.
        feature_shape: (C, H, W) of the final feature map.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        depth: int,
        width: int,
        act: str,
        norm: str,
        pool: str,
    ) -> None:
        super().__init__()
        channels, h, w = input_shape
        layers: list[nn.Module] = []
        for block in range(depth):
            # DC: 1-channel 28×28 inputs are padded to act as 32×32 in the first conv.
            pad = 3 if block == 0 and (channels, h, w) == (1, 28, 28) else 1
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=pad))
            channels, h, w = width, h + 2 * pad - 2, w + 2 * pad - 2
            layers.append(make_norm(norm, (channels, h, w)))
            layers.append(make_activation(act))
            if pool != "none":
                if h < 2 or w < 2:
                    raise ConfigError(
                        f"ConvNet depth {depth} with {pool} pooling needs a feature map of at "
                        f"least 2×2 before block {block + 1}, but a {input_shape[1]}×"
                        f"{input_shape[2]} input is {h}×{w} there; use depth <= {block} or "
                        "pool='none' for this input size"
                    )
                layers.append(make_pool(pool))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.feature_shape: tuple[int, int, int] = (channels, h, w)
        self.classifier = nn.Linear(channels * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened final feature map (used by distribution-matching style objectives)."""
        x = self.features(x)  # (B, width, h, w)
        return x.flatten(1)  # (B, width * h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape (B, C, H, W)."""
        return self.classifier(self.embed(x))  # (B, num_classes)
