"""DSA augmentations: each operation against a slow, hand-written reference, and their use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distdd_nas.augment import AUGMENTS, OPERATIONS, color, crop, cutout, dsa, flip, rotate, scale
from distdd_nas.config import load_config
from distdd_nas.errors import ConfigError
from distdd_nas.models import ArchSpec, build_model
from distdd_nas.study import Study
from distdd_nas.training import TrainSettings, train_model


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 6, c: int = 1, side: int = 16) -> torch.Tensor:
    return torch.randn(n, c, side, side, generator=_gen(42))


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_keeps_the_shape_and_follows_its_generator(name: str) -> None:
    x = _images(c=3)
    op = OPERATIONS[name]
    a, b, c = op(x, _gen(1)), op(x, _gen(1)), op(x, _gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)  # same seed, same bytes
    assert not torch.equal(a, c)


def test_crop_is_a_whole_pixel_shift_with_zero_padding() -> None:
    x = _images()
    out = crop(x, _gen(3))
    side, pad = x.shape[-1], int(x.shape[-1] * 0.125)
    for img, got in zip(x.numpy(), out.numpy(), strict=True):
        matches = []
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                want = np.zeros_like(img)
                for y in range(side):
                    for xx in range(side):
                        sy, sx = y - dy, xx - dx
                        if 0 <= sy < side and 0 <= sx < side:
                            want[:, y, xx] = img[:, sy, sx]
                if np.array_equal(got, want):
                    matches.append((dy, dx))
        assert len(matches) == 1  # exactly one shift within ±pad explains the output


def test_cutout_zeroes_one_half_side_square_and_nothing_else() -> None:
    x = _images() + 10.0  # no pixel is zero before
    out = cutout(x, _gen(4)).numpy()
    for img, got in zip(x.numpy(), out, strict=True):
        zero = got[0] == 0
        assert (got[:, ~zero] == img[:, ~zero]).all()
        ys, xs = np.nonzero(zero)
        assert 0 < len(ys) <= 8 * 8
        # a rectangle (a square clipped by the border), at most 8 × 8 pixels
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert ys.max() - ys.min() < 8 and xs.max() - xs.min() < 8


def test_flip_mirrors_some_images_and_leaves_the_others() -> None:
    x = _images(n=32)
    out = flip(x, _gen(5))
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 4 < sum(mirrored) < 28  # probability 1/2 each


def test_color_by_hand_on_grey_images() -> None:
    """One channel: saturation is the identity (the channel mean is the pixel), so the result is
    contrast(brightness(x)) with the factors drawn in that order."""
    x = _images(n=4)
    g = _gen(6)
    b, s, c = torch.rand(4, generator=g), torch.rand(4, generator=g), torch.rand(4, generator=g)
    assert s.shape == (4,)
    bright = x + (b - 0.5).view(-1, 1, 1, 1)
    m = bright.mean(dim=(1, 2, 3), keepdim=True)
    want = (bright - m) * (c + 0.5).view(-1, 1, 1, 1) + m
    assert torch.allclose(color(x, _gen(6)), want, atol=1e-6)


def test_scale_and_rotate_keep_a_centred_disc_roughly_in_place() -> None:
    side = 17
    yy, xx = np.mgrid[:side, :side] - side // 2
    disc = torch.tensor((yy**2 + xx**2 <= 16).astype(np.float32)).view(1, 1, side, side)
    x = disc.repeat(8, 1, 1, 1)
    for op in (scale, rotate):
        out = op(x, _gen(7))
        assert (out[:, 0, side // 2, side // 2] > 0.99).all()  # the centre stays inside
        assert (out[:, 0, 0, 0].abs() < 1e-6).all()  # a far corner stays empty
        assert torch.allclose(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.5)


def test_dsa_applies_one_operation_per_batch() -> None:
    x = _images()
    out = dsa(x, _gen(8))
    g = _gen(8)
    pick = int(torch.randint(0, len(OPERATIONS), (1,), generator=g))
    assert torch.equal(out, list(OPERATIONS.values())[pick](x, g))


def test_training_with_augmentation_is_seeded_and_checked() -> None:
    x, y = _images(n=20, side=28), torch.arange(20) % 10

    def trained(augment: str) -> torch.Tensor:
        net = build_model(
            ArchSpec(depth=1, width=4), input_shape=(1, 28, 28), num_classes=10, seed=0
        )
        settings = TrainSettings(epochs=2, batch_size=8, augment=augment)
        train_model(net, x, y, settings=settings, generator=_gen(9))
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(trained("dsa"), trained("dsa"))
    assert not torch.equal(trained("dsa"), trained("none"))
    with pytest.raises(ConfigError, match="unknown augmentation 'jitter'; use one of none, dsa"):
        trained("jitter")
    assert set(AUGMENTS) == {"none", "dsa"}


def test_candidate_ids_are_unchanged_without_augmentation() -> None:
    """The quickstart's reference candidate keeps the id its ground-truth rows carry
    (bench/data/quickstart/groundtruth/candidates.csv, made while the quickstart's proxy trained
    100 epochs at lr 0.01); augmentation makes another candidate."""
    made_with = ["search.epochs=100", "search.lr=0.01"]
    study = Study(load_config("quickstart", made_with))
    assert study.candidates({}).candidate_id == "9c7ceb20fb"
    dsa_study = Study(load_config("quickstart", [*made_with, 'search.augment="dsa"']))
    assert dsa_study.candidates({}).candidate_id != "9c7ceb20fb"
