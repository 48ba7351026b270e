"""The proxy objective: scoring sources, metering, pruning, simulated FedAvg, portability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

import distdd_nas.search.objective as objective_module
from distdd_nas.distill.result import DistilledSet
from distdd_nas.errors import ConfigError
from distdd_nas.federation import InProcessEngine
from distdd_nas.models import ArchSpec, build_model, get_parameters
from distdd_nas.search.backends import Pruned
from distdd_nas.search.candidate import CandidateFactory
from distdd_nas.search.objective import ProxyObjective, ProxyScorer, split_server_holdout
from distdd_nas.stages.proxy_files import load_proxy_objective, save_proxy_inputs
from distdd_nas.study import Federation, default_tasks
from distdd_nas.training import TrainSettings, evaluate_model
from tests.conftest import smoke


def test_server_holdout_is_a_stratified_disjoint_half(federation: Federation) -> None:
    test = federation.test
    holdout, final = split_server_holdout(test, seed=0)
    assert len(holdout) + len(final) == len(test)
    assert abs(len(holdout) - len(test) / 2) <= 1
    rows = {
        (*x.flatten().tolist(), int(y))
        for x, y in zip(holdout.images, holdout.labels, strict=True)
    }
    assert not any(
        (*x.flatten().tolist(), int(y)) in rows
        for x, y in zip(final.images, final.labels, strict=True)
    )
    share = np.bincount(holdout.labels.numpy(), minlength=10) / len(holdout)
    full = np.bincount(test.labels.numpy(), minlength=10) / len(test)
    assert np.abs(share - full).max() < 0.02
    with pytest.raises(ConfigError, match=r"fraction 1\.0"):
        split_server_holdout(test, seed=0, fraction=1.0)


def test_holdout_scoring_is_seeded_and_reports_intermediate_values(
    holdout_scorer: ProxyScorer, factory: CandidateFactory
) -> None:
    steps: list[tuple[int, float]] = []
    c = factory({"arch.depth": 1})
    a = holdout_scorer(c, lambda s, v: steps.append((s, v)))
    b = holdout_scorer(c, lambda s, v: None)
    assert 0.0 <= a <= 1.0 and a == b
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5]  # every epoch but the last (6 epochs)
    assert all(0.0 <= v <= 1.0 for _, v in steps)


def test_intermediate_values_are_the_federated_objective_and_metered(
    federated_scorer: ProxyScorer, federation: Federation, factory: CandidateFactory
) -> None:
    """What a pruner compares is the objective itself (a federated evaluation on the clients'
    holdouts, each one metered), never accuracy on the distilled set; off, nothing is sent."""
    params = {"arch.depth": 1, "arch.width": 4}
    objective = ProxyObjective(scorer=federated_scorer, candidates=factory)
    quiet: list[tuple[int, float]] = []
    value, plain = objective(params, lambda s, v: quiet.append((s, v)))
    federated_scorer.intermediate = True
    steps: list[tuple[int, float]] = []
    again, attrs = objective(params, lambda s, v: steps.append((s, v)))
    assert quiet == [] and again == value  # the final score does not depend on the reports
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5]  # every epoch but the last (6 epochs)
    assert attrs["bytes_down"] == (len(steps) + 1) * plain["bytes_down"]  # each one metered
    pooled = sum(len(c.holdout_indices) for c in federation.clients)
    assert pooled != len(federated_scorer.distilled.labels)
    for _, v in steps:  # correct / pooled holdout size, not a fraction of the distilled set
        assert v * pooled == pytest.approx(round(v * pooled))


def test_pruning_stops_training(holdout_scorer: ProxyScorer, factory: CandidateFactory) -> None:
    def prune(step: int, value: float) -> None:
        raise Pruned(f"step {step}")

    with pytest.raises(Pruned, match="step 1"):
        holdout_scorer(factory({}), prune)


def test_federated_scoring_is_metered_and_pools_client_holdouts(
    federated_scorer: ProxyScorer, federation: Federation, factory: CandidateFactory
) -> None:
    objective = ProxyObjective(scorer=federated_scorer, candidates=factory)
    value, attrs = objective({"arch.depth": 1, "arch.width": 4}, lambda s, v: None)
    arch = factory({"arch.depth": 1, "arch.width": 4}).arch
    model = build_model(arch, input_shape=(1, 8, 8), num_classes=10)
    model_bytes = sum(a.nbytes for a in get_parameters(model).values())
    assert attrs["bytes_down"] == federation.num_clients * model_bytes  # one model to each
    assert attrs["bytes_up"] == 0  # replies carry counts only
    assert attrs["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert attrs["model"] == "ConvNet-d1w4-relu-instance-avg"
    # Σ correct / Σ n over the clients' holdouts, recomputed by hand from the trained model
    c = factory({"arch.depth": 1, "arch.width": 4})
    trained: dict[str, torch.nn.Module] = {}
    scorer = federated_scorer
    original = scorer.score_model

    def capture(model: torch.nn.Module, *, candidate: object) -> float:
        trained["m"] = model
        return original(model, candidate=candidate)  # type: ignore[arg-type]

    scorer.score_model = capture  # type: ignore[method-assign]
    assert scorer(c, lambda s, v: None) == value
    correct = n = 0
    for client in federation.clients:
        idx = torch.as_tensor(client.holdout_indices)
        _, acc, k = evaluate_model(
            trained["m"], client.dataset.images[idx], client.dataset.labels[idx]
        )
        correct += round(acc * k)
        n += k
    assert value == correct / n


def test_federated_scoring_needs_client_holdouts(
    federation: Federation, distilled: DistilledSet, factory: CandidateFactory
) -> None:
    no_holdout = [
        type(c)(
            cid=c.cid,
            dataset=c.dataset,
            train_indices=c.train_indices,
            holdout_indices=np.empty(0, dtype=np.int64),
        )
        for c in federation.clients
    ]
    engine = InProcessEngine(clients=no_holdout, tasks=default_tasks())
    scorer = ProxyScorer(
        distilled=distilled, like=federation.train, scoring="federated", engine=engine
    )
    with pytest.raises(ConfigError, match="holdout_fraction > 0"):
        scorer(factory({"train.epochs": 1}), lambda s, v: None)


def test_scorer_validates_its_inputs(distilled: DistilledSet, federation: Federation) -> None:
    with pytest.raises(ConfigError, match="unknown scoring 'oracle'"):
        ProxyScorer(distilled=distilled, like=federation.train, scoring="oracle")
    with pytest.raises(ConfigError, match="needs a non-empty holdout"):
        ProxyScorer(distilled=distilled, like=federation.train, scoring="server_holdout")
    with pytest.raises(ConfigError, match="needs the study's engine"):
        ProxyScorer(distilled=distilled, like=federation.train, scoring="federated")


def test_infeasible_candidate_raises_config_error(holdout_objective: ProxyObjective) -> None:
    with pytest.raises(ConfigError):  # four 2×2 poolings do not fit 8×8 inputs
        holdout_objective({"arch.depth": 4}, lambda s, v: None)


def test_fedavg_candidates_use_simulated_fedavg(holdout_objective: ProxyObjective) -> None:
    steps: list[int] = []
    value, attrs = holdout_objective(
        {"arch.depth": 1, "arch.width": 4, "fedavg.lr": 0.1}, lambda s, v: steps.append(s)
    )
    assert 0.0 <= value <= 1.0
    assert steps == [1, 2]  # one intermediate value per FedAvg round
    assert attrs["bytes_down"] == attrs["bytes_up"] == 0  # virtual clients: no real traffic
    again, _ = holdout_objective(
        {"arch.depth": 1, "arch.width": 4, "fedavg.lr": 0.1}, lambda s, v: None
    )
    assert again == value


def test_portable_objective_rebuilds_the_same_scores(
    holdout_objective: ProxyObjective,
    federated_scorer: ProxyScorer,
    factory: CandidateFactory,
    tmp_path: Path,
) -> None:
    params = {"arch.depth": 1, "arch.width": 4, "arch.act": "sigmoid"}
    recipe = save_proxy_inputs(tmp_path / "holdout", objective=holdout_objective)
    rebuilt = recipe.build()
    assert isinstance(rebuilt, ProxyObjective)
    assert rebuilt(params, lambda s, v: None)[0] == holdout_objective(params, lambda s, v: None)[0]
    federated = ProxyObjective(scorer=federated_scorer, candidates=factory)
    with pytest.raises(ConfigError, match="needs the study config"):
        save_proxy_inputs(tmp_path / "fed", objective=federated)
    recipe = save_proxy_inputs(
        tmp_path / "fed", objective=federated, study_config=smoke().to_dict()
    )
    rebuilt = load_proxy_objective(**recipe.kwargs)
    v1, a1 = rebuilt(params, lambda s, v: None)
    v2, a2 = federated(params, lambda s, v: None)
    assert v1 == v2 and a1["bytes_down"] == a2["bytes_down"] > 0


def test_a_pruned_trial_still_names_its_candidate_and_cost(
    holdout_objective: ProxyObjective,
) -> None:
    """The backend stores these with the PRUNED trial: without them every pruned trial would
    share the empty id and the cost report would merge them into one candidate."""

    def stop(step: int, value: float) -> None:
        raise optuna.TrialPruned(f"pruned at {step}")

    params = {"arch.depth": 1, "arch.width": 8}
    with pytest.raises(Pruned) as info:
        holdout_objective(params, stop)
    attrs = info.value.attrs
    want = holdout_objective.candidates(params)
    assert attrs["candidate_id"] == want.candidate_id
    assert attrs["model"] == want.arch.short_name() and attrs["num_parameters"] > 0
    assert attrs["bytes_up"] == 0 == attrs["bytes_down"]  # server holdout: no traffic


def test_simulated_fedavg_trains_locally_with_the_proxys_augmentation(
    holdout_scorer: ProxyScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``search.augment`` augments every proxy-training batch, so the simulation's local
    training too; the candidate's real FedAvg settings (what validation trains) keep none."""
    seen: list[str] = []
    real = objective_module.simulated_fedavg

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs["settings"].local.augment)
        return real(**kwargs)

    monkeypatch.setattr(objective_module, "simulated_fedavg", spy)
    params = {"arch.depth": 1, "arch.width": 4, "fedavg.lr": 0.1}
    plain = CandidateFactory(reference=ArchSpec(), train=TrainSettings(epochs=1))
    dsa = CandidateFactory(reference=ArchSpec(), train=TrainSettings(epochs=1, augment="dsa"))
    scores = [holdout_scorer(make(params), lambda s, v: None) for make in (plain, dsa)]
    assert seen == ["none", "dsa"]
    assert scores[0] != scores[1]  # the augmentation changed the simulated training
    assert dsa(params).fedavg_settings(holdout_scorer.fedavg).local.augment == "none"
