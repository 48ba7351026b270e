"""A search candidate: the parameters of one trial, resolved into what trains a model.

:class:`CandidateFactory` is the only path from a parameter dict (``group.field`` → value) to an
architecture, proxy-training settings and FedAvg overrides. The proxy trial, FL validation and
the report all rebuild candidates through it — from a trial's params or from a row of the trial
or ranking table — so the network FedAvg trains is exactly the one the proxy scored (Optuna's
``FixedTrial`` idea). ``candidate_id`` hashes the *resolved* candidate, so two parameter dicts
that build the same thing (a value searched in one space, fixed in another, or ``3`` vs ``3.0``
read back from a CSV) share an id; the id joins every table of a study.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from distdd_nas.errors import SearchSpaceError
from distdd_nas.fedavg.server import FedAvgSettings
from distdd_nas.models import ArchSpec
from distdd_nas.search.space import FIELDS, Value
from distdd_nas.training import TrainSettings

PARAM_PREFIX = "params_"


def canonical_value(name: str, value: Any) -> Value:
    """``value`` as the plain Python type its field takes (``3.0`` → ``3`` for integer fields).

    Raises:
        SearchSpaceError: Unknown name, or a value that does not fit the field.
    """
    group, _, fld = name.partition(".")
    kind = FIELDS.get(group, {}).get(fld)
    if kind is None:
        raise SearchSpaceError(
            f"parameter {name!r} is unknown; use arch.*, train.* or fedavg.* "
            "names (see distdd_nas.search.space.FIELDS)"
        )
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(kind, tuple):
        if not isinstance(value, str):
            raise SearchSpaceError(
                f"parameter {name!r} = {value!r} must be one of {', '.join(kind)}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SearchSpaceError(f"parameter {name!r} = {value!r} must be a number")
    if kind == "int":
        if not float(value).is_integer():
            raise SearchSpaceError(f"parameter {name!r} = {value!r} must be a whole number")
        return int(value)
    return float(value)


def canonical_params(params: Mapping[str, Any]) -> dict[str, Value]:
    """Parameters sorted by name with canonical values (see :func:`canonical_value`)."""
    return {name: canonical_value(name, params[name]) for name in sorted(params)}


def params_from_row(row: Mapping[str, Any]) -> dict[str, Value]:
    """The ``params_*`` columns of a trial/ranking row as a parameter dict (NaN = not set)."""
    out: dict[str, Value] = {}
    for key, value in row.items():
        if not str(key).startswith(PARAM_PREFIX):
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        name = str(key).removeprefix(PARAM_PREFIX)
        out[name] = canonical_value(name, value)
    return out


@dataclass(frozen=True)
class Candidate:
    """An architecture plus proxy-training settings plus FedAvg overrides.

    Attributes:
        arch: The network (canonical: fields its family ignores are reset).
        train: How the proxy trains it on the distilled set.
        fedavg: FedAvg overrides by field name (``lr``, ``local_epochs``, ``batch_size``,
            ``server_lr``, ``momentum``, ``weight_decay``, ``rounds``); empty for pure
            architecture candidates. Non-empty means the proxy is simulated FedAvg.
        params: The canonical parameters it was built from (not part of equality: two
            dicts that build the same thing give equal candidates).
    """

    arch: ArchSpec
    train: TrainSettings
    fedavg: Mapping[str, int | float] = field(default_factory=dict)
    params: Mapping[str, Value] = field(default_factory=dict, compare=False)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], *, reference: ArchSpec, train: TrainSettings
    ) -> Candidate:
        """Resolve ``group.field`` parameters over the study's reference arch and settings.

        Raises:
            SearchSpaceError: Unknown parameter names or values of the wrong kind.
            ConfigError: The resulting architecture is invalid (from :class:`ArchSpec`).
        """
        canon = canonical_params(params)
        arch_fields: dict[str, Any] = {}
        train_fields: dict[str, Any] = {}  # values checked by canonical_params
        fedavg: dict[str, int | float] = {}
        for name, value in canon.items():
            group, _, key = name.partition(".")
            if group == "arch":
                arch_fields[key] = value
            elif group == "train":
                train_fields[key] = value
            else:
                fedavg[key] = value  # type: ignore[assignment]
        arch = ArchSpec.from_dict({**reference.to_dict(), **arch_fields}).canonical()
        return cls(arch=arch, train=replace(train, **train_fields), fedavg=fedavg, params=canon)

    def resolved(self) -> dict[str, Any]:
        """Every value that determines what is trained (the basis of the id)."""
        return {
            "arch": self.arch.to_dict(),
            "train": self.train.identity(),
            "fedavg": dict(sorted(self.fedavg.items())),
        }

    @property
    def candidate_id(self) -> str:
        """Short stable hash (10 hex digits) of :meth:`resolved`."""
        text = json.dumps(self.resolved(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def is_fedavg(self) -> bool:
        """True when the candidate tunes FedAvg (scored by simulated FedAvg)."""
        return bool(self.fedavg)

    def fedavg_settings(self, base: FedAvgSettings) -> FedAvgSettings:
        """The study's FedAvg settings with this candidate's overrides applied."""
        local: dict[str, Any] = {
            k: v
            for k, v in self.fedavg.items()
            if k in ("lr", "batch_size", "momentum", "weight_decay")
        }
        if "local_epochs" in self.fedavg:
            local["epochs"] = int(self.fedavg["local_epochs"])
        server: dict[str, Any] = {}
        if "server_lr" in self.fedavg:
            server["server_lr"] = float(self.fedavg["server_lr"])
        if "rounds" in self.fedavg:
            server["rounds"] = int(self.fedavg["rounds"])
        return replace(base, local=replace(base.local, **local), **server)

    def describe(self) -> str:
        """Human-readable label: the model name plus any hyper-parameters."""
        extra = [
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in self.params.items()
            if not k.startswith("arch.")
        ]
        return " ".join([self.arch.short_name(), *extra])

    def __hash__(self) -> int:
        return hash(self.candidate_id)


@dataclass(frozen=True)
class CandidateFactory:
    """Builds candidates over a study's reference architecture and proxy-training settings.

    Example:
        >>> from distdd_nas.models import ArchSpec
        >>> make = CandidateFactory(reference=ArchSpec(width=16), train=TrainSettings(epochs=5))
        >>> c = make({"arch.depth": 2, "train.lr": 0.05})
        >>> (c.arch.depth, c.arch.width, c.train.lr)
        (2, 16, 0.05)
        >>> make.from_row({"params_arch.depth": 2.0, "params_train.lr": 0.05}) == c
        True
    """

    reference: ArchSpec
    train: TrainSettings

    def __call__(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate of a parameter dict (trial params plus the space's fixed values)."""
        return Candidate.from_params(params, reference=self.reference, train=self.train)

    def from_row(self, row: Mapping[str, Any]) -> Candidate:
        """The candidate of a trial/ranking table row (its ``params_*`` columns)."""
        return self(params_from_row(row))

    def reference_values(self, fedavg: FedAvgSettings | None = None) -> dict[str, Value]:
        """The reference candidate as ``group.field`` values (to enqueue it as first trial)."""
        values: dict[str, Value] = {f"arch.{k}": v for k, v in self.reference.to_dict().items()}
        values.update(
            {f"train.{k}": v for k, v in asdict(self.train).items() if k in FIELDS["train"]}
        )
        if fedavg is not None:
            local = fedavg.local
            values.update(
                {
                    "fedavg.lr": local.lr,
                    "fedavg.local_epochs": local.epochs,
                    "fedavg.batch_size": local.batch_size,
                    "fedavg.momentum": local.momentum,
                    "fedavg.weight_decay": local.weight_decay,
                    "fedavg.server_lr": fedavg.server_lr,
                    "fedavg.rounds": fedavg.rounds,
                }
            )
        return values

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (travels to NNI trial processes)."""
        return {"reference": self.reference.to_dict(), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateFactory:
        """Inverse of :meth:`to_dict`."""
        return cls(
            reference=ArchSpec.from_dict(data["reference"]), train=TrainSettings(**data["train"])
        )


__all__ = [
    "PARAM_PREFIX",
    "Candidate",
    "CandidateFactory",
    "canonical_params",
    "canonical_value",
    "params_from_row",
]
