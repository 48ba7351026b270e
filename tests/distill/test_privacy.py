"""What the census sends: on the shipped quickstart, no message carries a client's training
image (the ``client_mean`` sums cover at least ``distill.init_min_count`` images), while with a
minimum of 1 the same check finds the clients that hold a single image of a class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distdd_nas.config import load_config
from distdd_nas.distill.census import census
from distdd_nas.errors import DataError
from distdd_nas.study import Study
from tests.conftest import REPO

QUICKSTART = REPO / "studies" / "quickstart.toml"


def images_sent(study: Study) -> list[tuple[int, int]]:
    """(client, class) pairs whose census reply holds one of that client's training images (or
    its square) as a row of ``sum`` / ``sumsq``."""
    engine = study.make_engine()
    d = study.config.distill
    info = census(engine, num_classes=10, moments=True, min_count=d.init_min_count)
    found = []
    for client, reply in zip(study.federation.clients, info.moments, strict=True):
        own = client.dataset.images[client.train_indices].reshape(client.num_train, -1).double()
        own = own.numpy()
        for name, pixels in (("sum", own), ("sumsq", own**2)):
            for c, row in enumerate(np.asarray(reply[name])):
                if row.any() and np.isclose(pixels, row, rtol=0, atol=1e-6).all(axis=1).any():
                    found.append((client.cid, c))
    return sorted(set(found))


@pytest.fixture(scope="module")
def quickstart() -> Study:
    config = load_config(QUICKSTART)
    try:
        Study(config).federation  # noqa: B018 — loads Fashion-MNIST
    except DataError as err:  # pragma: no cover - the README's setup installs it
        pytest.skip(str(err))
    return Study(config)


def test_the_default_quickstart_census_sends_no_training_image(quickstart: Study) -> None:
    assert quickstart.config.distill.init == "client_mean"
    assert images_sent(quickstart) == []


def test_with_a_minimum_of_one_the_single_images_go_out(quickstart: Study) -> None:
    leaky = Study(load_config(QUICKSTART, ["distill.init_min_count=1"]))
    counts = np.array(
        [np.bincount(c.train_labels(), minlength=10) for c in leaky.federation.clients]
    )
    singles = sorted((int(i), int(c)) for i, c in zip(*np.nonzero(counts == 1), strict=True))
    assert singles, "the quickstart partition has clients with one image of a class"
    assert images_sent(leaky) == singles


# --------------------------------------------------------------------------------------------
# Differential privacy of the class gradients
# --------------------------------------------------------------------------------------------


def test_per_example_gradients_equal_one_backward_per_image() -> None:
    import torch

    from distdd_nas.distill.privacy import per_example_gradients
    from distdd_nas.models import ArchSpec, build_model

    model = build_model(ArchSpec(depth=2, width=8), input_shape=(1, 8, 8), num_classes=10, seed=0)
    images = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    got = per_example_gradients(model, images, label=3)
    params = [p for p in model.parameters() if p.requires_grad]
    for i in range(5):
        loss = torch.nn.functional.cross_entropy(model(images[i : i + 1]), torch.tensor([3]))
        ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        torch.testing.assert_close(got[i], ref, rtol=1e-4, atol=1e-6)


def test_private_mean_clips_each_row_hand_computed() -> None:
    import torch

    from distdd_nas.distill.privacy import private_mean

    rows = torch.tensor([[3.0, 4.0], [0.0, 0.5]])  # norms 5 → clipped to (0.6, 0.8); 0.5 kept
    gen = torch.Generator().manual_seed(0)
    out = private_mean(rows, clip=1.0, noise_multiplier=0.0, generator=gen)
    torch.testing.assert_close(out, torch.tensor([0.3, 0.65]))
    noisy = [private_mean(rows, clip=1.0, noise_multiplier=2.0, generator=gen) for _ in range(400)]
    spread = torch.stack(noisy).std(dim=0)  # noise std σC/n = 2·1/2 = 1 per coordinate
    assert torch.allclose(spread, torch.ones(2), atol=0.15)


def test_epsilon_is_within_the_classic_rdp_bound_of_the_full_batch_gaussian() -> None:
    """take = n (every image every step): T compositions of the Gaussian mechanism with noise
    multiplier σ/2 (replace-one sensitivity 2C), whose RDP is T·α/(2(σ/2)²); the classic
    conversion ε ≤ min_α RDP(α) + log(1/δ)/(α − 1) bounds what the accountant reports (its
    conversion is tighter, so it may report less, not much less)."""
    from distdd_nas.distill.privacy import epsilon

    sigma, steps, delta = 8.0, 50, 1e-5
    alphas = np.linspace(1.01, 200, 20000)
    classic = float(
        np.min(steps * alphas / (2 * (sigma / 2) ** 2) + np.log(1 / delta) / (alphas - 1))
    )
    got = epsilon(noise_multiplier=sigma, batches=[(100, 100)], steps=steps, delta=delta)
    assert 0.7 * classic <= got <= classic * 1.001


def test_noise_for_a_target_epsilon_and_monotonicity() -> None:
    from distdd_nas.distill.privacy import epsilon, noise_for_epsilon

    pairs = [(500, 32), (40, 6)]
    sigma = noise_for_epsilon(4.0, batches=pairs, steps=200, delta=1e-5)
    eps = epsilon(noise_multiplier=sigma, batches=pairs, steps=200, delta=1e-5)
    assert 3.9 <= eps <= 4.0
    assert epsilon(noise_multiplier=2 * sigma, batches=pairs, steps=200, delta=1e-5) < eps
    assert epsilon(noise_multiplier=sigma, batches=pairs, steps=400, delta=1e-5) > eps
    # the worst pair decides: the small client taking 6 of 40 images
    assert eps == epsilon(noise_multiplier=sigma, batches=[(40, 6)], steps=200, delta=1e-5)


def test_private_distillation_end_to_end_reports_its_epsilon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from distdd_nas.cli import main
    from tests.conftest import SMOKE

    dp = ["--set", 'distill.init="noise"', "--set", "distill.dp_clip=1.0",
          "--set", "distill.dp_target_epsilon=8", "--set", "distill.iterations=2",
          "--set", "distill.eval.epochs=5", "--set", "distill.eval.num_models=1"]  # fmt: skip
    out = tmp_path / "run"
    assert (
        main(["distill", str(SMOKE), "--out", str(out), "--cache", str(tmp_path / "c"), *dp]) == 0
    )
    summary = json.loads((out / "distill" / "summary.json").read_text())
    assert 7.9 <= summary["dp_epsilon"] <= 8.0 and summary["dp_delta"] == 1e-5
    assert summary["dp_noise_multiplier"] > 0
    capsys.readouterr()
    bad = ["distill", str(SMOKE), "--out", str(out), "--set", "distill.dp_clip=1.0",
           "--set", "distill.dp_noise_multiplier=1.0"]  # fmt: skip
    assert main(bad) == 2  # smoke ships client_mean: pixel sums outside the budget
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'distill.init = "noise"' in err
