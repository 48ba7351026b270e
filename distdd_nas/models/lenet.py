"""DC's LeNet: conv5(6) → act → maxpool → conv5(16) → act → maxpool → fc120 → fc84 → fc classes.

Padding follows DC for the usual inputs: the first conv gets padding 2 for a 1-channel 28×28 image
(classic LeNet-5, 16×5×5 features) and none otherwise (3×32×32 → 16×5×5). Inputs too small for
that (digits' 8×8) get "same" padding (2) first in the first conv, then in the second, which keeps
every feature map valid; below 4×4 no padding helps and a ConfigError says so.
"""

from __future__ import annotations

import torch
from torch import nn

from distdd_nas.errors import ConfigError
from distdd_nas.models.convnet import make_activation

_KERNEL = 5


def _after_block(size: int, pad: int) -> int:
    """Spatial size after conv5(pad) → maxpool2; 0 when the block does not fit."""
    conv = size + 2 * pad - _KERNEL + 1
    return conv // 2 if conv >= 2 else 0


def lenet_paddings(input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Pick (first, second) conv paddings: DC's if they fit, else the least "same" padding.

    Raises:
        ConfigError: The input is smaller than 4×4, where even "same" padding collapses.
    """
    channels, h, w = input_shape
    dc_first = 2 if (channels, h, w) == (1, 28, 28) else 0
    for pads in ((dc_first, 0), (2, 0), (2, 2)):
        if all(_after_block(_after_block(s, pads[0]), pads[1]) >= 1 for s in (h, w)):
            return pads
    raise ConfigError(
        f"LeNet needs an input of at least 4×4 pixels, got {h}×{w}; use the convnet or mlp "
        "family for this dataset"
    )


class LeNet(nn.Module):
    """LeNet-5 as in DC (61,706 parameters on 1×28×28 with 10 classes); ``act`` everywhere."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, act: str) -> None:
        super().__init__()
        channels, h, w = input_shape
        pad1, pad2 = lenet_paddings(input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=_KERNEL, padding=pad1),
            make_activation(act),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=_KERNEL, padding=pad2),
            make_activation(act),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        fh = _after_block(_after_block(h, pad1), pad2)
        fw = _after_block(_after_block(w, pad1), pad2)
        self.feature_shape: tuple[int, int, int] = (16, fh, fw)
        self.classifier = nn.Sequential(
            nn.Linear(16 * fh * fw, 120),
            make_activation(act),
            nn.Linear(120, 84),
            make_activation(act),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images ``x`` of shape (B, C, H, W)."""
        x = self.features(x)  # (B, 16, fh, fw); 16×5×5 for 28×28 and 32×32 inputs
        return self.classifier(x.flatten(1))  # (B, 16*fh*fw) -> (B, num_classes)
