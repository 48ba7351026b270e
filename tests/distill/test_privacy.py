"""What a client sends: on the shipped quickstart, no census message carries a client's training
image (the ``client_mean`` sums cover at least ``distill.init_min_count`` images), while with a
minimum of 1 the same check finds the clients that hold a single image of a class; under
differential privacy, no message carries an exact count, and ε covers the census and every
step (checked against dp-accounting events built by hand and closed forms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distdd_nas.config import DistillSection, load_config
from distdd_nas.data import DatasetSplits
from distdd_nas.distill.census import census
from distdd_nas.errors import DataError
from distdd_nas.federation import Message
from distdd_nas.study import Study
from tests.conftest import REPO
from tests.distill.conftest import TINY, label_skew_parts, make_engine

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
    """take = n (every image every step), one class, no census: T compositions of the Gaussian
    mechanism with noise multiplier σ/2 (replace-one sensitivity 2C), whose RDP is
    T·α/(2(σ/2)²); the classic conversion ε ≤ min_α RDP(α) + log(1/δ)/(α − 1) bounds what the
    accountant reports (its conversion is tighter, so it may report less, not much less)."""
    from distdd_nas.distill.privacy import epsilon

    sigma, steps, delta = 8.0, 50, 1e-5
    alphas = np.linspace(1.01, 200, 20000)
    classic = float(
        np.min(steps * alphas / (2 * (sigma / 2) ** 2) + np.log(1 / delta) / (alphas - 1))
    )
    got = epsilon(
        noise_multiplier=sigma, clients=[[(100, 100)]], steps=steps, delta=delta, census=False
    )
    assert 0.7 * classic <= got <= classic * 1.001


def _gaussian_epsilon(multiplier: float, delta: float) -> float:
    """ε of one Gaussian mechanism with this noise multiplier, straight from dp-accounting."""
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    accountant.compose(dp_accounting.GaussianDpEvent(multiplier))
    return float(accountant.get_epsilon(delta))


def test_the_census_is_one_more_gaussian_composed_with_the_steps() -> None:
    """Unknown counts (rate 1, two classes a step): the run is 2T + 1 Gaussians of noise
    multiplier σ/2 (the census's: std σ/√2 at sensitivity √2), and Gaussian RDP adds up to
    one Gaussian of multiplier (σ/2)/√(2T + 1); without the census, (σ/2)/√(2T)."""
    from distdd_nas.distill.privacy import UNKNOWN_COUNTS, census_noise_std, epsilon

    sigma, steps, delta = 30.0, 200, 1e-5
    assert census_noise_std(sigma) / np.sqrt(2) == pytest.approx(sigma / 2)
    run = [UNKNOWN_COUNTS]
    with_census = epsilon(
        noise_multiplier=sigma, clients=run, steps=steps, delta=delta, census=True
    )
    without = epsilon(noise_multiplier=sigma, clients=run, steps=steps, delta=delta, census=False)
    assert with_census > without
    assert with_census == pytest.approx(
        _gaussian_epsilon(sigma / 2 / np.sqrt(2 * steps + 1), delta), rel=1e-6
    )
    assert without == pytest.approx(
        _gaussian_epsilon(sigma / 2 / np.sqrt(2 * steps), delta), rel=1e-6
    )


def test_a_step_composes_the_uploads_of_the_two_most_sampled_classes() -> None:
    """A replacement that changes the label touches two classes' uploads: the client's two
    classes with the largest take/n (6/40 and 32/500; 10/1000 is dominated) compose each step,
    here against the two sampled events composed T times each by hand."""
    import dp_accounting

    from distdd_nas.distill.privacy import epsilon

    sigma, steps, delta = 4.0, 100, 1e-5
    gaussian = dp_accounting.GaussianDpEvent(sigma / 2)
    accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    for n, take in ((40, 6), (500, 32)):
        accountant.compose(
            dp_accounting.SampledWithoutReplacementDpEvent(n, take, gaussian), steps
        )
    client = [(1000, 10), (500, 32), (40, 6)]
    got = epsilon(noise_multiplier=sigma, clients=[client], steps=steps, delta=delta, census=False)
    assert got == pytest.approx(float(accountant.get_epsilon(delta)), rel=1e-9)
    # a class asked for but not held (n = 0) counts as rate 1: the worst case
    worse = [(0, 3), (40, 6)]
    assert (
        epsilon(noise_multiplier=sigma, clients=[worse], steps=steps, delta=delta, census=False)
        > got
    )


def test_noise_for_a_target_epsilon_calibrates_the_composed_event() -> None:
    from distdd_nas.distill.privacy import UNKNOWN_COUNTS, epsilon, noise_for_epsilon

    steps, delta = 200, 1e-5
    run = [UNKNOWN_COUNTS]
    for target in (8.0, 1.0):
        sigma = noise_for_epsilon(target, clients=run, steps=steps, delta=delta, census=True)
        by_hand = _gaussian_epsilon(sigma / 2 / np.sqrt(2 * steps + 1), delta)
        assert 0.99 * target <= by_hand <= target * (1 + 1e-9)
        # calibrated without the census, the same σ overspends the target once it is added
        bare = noise_for_epsilon(target, clients=run, steps=steps, delta=delta, census=False)
        assert bare < sigma
        assert (
            epsilon(noise_multiplier=bare, clients=run, steps=steps, delta=delta, census=True)
            > target
        )


def test_noise_for_a_target_epsilon_and_monotonicity() -> None:
    from distdd_nas.distill.privacy import epsilon, noise_for_epsilon

    clients = [[(500, 32)], [(40, 6)]]
    kw = {"steps": 200, "delta": 1e-5, "census": True}
    sigma = noise_for_epsilon(4.0, clients=clients, **kw)  # type: ignore[arg-type]
    eps = epsilon(noise_multiplier=sigma, clients=clients, **kw)  # type: ignore[arg-type]
    assert 3.9 <= eps <= 4.0
    assert epsilon(noise_multiplier=2 * sigma, clients=clients, **kw) < eps  # type: ignore[arg-type]
    assert (
        epsilon(noise_multiplier=sigma, clients=clients, steps=400, delta=1e-5, census=True) > eps
    )
    # the worst client decides: the small one taking 6 of its 40 images
    assert eps == epsilon(noise_multiplier=sigma, clients=[[(40, 6)]], **kw)  # type: ignore[arg-type]


def _recording(task: Any, log: list[tuple[Message, Message]]) -> Any:
    def run(client: Any, msg: Message) -> Message:
        reply = task(client, msg)
        log.append((msg, reply))
        return reply

    return run


def test_under_dp_no_census_or_gradient_message_reveals_a_count(digits: DatasetSplits) -> None:
    """Every census reply of a private run carries noised counts (none equal to the client's),
    with the std the budget names; every gradient reply reports the asked ``take``, with a row
    for every asked class, held or not (clients here miss most classes)."""
    from distdd_nas.distill import run_distill
    from distdd_nas.distill.client import class_gradients, class_stats
    from distdd_nas.distill.privacy import census_noise_std
    from distdd_nas.study import default_tasks

    train = digits.train
    parts = label_skew_parts(train.labels.numpy(), 3)
    stats: list[tuple[Message, Message]] = []
    grads: list[tuple[Message, Message]] = []
    tasks = {
        **default_tasks(),
        "class_stats": _recording(class_stats, stats),
        "class_gradients": _recording(class_gradients, grads),
    }
    settings = DistillSection(
        ipc=2, iterations=1, outer_loop=2, inner_loop=1, batch_real=16, init="noise",
        dp_clip=1.0, dp_noise_multiplier=4.0,
    )  # fmt: skip
    result = run_distill(
        make_engine(train, parts, tasks=tasks), arch=TINY, input_shape=train.input_shape,
        num_classes=10, settings=settings, seed=0,
    )  # fmt: skip
    assert result.privacy["dp_census_noise"] == census_noise_std(4.0)
    assert len(stats) == len(parts)
    for cid, (msg, reply) in enumerate(stats):
        exact = np.bincount(train.labels.numpy()[parts[cid]], minlength=10)
        sent = np.asarray(reply.arrays["counts"])
        assert msg.config["dp_noise"] == census_noise_std(4.0)
        assert np.isfinite(sent).all() and not (sent == exact).any()
        assert set(reply.arrays) == {"counts"}
    assert not (result.client_class_counts < 0).any()
    assert grads
    for msg, reply in grads:
        take = np.asarray(msg.arrays["take"])
        np.testing.assert_array_equal(reply.arrays["counts"], take)
        assert reply.arrays["grads"].shape[0] == int((take > 0).sum())


def test_a_private_client_sends_noise_alone_for_a_class_it_does_not_hold(
    digits: DatasetSplits,
) -> None:
    import torch

    from distdd_nas.distill.client import private_class_gradients
    from distdd_nas.models import ArchSpec, build_model

    model = build_model(ArchSpec(depth=2, width=8), input_shape=(1, 8, 8), num_classes=10, seed=0)
    take = np.zeros(10, dtype=np.int64)
    take[4] = 5
    kw = {"take": take, "clip": 1.0, "seed": 3}
    empty = torch.zeros(0, 1, 8, 8)
    quiet = private_class_gradients(model, empty, [], noise_multiplier=0.0, **kw)  # type: ignore[arg-type]
    assert quiet.shape[0] == 1 and not quiet.any()
    noisy = private_class_gradients(model, empty, [], noise_multiplier=2.0, **kw)  # type: ignore[arg-type]
    assert noisy.std().item() == pytest.approx(2.0 * 1.0 / 5, rel=0.1)  # σC / take


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
