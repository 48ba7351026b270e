"""The proxy objective: train a candidate on the distilled set and score it.

Scoring sources (``search.scoring``):

* ``federated`` — the trained model is sent to every client, which evaluates it on its local
  held-out split (client task ``evaluate``); the score is Σ correct / Σ examples over clients.
  The traffic goes through the study's engine and is metered in its ledger, so it is part of
  DistDD's communication cost. Needs ``partition.holdout_fraction > 0``.
* ``server_holdout`` — a labelled set the server owns: :func:`split_server_holdout` gives a
  seeded, stratified half of the federation's test split to the server; the other half stays the
  final test set of FL validation, so the proxy never sees the examples validation is scored on.

Architecture/proxy-training candidates are trained (seeded by their ``candidate_id``) on the
distilled set with their train settings and report intermediate values every ``report_every``
epochs for pruning: the holdout accuracy with ``server_holdout``, and with ``federated`` the
accuracy on the distilled set itself (free; asking the clients every epoch would cost traffic).
Candidates with ``fedavg.*`` parameters are scored by **simulated FedAvg on the distilled set**
(:mod:`distdd_nas.search.simulate`), reporting one intermediate value per round.

:mod:`distdd_nas.stages.proxy_files` writes everything an objective needs to files and returns
an :class:`~distdd_nas.search.backends.ObjectiveRecipe`, so NNI trials (or extra Optuna workers)
rebuild the identical objective in their own process.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import optuna
import torch

from distdd_nas.data import ImageDataset, stratified_sample
from distdd_nas.distill.result import DistilledSet
from distdd_nas.errors import ConfigError
from distdd_nas.fedavg.server import FedAvgSettings
from distdd_nas.federation import Engine, Message
from distdd_nas.models import build_model, count_parameters, get_parameters, set_parameters
from distdd_nas.search.backends.base import Pruned, Reporter
from distdd_nas.search.candidate import Candidate, CandidateFactory
from distdd_nas.search.simulate import VirtualSteps, simulated_fedavg
from distdd_nas.seeding import derive_seed, numpy_rng, torch_generator
from distdd_nas.training import evaluate_model, train_model

SCORINGS = ("federated", "server_holdout")


def synthetic_dataset(distilled: DistilledSet, like: ImageDataset) -> ImageDataset:
    """The distilled set as an :class:`ImageDataset` with the real data's metadata."""
    return ImageDataset(
        like.name, distilled.images, distilled.labels, like.classes, like.mean, like.std
    )


def split_server_holdout(
    test: ImageDataset, *, seed: int, fraction: float = 0.5
) -> tuple[ImageDataset, ImageDataset]:
    """Split the test set into (server holdout, final test), stratified by class and seeded.

    The server scores proxies on the holdout; FL validation reports accuracy on the final test
    part, so the two never share an example.

    Raises:
        ConfigError: ``fraction`` outside (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"server holdout fraction {fraction} is out of range; use 0 < f < 1")
    labels = test.labels.numpy()
    size = round(fraction * len(labels))
    chosen = stratified_sample(labels, size, rng=numpy_rng(seed, "server_holdout"))
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    return test.subset(chosen), test.subset(rest)


def server_holdout(test: ImageDataset, *, seed: int, fraction: float = 0.5) -> ImageDataset:
    """The server-owned labelled set of :func:`split_server_holdout` (its first part)."""
    return split_server_holdout(test, seed=seed, fraction=fraction)[0]


@dataclass
class ProxyScorer:
    """Trains and scores candidates; holds what every trial shares (built once per process).

    Attributes:
        distilled: The synthetic set.
        like: Real-data metadata (input shape, classes, normalisation), e.g. the train set.
        scoring: ``federated`` or ``server_holdout``.
        holdout: The server's labelled set (required for ``server_holdout``).
        engine: The study's engine (required for ``federated``); its ledger meters scoring.
        client_class_counts: Real clients × classes counts (required for ``fedavg.*``).
        fedavg: The study's FedAvg settings (base of ``fedavg.*`` candidates).
        seed: Study seed; each candidate's seeds derive from it and its ``candidate_id``.
        seeds: Models trained per candidate (the score is their mean).
        report_every: Epochs between intermediate values (default: about ten per run).
        intermediate: Report intermediate values at all. They are the objective's own signal
            (the same scoring as the final value: server holdout, or a metered federated
            evaluation whose bytes count in the trial's), so a pruner compares like with like;
            off by default: without a pruner nothing reads them (the search stage turns them
            on when ``search.pruner`` is set).
        virtual_examples: Total size of the virtual clients of simulated FedAvg (None: real).
        virtual_steps: Their local steps: ``real`` (batch scaled so each takes its real
            client's steps per round) or ``scaled`` (the study's batch).
    """

    distilled: DistilledSet
    like: ImageDataset
    scoring: str
    holdout: ImageDataset | None = None
    engine: Engine | None = None
    client_class_counts: np.ndarray | None = None
    fedavg: FedAvgSettings = field(default_factory=FedAvgSettings)
    seed: int = 0
    seeds: int = 1
    report_every: int | None = None
    intermediate: bool = False
    virtual_examples: int | None = 2000
    virtual_steps: VirtualSteps = "real"
    _rounds: Iterator[int] = field(
        default_factory=lambda: itertools.count(1), init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ConfigError(
                f"unknown scoring {self.scoring!r}; use one of {', '.join(SCORINGS)}"
            )
        if self.scoring == "server_holdout" and (self.holdout is None or len(self.holdout) == 0):
            raise ConfigError(
                "server_holdout scoring needs a non-empty holdout set; pass "
                "split_server_holdout(test)[0]"
            )
        if self.scoring == "federated" and self.engine is None:
            raise ConfigError(
                "federated scoring needs the study's engine; pass engine=... or "
                'use search.scoring = "server_holdout"'
            )
        if self.seeds < 1:
            raise ConfigError(f"seeds={self.seeds} is out of range; use an integer >= 1")

    @property
    def synthetic(self) -> ImageDataset:
        return synthetic_dataset(self.distilled, self.like)

    def __call__(self, candidate: Candidate, report: Reporter) -> float:
        """Proxy score of ``candidate`` in [0, 1] (higher is better).

        Raises:
            Pruned: ``report`` asked to stop (propagated from the backend's pruner).
            ConfigError: The candidate does not fit the data (e.g. too much pooling).
        """
        scores = []
        for s in range(self.seeds):
            seed = derive_seed(self.seed, "proxy", candidate.candidate_id, s)
            step_report = report if s == 0 else _ignore
            if candidate.is_fedavg:
                scores.append(self._simulated_fedavg(candidate, seed, step_report))
            else:
                scores.append(self._train_and_score(candidate, seed, step_report))
        return float(np.mean(scores))

    def _train_and_score(self, candidate: Candidate, seed: int, report: Reporter) -> float:
        model = build_model(
            candidate.arch,
            input_shape=self.like.input_shape,
            num_classes=self.like.num_classes,
            seed=seed,
        )
        epochs = candidate.train.epochs
        every = self.report_every or max(1, epochs // 10)
        images, labels = self.distilled.images, self.distilled.labels

        def on_epoch(epoch: int, net: torch.nn.Module) -> None:
            if self.intermediate and (epoch + 1) % every == 0 and epoch + 1 < epochs:
                report(epoch + 1, self.score_model(net, candidate=candidate))

        train_model(
            model,
            images,
            labels,
            settings=candidate.train,
            generator=torch_generator(seed, "proxy", "order"),
            on_epoch=on_epoch,
        )
        return self.score_model(model, candidate=candidate)

    def _simulated_fedavg(self, candidate: Candidate, seed: int, report: Reporter) -> float:
        if self.client_class_counts is None:
            raise ConfigError(
                "fedavg.* candidates need the clients' class counts; pass "
                "client_class_counts=DistillResult.client_class_counts"
            )
        synthetic = self.synthetic
        test = self.holdout if self.scoring == "server_holdout" else synthetic

        def on_round(row: Mapping[str, float]) -> None:
            if self.intermediate and not np.isnan(row["test_accuracy"]):
                report(int(row["round"]), float(row["test_accuracy"]))

        settings = candidate.fedavg_settings(self.fedavg)
        if candidate.train.augment != "none":  # simulated local training is proxy training
            local = replace(settings.local, augment=candidate.train.augment)
            settings = replace(settings, local=local)
        result = simulated_fedavg(
            arch=candidate.arch,
            synthetic=synthetic,
            counts=self.client_class_counts,
            settings=settings,
            test=test or synthetic,
            seed=seed,
            total=self.virtual_examples,
            steps=self.virtual_steps,
            on_round=on_round,
        )
        if self.scoring == "server_holdout":
            return float(result.test_accuracy)
        model = build_model(
            candidate.arch,
            input_shape=self.like.input_shape,
            num_classes=self.like.num_classes,
            seed=0,
        )
        set_parameters(model, result.parameters)
        return self.score_model(model, candidate=candidate)

    def score_model(self, model: torch.nn.Module, *, candidate: Candidate) -> float:
        """Accuracy of a trained model on the scoring source (one metered round if federated).

        Raises:
            ConfigError: Federated scoring but no client holds a holdout example.
        """
        if self.scoring == "server_holdout":
            assert self.holdout is not None
            return float(evaluate_model(model, self.holdout.images, self.holdout.labels)[1])
        assert self.engine is not None
        msg = Message(
            arrays=get_parameters(model),
            config={"arch": json.dumps(candidate.arch.to_dict(), sort_keys=True)},
        )
        replies = self.engine.run_round(
            "evaluate",
            dict.fromkeys(range(self.engine.num_clients), msg),
            round=next(self._rounds),
        )
        n = sum(int(r.config["num_examples"]) for r in replies.values())
        if n == 0:
            raise ConfigError(
                "federated scoring got no holdout example from the clients; set "
                "partition.holdout_fraction > 0 or search.scoring = "
                '"server_holdout"'
            )
        return sum(int(r.config["correct"]) for r in replies.values()) / n


def _ignore(step: int, value: float) -> None:
    """A reporter that drops intermediate values (extra seeds of one candidate)."""


@dataclass
class ProxyObjective:
    """The search :data:`~distdd_nas.search.backends.Objective`: params → (score, attributes).

    Attributes stored with each trial: ``candidate_id``, ``model`` (short name),
    ``num_parameters``, and the scoring traffic ``bytes_down``/``bytes_up`` metered by the
    engine during this trial (0 for ``server_holdout``).
    """

    scorer: ProxyScorer
    candidates: CandidateFactory

    def __call__(
        self, params: Mapping[str, Any], report: Reporter
    ) -> tuple[float, dict[str, Any]]:
        candidate = self.candidates(params)
        ledger = self.scorer.engine.ledger if self.scorer.engine is not None else None
        down0 = ledger.bytes_down if ledger is not None else 0
        up0 = ledger.bytes_up if ledger is not None else 0
        start = time.perf_counter()

        def attrs() -> dict[str, Any]:
            with torch.device("meta"):
                net = build_model(
                    candidate.arch,
                    input_shape=self.scorer.like.input_shape,
                    num_classes=self.scorer.like.num_classes,
                )
            return {
                "candidate_id": candidate.candidate_id,
                "model": candidate.arch.short_name(),
                "num_parameters": count_parameters(net),
                "bytes_down": (ledger.bytes_down - down0) if ledger is not None else 0,
                "bytes_up": (ledger.bytes_up - up0) if ledger is not None else 0,
                "train_s": time.perf_counter() - start,
            }

        try:
            value = self.scorer(candidate, report)
        except optuna.TrialPruned as stop:  # a pruned trial still names its candidate and cost
            raise Pruned(str(stop), attrs=attrs()) from None
        return value, attrs()


__all__ = [
    "SCORINGS",
    "ProxyObjective",
    "ProxyScorer",
    "Pruned",
    "Reporter",
    "server_holdout",
    "split_server_holdout",
    "synthetic_dataset",
]
