"""Study: config → objects once; the test split FL validation is judged on."""

from __future__ import annotations

import torch

from distdd_nas.search.objective import split_server_holdout
from distdd_nas.study import Study
from tests.conftest import smoke


def test_validation_never_sees_the_proxys_server_holdout() -> None:
    study = Study(smoke('search.scoring="server_holdout"', "search.holdout_fraction=0.5"))
    test = study.federation.test
    holdout, _ = split_server_holdout(test, seed=0, fraction=0.5)
    rest = study.validation_test
    assert len(holdout) + len(rest) == len(test)
    seen = {tuple(x.flatten().tolist()) for x in holdout.images}
    assert not any(tuple(x.flatten().tolist()) in seen for x in rest.images[:50])
    federated = Study(smoke())
    assert torch.equal(federated.validation_test.images, federated.federation.test.images)


def test_objects_are_built_once_per_study() -> None:
    study = Study(smoke())
    assert study.federation is study.federation
    assert study.candidates is study.candidates and study.space is study.space
    assert study.make_engine() is not study.make_engine()  # each engine has its own ledger
