"""DSA's image augmentations for training on a small synthetic set (Zhao & Bilen, ICML 2021).

A network trained for many epochs on ~10 images per class overfits them in ways that depend on
its architecture (normalisation, pooling), which is one reason a distilled-set proxy can rank
architectures unlike FedAvg on real data. Dataset Condensation with Differentiable Siamese
Augmentation trains (and evaluates) on synthetic sets with random augmentations per batch;
this module is that family of augmentations with DSA's default strengths, drawn from an explicit
generator so the same seed gives the same batches:

* ``color`` — brightness shift U(−0.5, 0.5), saturation ×U(0, 2), contrast ×U(0.5, 1.5);
* ``crop`` — translation by up to 1/8 of the side, zero padding;
* ``cutout`` — one zeroed square of half the side, at a random centre;
* ``flip`` — horizontal flip with probability 1/2;
* ``scale`` — per-axis scaling by U(1/1.2, 1.2);
* ``rotate`` — rotation by U(−15°, 15°).

As in DSA's default mode (``aug_mode = 'S'``), each batch gets one operation chosen uniformly,
with parameters drawn per image. Nothing here needs gradients through the parameters (the
proxy trains networks, not images), so the operations are plain tensor code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

#: DSA's default strengths (``ParamDiffAug``).
BRIGHTNESS, SATURATION, CONTRAST = 1.0, 2.0, 0.5
CROP_PAD, CUTOUT, FLIP_P, SCALE, ROTATE_DEG = 0.125, 0.5, 0.5, 1.2, 15.0


def _uniform(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen)


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness, then saturation, then contrast, each with a factor per image."""
    n = x.shape[0]
    x = x + (_uniform(n, gen) - 0.5).view(-1, 1, 1, 1) * BRIGHTNESS
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(n, gen) * SATURATION).view(-1, 1, 1, 1) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, gen) + CONTRAST).view(-1, 1, 1, 1) + mean


def crop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by whole pixels (up to ``CROP_PAD`` of the side), zero padding."""
    n, _, h, w = x.shape
    dy = torch.randint(-int(h * CROP_PAD), int(h * CROP_PAD) + 1, (n,), generator=gen)
    dx = torch.randint(-int(w * CROP_PAD), int(w * CROP_PAD) + 1, (n,), generator=gen)
    pad = max(int(h * CROP_PAD), int(w * CROP_PAD))
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h).view(1, h) + pad - dy.view(n, 1)).view(n, 1, h, 1)
    cols = (torch.arange(w).view(1, w) + pad - dx.view(n, 1)).view(n, 1, 1, w)
    batch = torch.arange(n).view(n, 1, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].squeeze(1).permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Zero one square of ``CUTOUT`` × the side per image, centred anywhere in the image."""
    n, _, h, w = x.shape
    ch, cw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=gen)
    cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=gen)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    y0, x0 = (cy - ch // 2).view(n, 1, 1), (cx - cw // 2).view(n, 1, 1)
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability ``FLIP_P``."""
    mirrored = _uniform(x.shape[0], gen) < FLIP_P
    return torch.where(mirrored.view(-1, 1, 1, 1), x.flip(3), x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def scale(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scale each axis by its own factor in [1/``SCALE``, ``SCALE``] about the centre."""
    n = x.shape[0]
    sx = _uniform(n, gen) * (SCALE - 1 / SCALE) + 1 / SCALE
    sy = _uniform(n, gen) * (SCALE - 1 / SCALE) + 1 / SCALE
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return _affine(x, theta)


def rotate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image about its centre by an angle in ±``ROTATE_DEG`` degrees."""
    n = x.shape[0]
    a = (_uniform(n, gen) - 0.5) * 2 * ROTATE_DEG / 180 * math.pi
    zero = torch.zeros(n)
    rows = [torch.stack([a.cos(), a.sin(), zero], 1), torch.stack([-a.sin(), a.cos(), zero], 1)]
    return _affine(x, torch.stack(rows, 1))


#: DSA's operations in its strategy order ``color_crop_cutout_flip_scale_rotate``.
OPERATIONS: dict[str, Augment] = {
    "color": color,
    "crop": crop,
    "cutout": cutout,
    "flip": flip,
    "scale": scale,
    "rotate": rotate,
}


def dsa(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One DSA operation, chosen uniformly for the whole batch, with per-image parameters."""
    names = list(OPERATIONS)
    pick = int(torch.randint(0, len(names), (1,), generator=gen))
    return OPERATIONS[names[pick]](x, gen)


#: Augmentations by name (``search.augment``): ``none`` trains on the images as they are.
AUGMENTS: dict[str, Augment | None] = {"none": None, "dsa": dsa}

__all__ = ["AUGMENTS", "OPERATIONS", "Augment", "dsa"]
