"""bench/step_floor.py times the product's arithmetic: the same values as the product's client
and match paths, the same FLOPs at every batch size, and the images a step really draws."""

from __future__ import annotations

import pytest
import torch

from distdd_nas.config import load_config
from distdd_nas.distill.client import Segment, per_class_gradients
from distdd_nas.distill.matching import layerwise_cosine
from distdd_nas.distill.server import match_loss
from distdd_nas.models import ArchSpec, build_model
from distdd_nas.study import Study
from tests.evidence.test_bench_proxies import _bench

IPC, CLASSES, SHAPE = 3, 4, (1, 8, 8)


def _net() -> torch.nn.Module:
    net = build_model(ArchSpec(depth=2, width=8), input_shape=SHAPE, num_classes=CLASSES, seed=1)
    return net.train()


def _dim(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_the_match_at_ipc_chunks_is_the_products_match_step() -> None:
    floor = _bench("step_floor")
    net, gen = _net(), torch.Generator().manual_seed(0)
    images = torch.randn((IPC * CLASSES, *SHAPE), generator=gen).requires_grad_(True)
    labels = torch.arange(CLASSES).repeat_interleave(IPC)
    target = torch.randn(_dim(net), generator=gen)
    ours = floor.match_work(net, images, labels, target, IPC, layerwise_cosine)
    loss = match_loss(
        net, images, ipc=IPC, targets=dict.fromkeys(range(CLASSES), target),
        distance=layerwise_cosine,
    )  # fmt: skip
    (product,) = torch.autograd.grad(loss, [images])
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, product, rtol=1e-5, atol=1e-7)


def test_the_client_work_is_the_count_weighted_sum_of_the_clients_class_rows() -> None:
    floor = _bench("step_floor")
    net, gen = _net(), torch.Generator().manual_seed(2)
    sizes = [5, 1, 7]  # classes 0, 2, 3 held; a class-sorted batch as a client draws it
    x = torch.randn((sum(sizes), *SHAPE), generator=gen)
    y = torch.tensor([0] * 5 + [2] + [3] * 7)
    segments = [Segment(0, 0, 5), Segment(2, 5, 6), Segment(3, 6, 13)]
    rows = per_class_gradients(net, x, segments)
    expected = (torch.tensor(sizes, dtype=torch.float32)[:, None] * rows).sum(0) / len(x)
    for size in (1, 4, None):
        flat = torch.cat([g.reshape(-1) for g in floor.client_work(net, x, y, size)])
        torch.testing.assert_close(flat, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("part", ["client", "match"])
def test_every_batch_size_does_the_same_arithmetic(part: str) -> None:
    """The floor compares batch sizes, so each must count the same FLOPs (torch's counter)."""
    floor = _bench("step_floor")
    net, gen = _net(), torch.Generator().manual_seed(3)
    images = torch.randn((IPC * CLASSES, *SHAPE), generator=gen).requires_grad_(True)
    labels = torch.arange(CLASSES).repeat_interleave(IPC)
    target = torch.randn(_dim(net), generator=gen)

    def work(size: int | None) -> object:
        if part == "client":
            return floor.client_work(net, images.detach(), labels, size)
        return floor.match_work(net, images, labels, target, size, layerwise_cosine)

    flops = {size: floor._flops(lambda size=size: work(size)) for size in (IPC, 2 * IPC, None)}
    assert len(set(flops.values())) == 1 and flops[None] > 0, flops


def test_real_images_per_step_is_every_held_image_when_shares_cover_whole_classes() -> None:
    """Hand case: every client each step, batch_real above every class total → each step
    draws every image the clients hold."""
    floor = _bench("step_floor")
    study = Study(
        load_config("smoke", values={"distill.batch_real": 100_000, "federation.fraction": 1.0})
    )
    held = sum(len(client.train_indices) for client in study.federation.clients)
    assert floor.real_images_per_step(study) == held


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "no_such_study"], "study file 'no_such_study' not found"),
        (["--study", "smoke", "--repeats", "0"], "--repeats 0 must both be >= 1"),
        (["--study", "smoke", "--threads", "0"], "--threads 0 and"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _bench("step_floor").main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err
