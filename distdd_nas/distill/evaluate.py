"""DC's evaluation protocol for a synthetic set, and the random-real-subset reference.

Fresh networks are trained on the (small) set with SGD (lr 0.01, momentum 0.9, weight decay
5e-4, batch 256 by default), lr ×0.1 at half the epochs, and tested on the real test set; the
mean ± std over several seeded networks is the distilled accuracy (Zhao et al., 2021). The
random-real reference draws a fresh subset for every network, so its spread includes the luck
of the draw and one unlucky subset cannot make a distillation look good.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from distdd_nas.config import EvalSection
from distdd_nas.data import ImageDataset
from distdd_nas.errors import ConfigError
from distdd_nas.models import ArchSpec, build_model
from distdd_nas.seeding import derive_seed, numpy_rng, torch_generator
from distdd_nas.training import TrainSettings, evaluate_model, train_model


def evaluate_synthetic(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    arch: ArchSpec,
    test: ImageDataset,
    settings: EvalSection,
    seed: int,
    on_model: Callable[[float], None] | None = None,
) -> tuple[float, float, list[float]]:
    """(mean, std, per-model) test accuracy of ``settings.num_models`` fresh nets trained on
    (images, labels) with DC's protocol; network ``m`` is seeded by (seed, m). ``on_model``
    receives each network's accuracy as soon as it is trained (progress).

    Raises:
        ConfigError: Images and labels do not match, or the images do not fit the test set.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ConfigError(
            f"evaluate_synthetic needs as many labels as images (got "
            f"{len(images)} images, {len(labels)} labels), at least one"
        )
    if tuple(images.shape[1:]) != test.input_shape:
        raise ConfigError(
            f"images of shape {tuple(images.shape[1:])} do not fit the test "
            f"set's {test.input_shape}; evaluate on the dataset the set was "
            "distilled from"
        )
    x, y = images.detach().float(), labels.long()
    train = TrainSettings(
        epochs=settings.epochs,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        batch_size=settings.batch_size,
        decay_at_half=True,
    )
    accs: list[float] = []
    for m in range(settings.num_models):
        net = build_model(
            arch,
            input_shape=test.input_shape,
            num_classes=test.num_classes,
            seed=derive_seed(seed, "eval_net", m),
        )
        train_model(net, x, y, settings=train, generator=torch_generator(seed, "eval_order", m))
        accs.append(evaluate_model(net, test.images, test.labels)[1])
        if on_model is not None:
            on_model(accs[-1])
    return float(np.mean(accs)), float(np.std(accs)), accs


def random_real_subset(
    train: ImageDataset, indices_pool: np.ndarray, *, ipc: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` random real images per class drawn from ``indices_pool`` (fewer where a class
    has fewer). A centralized reference: it needs data that in DistDD never leaves the
    clients, so summaries must label it as such."""
    rng = numpy_rng(seed, "random_real")
    pool = np.asarray(indices_pool, dtype=np.int64)
    labels = train.labels.numpy()
    chosen = []
    for c in range(num_classes):
        of_c = pool[labels[pool] == c]
        chosen.append(np.sort(rng.choice(of_c, size=min(ipc, len(of_c)), replace=False)))
    idx = torch.as_tensor(np.concatenate(chosen), dtype=torch.long)
    return train.images[idx], train.labels[idx]


def evaluate_random_real(
    train: ImageDataset,
    indices_pool: np.ndarray,
    *,
    ipc: int,
    arch: ArchSpec,
    test: ImageDataset,
    settings: EvalSection,
    seed: int,
    on_model: Callable[[float], None] | None = None,
) -> tuple[float, float, list[float]]:
    """(mean, std, per-model) accuracy of the random-real reference: network ``m`` is trained
    with DC's protocol on its own random subset, drawn with seed (seed, m)."""
    accs: list[float] = []
    one = settings.model_copy(update={"num_models": 1})
    for m in range(settings.num_models):
        x, y = random_real_subset(
            train,
            indices_pool,
            ipc=ipc,
            num_classes=test.num_classes,
            seed=derive_seed(seed, "subset", m),
        )
        accs.extend(
            evaluate_synthetic(
                x,
                y,
                arch=arch,
                test=test,
                settings=one,
                seed=derive_seed(seed, "net", m),
                on_model=on_model,
            )[2]
        )
    return float(np.mean(accs)), float(np.std(accs)), accs
