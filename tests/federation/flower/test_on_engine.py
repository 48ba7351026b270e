"""The study's own server algorithms on Flower: DistDD on the simulation runtime equals the
in-process result; FedAvg on the deployment runtime (with failing clients) matches in-process."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from distdd_nas.stages.on_engine import on_configured_engine
from distdd_nas.study import Study
from tests.conftest import smoke
from tests.federation.flower.test_runtime import flower_processes

pytest.importorskip("flwr")

DISTILL = (
    "distill.iterations=2",
    "distill.ipc=2",
    "distill.eval.epochs=5",
    "partition.num_clients=3",
)


@pytest.mark.flower
@pytest.mark.timeout(300)
def test_distill_on_flower_simulation_equals_inprocess() -> None:
    local = smoke(*DISTILL)
    flower = smoke(*DISTILL, "federation.engine=flower", "federation.flower_backend=simulation")
    ref, ref_ledger = on_configured_engine(Study(local), "distill")
    got, ledger = on_configured_engine(Study(flower), "distill")
    diff = (ref.synthetic.images - got.synthetic.images).abs().max().item()
    assert diff <= 1e-6
    assert got.synthetic.labels.tolist() == ref.synthetic.labels.tolist()
    np.testing.assert_array_equal(got.client_class_counts, ref.client_class_counts)
    assert ledger.bytes_up == ref_ledger.bytes_up
    assert ledger.bytes_down == ref_ledger.bytes_down
    assert len(ledger.rows) == len(ref_ledger.rows)


@pytest.mark.flower
@pytest.mark.timeout(480)
def test_fedavg_on_flower_deployment_matches_inprocess() -> None:
    """With failing clients: the SuperNodes' ClientApps raise, the engine skips those replies
    and the quorum re-sends the round, exactly as in-process."""
    common = (
        "partition.num_clients=2",
        "fedavg.rounds=2",
        "fedavg.local_epochs=2",
        "federation.failure_rate=0.4",
        "federation.min_replies=2",
    )
    local = smoke(*common)
    deployed = smoke(*common, "federation.engine=flower", "federation.flower_backend=deployment")
    ref, ref_ledger = on_configured_engine(Study(local), "fedavg")
    got, ledger = on_configured_engine(Study(deployed), "fedavg")
    assert abs(got.test_accuracy - ref.test_accuracy) <= 0.01
    assert ledger.bytes_up == ref_ledger.bytes_up and ledger.bytes_down == ref_ledger.bytes_down
    assert got.history["attempts"].tolist() == ref.history["attempts"].tolist()
    assert ref.history["attempts"].max() > 1, "some round must have been short and re-sent"
    left = flower_processes(Path(tempfile.gettempdir()) / "distdd-flower-fedavg-")
    assert not left, f"Flower processes left running: {left}"
