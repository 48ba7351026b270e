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
def test_fedavg_on_flower_deployment_matches_inprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """With failing clients: the SuperNodes' ClientApps raise, the engine skips those replies
    and the quorum re-sends the round, exactly as in-process — over TLS with authenticated
    SuperNodes (the default): the run really served HTTPS, wrote the certificates and node
    keys, registered both nodes and gave each an id."""
    from distdd_nas.federation.flower import runtime

    transport: list[dict[str, object]] = []
    real = runtime.run_on_deployment

    def observed(config: object, *, out_dir: Path, **options: object) -> object:
        result = real(config, out_dir=out_dir, **options)
        logs = out_dir / "logs"
        transport.append(
            {
                "secure": options["secure"],
                "https": "Uvicorn running on https://" in (logs / "superlink.log").read_text(),
                "files": sorted(p.name for p in (out_dir / "certificates").iterdir()),
                "nodes": sum("SuperNode ID" in p.read_text() for p in logs.glob("supernode-*")),
                "registered": "register" in result.timings,  # type: ignore[attr-defined]
            }
        )
        return result

    monkeypatch.setattr(runtime, "run_on_deployment", observed)
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
    certs = ["ca.crt", "ca.key", "server.crt", "server.key"]
    keys = ["supernode-0.key", "supernode-0.pub", "supernode-1.key", "supernode-1.pub"]
    assert transport == [
        {"secure": True, "https": True, "files": certs + keys, "nodes": 2, "registered": True}
    ]
    assert abs(got.test_accuracy - ref.test_accuracy) <= 0.01
    assert ledger.bytes_up == ref_ledger.bytes_up and ledger.bytes_down == ref_ledger.bytes_down
    assert got.history["attempts"].tolist() == ref.history["attempts"].tolist()
    assert ref.history["attempts"].max() > 1, "some round must have been short and re-sent"
    left = flower_processes(Path(tempfile.gettempdir()) / "distdd-flower-fedavg-")
    assert not left, f"Flower processes left running: {left}"
