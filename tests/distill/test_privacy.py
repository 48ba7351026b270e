"""What the census sends: on the shipped quickstart, no message carries a client's training
image (the ``client_mean`` sums cover at least ``distill.init_min_count`` images), while with a
minimum of 1 the same check finds the clients that hold a single image of a class."""

from __future__ import annotations

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
