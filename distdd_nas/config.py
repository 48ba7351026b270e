"""The study configuration: a frozen, validated tree loaded from TOML plus ``--set`` overrides.

A study file (``studies/*.toml``) overrides code defaults only where it differs from them.
``--set a.b=value`` parses ``value`` as a TOML literal (``3``, ``0.1``, ``true``, ``"x"``,
``[1, 2]``), falling back to a bare string. Unknown keys and wrong types are rejected with their
dotted path; every float must be finite and inside a ceiling (:data:`MAX_LR` and friends), so
no setting can overflow training arithmetic, and ``study.name`` must be one safe path component
(it names ``runs/<study>``). :func:`fingerprint` hashes the sections a stage depends on, which
is how stage directories are content-addressed (see :mod:`distdd_nas.artifacts`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from distdd_nas.errors import ConfigError
from distdd_nas.resources import resolve_study
from distdd_nas.study_files import apply_override, parse_override, read_study

#: An aggregator by name (``"median"``) or as a table with options
#: (``{ name = "trimmed_mean", trim = 0.2 }``); checked against the registry in
#: :mod:`distdd_nas.federation.aggregators` when a :class:`~distdd_nas.study.Study` is built.
AggregatorChoice = str | dict[str, str | int | float | bool]


#: Ceilings of float settings: far above any useful value, far below where SGD arithmetic
#: overflows (``fedavg.weight_decay = 1e308`` used to train to NaN and exit 0).
MAX_LR = 1e4
MAX_WEIGHT_DECAY = 1.0
MAX_PROX_MU = 1e3
MAX_ALPHA = 1e6
MAX_SECONDS = 1e8

#: What ``study.name`` may be: one path component (it names ``runs/<study>`` and the search).
STUDY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class Section(BaseModel):
    """Base of every config section: immutable, no unknown keys, no NaN or infinite floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _lr(default: float) -> Any:
    """A learning-rate field: positive, at most :data:`MAX_LR`."""
    return Field(default=default, gt=0.0, le=MAX_LR)


def _decay(default: float) -> Any:
    """A weight-decay field: in [0, :data:`MAX_WEIGHT_DECAY`]."""
    return Field(default=default, ge=0.0, le=MAX_WEIGHT_DECAY)


class StudySection(Section):
    """Identity of the study; ``seed`` is the root of every random stream.

    ``name`` names the run directory (``runs/<name>``) and the search study, so it must be one
    safe path component: 1-100 letters, digits, ``-``, ``_`` or ``.``, and not ``.`` or ``..``.
    """

    name: str = "study"
    seed: int = Field(default=0, ge=0)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not STUDY_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError(
                "must be one path component: 1-100 letters, digits, '-', '_' or '.', and not "
                "'.' or '..'"
            )
        return value


class DataSection(Section):
    """Which dataset, where it lives, and how to split off a test set where it has none."""

    name: Literal["digits", "fashion_mnist", "mnist", "cifar10", "svhn"] = "digits"
    root: str | None = None
    download: bool = False
    test_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    max_train: int | None = Field(default=None, ge=10)


class PartitionSection(Section):
    """How the training set is spread over clients (non-iid is first-class); ``library``:
    whose partitioners split (hand-written, or Flower Datasets' for iid/dirichlet/shards)."""

    method: Literal["iid", "dirichlet", "shards", "quantity"] = "dirichlet"
    library: Literal["distdd", "flwr_datasets"] = "distdd"
    num_clients: int = Field(default=10, ge=1)
    alpha: float = Field(default=0.5, gt=0.0, le=MAX_ALPHA)
    min_size: int = Field(default=10, ge=1)
    classes_per_client: int = Field(default=2, ge=1)
    holdout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_serializer(mode="wrap")
    def _omit_default_library(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump ``library`` only off its default: fingerprints made before it stay valid."""
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k != "library" or v != "distdd"}


class NoiseSection(Section):
    """Mislabeled clients: ``client_fraction`` of the clients get ``rate`` of labels flipped."""

    kind: Literal["none", "symmetric", "pair"] = "none"
    rate: float = Field(default=0.0, ge=0.0, le=1.0)
    client_fraction: float = Field(default=0.0, ge=0.0, le=1.0)


class ModelSection(Section):
    """The reference architecture (fields of :class:`distdd_nas.models.ArchSpec`)."""

    family: Literal["convnet", "mlp", "lenet"] = "convnet"
    depth: int = Field(default=3, ge=1)
    width: int = Field(default=128, ge=1)
    act: Literal["relu", "leakyrelu", "sigmoid"] = "relu"
    norm: Literal["none", "batch", "layer", "instance", "group"] = "instance"
    pool: Literal["none", "max", "avg"] = "avg"
    hidden: int = Field(default=128, ge=1)


class FederationSection(Section):
    """The engine that carries every payload, and client sampling."""

    engine: Literal["inprocess", "flower"] = "inprocess"
    fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    failure_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Simulated faults (distdd_nas.federation.faults): a seeded share of clients corrupts every
    # gradient/update it sends; rounds need min_replies usable replies or are retried.
    byzantine_fraction: float = Field(default=0.0, ge=0.0, lt=0.5)
    byzantine_kind: Literal["non_finite", "scale", "sign_flip", "noise"] = "sign_flip"
    byzantine_scale: float = Field(default=100.0, allow_inf_nan=False)
    min_replies: int = Field(default=1, ge=1)
    round_retries: int = Field(default=2, ge=0)
    flower_backend: Literal["simulation", "deployment"] = "simulation"
    # TLS + SuperNode auth on deployment (false: --insecure); dumped/fingerprinted only if off
    flower_secure: bool = Field(default=True, exclude_if=lambda v: v)


class FedAvgSection(Section):
    """FedAvg (FedProx when ``prox_mu`` > 0) on the engine."""

    rounds: int = Field(default=20, ge=1)
    local_epochs: int = Field(default=1, ge=1)
    local_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = _lr(0.05)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = _decay(0.0)
    server_lr: float = _lr(1.0)
    prox_mu: float = Field(default=0.0, ge=0.0, le=MAX_PROX_MU)
    aggregator: AggregatorChoice = "mean"
    eval_every: int = Field(default=1, ge=1)


class EvalSection(Section):
    """DC's evaluation protocol: fresh nets trained on the synthetic set, mean ± std accuracy."""

    num_models: int = Field(default=3, ge=1)
    epochs: int = Field(default=300, ge=1)
    lr: float = _lr(0.01)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = _decay(5e-4)
    batch_size: int = Field(default=256, ge=1)


class DistillSection(Section):
    """DistDD: federated gradient matching (see ../shared/distdd-notes.md for the defaults)."""

    ipc: int = Field(default=10, ge=1)
    iterations: int = Field(default=100, ge=1)
    outer_loop: int | None = Field(default=None, ge=1)
    inner_loop: int | None = Field(default=None, ge=0)
    batch_real: int = Field(default=64, ge=1)
    batch_mode: Literal["proportional", "per_client"] = "proportional"
    # Share of the clients asked for gradients each matching step (None: federation.fraction,
    # which FedAvg shares). The step's batch_real images per class come from fewer clients in
    # larger batches, so a step costs less; dumped only if set, so earlier fingerprints hold.
    fraction: float | None = Field(default=None, gt=0.0, le=1.0, exclude_if=lambda v: v is None)
    batch_syn: int = Field(default=256, ge=1)
    lr_img: float = _lr(0.1)
    momentum_img: float = Field(default=0.5, ge=0.0, lt=1.0)
    lr_net: float = _lr(0.01)
    distance: Literal["layerwise_cosine", "mse", "cosine"] = "layerwise_cosine"
    net_update: Literal["synthetic", "global_grad"] = "synthetic"
    # torch.compile for the synthetic inner loop: "auto" compiles when the run takes enough
    # inner-loop steps to pay for the one-off compilation (distdd_nas.distill.compiled); dumped
    # only if not "auto", so earlier fingerprints hold.
    compile: Literal["auto", "on", "off"] = Field(default="auto", exclude_if=lambda v: v == "auto")
    init: Literal["noise", "client_mean"] = "noise"
    # client_mean: a client sends a class's pixel sums only if it holds at least this many
    # images of it (with 1, a client holding one image of a class would send that image)
    init_min_count: int = Field(default=5, ge=1)
    # Differential privacy of the class gradients (distdd_nas.distill.privacy): per-example
    # clipping at dp_clip (0: off) and Gaussian noise, set directly or by a target ε at dp_delta
    dp_clip: float = Field(default=0.0, ge=0.0)
    dp_noise_multiplier: float = Field(default=0.0, ge=0.0)
    dp_target_epsilon: float | None = Field(default=None, gt=0.0)
    dp_delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    grad_dtype: Literal["float32", "float16", "int8", "int4", "int2"] = "float32"
    # distill/codec.py; dumped only off their defaults, so earlier fingerprints stay valid
    grad_topk: float = Field(default=1.0, gt=0.0, le=1.0, exclude_if=lambda v: v == 1.0)
    seed_broadcast: bool = Field(default=False, exclude_if=lambda v: not v)
    aggregator: AggregatorChoice = "mean"
    eval_every: int = Field(default=0, ge=0)  # accuracy checkpoints every N iterations (0: none)
    eval: EvalSection = EvalSection()


class SearchSection(Section):
    """The search: on the distilled set (``objective = "distilled"``, the product), or with real
    FedAvg per candidate (``objective = "fedavg"``, the baseline: ``fedavg.rounds`` rounds each,
    accuracy reported every round, so ``pruner = "successive_halving"`` or ``"hyperband"``
    budgets rounds; every byte metered; Optuna only).

    ``sampler``: Optuna takes tpe/random/grid/cmaes/gp, NNI tpe/random/grid/evolution.
    ``holdout_fraction``: share of the test split the server keeps for ``server_holdout``
    scoring (FL validation then reports accuracy on the rest). ``virtual_examples``: total size
    of the virtual clients of simulated FedAvg (``fedavg.*`` spaces; None = the real sizes);
    ``virtual_steps``: ``real`` (default: batch scaled with the examples, so each virtual
    client takes its real client's local steps per round) or ``scaled`` (the study's batch:
    fewer local steps).
    ``trial_timeout_s`` and ``concurrency`` apply to NNI trials.
    """

    backend: Literal["optuna", "nni"] = "optuna"
    objective: Literal["distilled", "fedavg"] = "distilled"
    space: str = "convnet720"
    n_trials: int = Field(default=30, ge=1)
    sampler: Literal["tpe", "random", "grid", "cmaes", "gp", "evolution"] = "tpe"
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = "none"
    storage: str | None = None
    scoring: Literal["federated", "server_holdout"] = "federated"
    holdout_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    virtual_examples: int | None = Field(default=2000, ge=1)
    # local steps of simulated FedAvg's virtual clients (search.simulate): "real" ranks FL
    # hyper-parameters closer to real FedAvg (bench/data/fedavg_grid). Dumped only if not
    # "scaled", the setting before the choice existed, so identities made then still hold.
    virtual_steps: Literal["scaled", "real"] = Field(
        default="real", exclude_if=lambda v: v == "scaled"
    )
    trial_timeout_s: float | None = Field(default=None, gt=0.0, le=MAX_SECONDS)
    concurrency: int = Field(default=1, ge=1)
    epochs: int = Field(default=100, ge=1)
    lr: float = _lr(0.01)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = _decay(5e-4)
    batch_size: int = Field(default=256, ge=1)
    # DSA augmentation of every proxy-training batch (distdd_nas.augment); dumped only if used
    augment: Literal["none", "dsa"] = Field(default="none", exclude_if=lambda v: v == "none")
    seeds_per_trial: int = Field(default=1, ge=1)
    timeout_s: float | None = Field(default=None, gt=0.0, le=MAX_SECONDS)


class ValidateSection(Section):
    """Real FedAvg on the top-k proxy candidates plus seeded random controls, and (``reference``)
    the study's reference configuration, so the report says whether the search beat it.

    ``rounds`` overrides ``fedavg.rounds`` for the validation runs (None: the same rounds). The
    report prices a FedAvg-based search at the same rounds: the accuracies the ranking is judged
    on and the cost it is compared with always refer to one number of rounds.
    """

    top_k: int = Field(default=5, ge=1)
    n_random: int = Field(default=3, ge=0)
    rounds: int | None = Field(default=None, ge=1)  # FedAvg rounds per candidate (fedavg.rounds)
    reference: bool = True  # also train the study's reference configuration (the baseline)


class GroundTruthSection(Section):
    """Real FedAvg curves of candidates sampled from ``search.space`` (the ranking evidence).

    ``candidates`` distinct candidates (the reference first) drawn with ``sample_seed``, each
    trained ``replicates`` times (FedAvg seed ``study.seed + k``) for ``rounds`` rounds
    (None: ``fedavg.rounds``), evaluated after every round.
    """

    candidates: int = Field(default=40, ge=1)
    replicates: int = Field(default=2, ge=1)
    rounds: int | None = Field(default=None, ge=1)
    sample_seed: int = Field(default=0, ge=0)


class StudyConfig(Section):
    """The whole study. Every section has defaults; a study file overrides what differs."""

    study: StudySection = StudySection()
    data: DataSection = DataSection()
    partition: PartitionSection = PartitionSection()
    noise: NoiseSection = NoiseSection()
    model: ModelSection = ModelSection()
    federation: FederationSection = FederationSection()
    fedavg: FedAvgSection = FedAvgSection()
    distill: DistillSection = DistillSection()
    search: SearchSection = SearchSection()
    validate_: ValidateSection = Field(default=ValidateSection(), alias="validate")
    groundtruth: GroundTruthSection = GroundTruthSection()

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    @model_validator(mode="after")
    def _check_cross_fields(self) -> StudyConfig:
        if self.noise.kind != "none" and (self.noise.rate == 0 or self.noise.client_fraction == 0):
            raise ValueError(
                "noise.kind is set but noise.rate or noise.client_fraction is 0; set both > 0 "
                'or use noise.kind = "none"'
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (section ``validate`` under its public name)."""
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


_TYPE_TAGS = frozenset({"str", "int", "float", "bool"})


def _describe(err: ValidationError) -> str:
    errors = err.errors()
    # a non-finite number inside a union (an aggregator's options) beats "not a string"
    first = next((e for e in errors if e["type"] == "finite_number"), errors[0])
    # union members show up in the location as type tags ("str", "dict[str,...]"): drop them
    keys = [str(p) for p in first["loc"] if str(p) not in _TYPE_TAGS and "[" not in str(p)]
    where = ".".join(keys) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}; check the spelling against the defaults in config.py"
    got = first.get("input")
    text = repr(got)
    shown = "" if isinstance(got, dict) else f" (got {text[:60]}{'...' if len(text) > 60 else ''})"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}{shown}"


def from_dict(data: Mapping[str, Any], *, source: str = "config") -> StudyConfig:
    """Validate a plain mapping into a :class:`StudyConfig`; errors name the dotted key."""
    try:
        return StudyConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(
            f"{source}: {_describe(err)}; fix the study file or the --set override"
        ) from None


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, values: Mapping[str, Any] | None = None
) -> StudyConfig:
    """Read a study TOML (a path or a shipped study's name: :mod:`distdd_nas.resources`), apply
    ``--set`` overrides, then ``values`` (same keys, Python values: ``{"fedavg.rounds": 3}``).

    A study may start with ``extends = "other.toml"`` (a path relative to its own file, else a
    shipped study): the other study is read first and this file's keys override it, section by
    section and key by key. Studies that must share a budget (the fidelity comparisons) say so
    by construction. The study name defaults to the file's stem unless ``study.name`` is set.
    """
    path = resolve_study(path)
    tree = read_study(path, seen=())
    tree.setdefault("study", {}).setdefault("name", path.stem)
    for text in overrides:
        apply_override(tree, *parse_override(text))
    for key, value in (values or {}).items():
        if not key or not all(key.split(".")):
            raise ConfigError(f"bad override key {key!r}; write section.key, e.g. fedavg.rounds")
        apply_override(tree, key.split("."), value)
    return from_dict(tree, source=str(path))


def fingerprint(
    config: StudyConfig, sections: Iterable[str] | None = None, *, extra: Any = None
) -> str:
    """Short content hash of the named sections (all when None) plus optional extra data."""
    full = config.to_dict()
    chosen = full if sections is None else {name: full[name] for name in sections}
    payload = json.dumps({"config": chosen, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
