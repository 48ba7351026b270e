"""Declarative search spaces in TOML, in Optuna's distribution vocabulary.

A space file holds searched parameters under ``[params]`` and constants under ``[fixed]`` (or as
plain values inside ``[params]``). Parameter names are ``<group>.<field>``; TOML's dotted tables
and quoted keys both work::

    description = "DC's ConvNet space"

    [fixed]
    "arch.family" = "convnet"        # constant: every candidate is a ConvNet

    [params.arch.depth]              # same as [params."arch.depth"]
    type = "categorical"             # or "int" / "float" (Optuna's abbreviated form)
    choices = [1, 2, 3, 4]

    [params."train.lr"]
    type = "float"
    low = 1e-3
    high = 1e-1
    log = true                       # optional; "step" too (not both), as in Optuna

Groups: ``arch`` (fields of :class:`~distdd_nas.models.ArchSpec`), ``train`` (proxy training on
the distilled set) and ``fedavg`` (federated hyper-parameters, scored by simulated FedAvg on the
distilled set), so one space can combine architecture and hyper-parameters. The same space
converts to Optuna distributions (:meth:`SearchSpace.to_optuna`) and to NNI's search-space JSON
(:meth:`SearchSpace.to_nni`), so both backends search the same thing. Every validation error is
one :class:`~distdd_nas.errors.SearchSpaceError` line that names the parameter and the fix.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna.distributions as od

from distdd_nas.errors import SearchSpaceError
from distdd_nas.models import ACTIVATIONS, FAMILIES, NORMS, POOLS

Value = int | float | str | bool

#: What each ``group.field`` accepts: "int", "float", or a tuple of allowed strings.
FIELDS: Mapping[str, Mapping[str, str | tuple[str, ...]]] = {
    "arch": {
        "family": FAMILIES,
        "depth": "int",
        "width": "int",
        "act": ACTIVATIONS,
        "norm": NORMS,
        "pool": POOLS,
        "hidden": "int",
    },
    "train": {
        "epochs": "int",
        "lr": "float",
        "momentum": "float",
        "weight_decay": "float",
        "batch_size": "int",
    },
    "fedavg": {
        "lr": "float",
        "local_epochs": "int",
        "batch_size": "int",
        "server_lr": "float",
        "momentum": "float",
        "weight_decay": "float",
        "rounds": "int",
    },
}
#: Backwards-compatible view: group → field names.
GROUP_FIELDS: Mapping[str, tuple[str, ...]] = {g: tuple(f) for g, f in FIELDS.items()}
TYPES = ("categorical", "int", "float")
_KEYS = {
    "categorical": {"type", "choices"},
    "int": {"type", "low", "high", "log", "step"},
    "float": {"type", "low", "high", "log", "step"},
}
_TOP_LEVEL = {"params", "fixed", "description"}


@dataclass(frozen=True)
class Param:
    """One searched parameter (Optuna's categorical / int / float distributions)."""

    name: str
    type: str
    choices: tuple[Value, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def to_optuna(self) -> od.BaseDistribution:
        """The equivalent Optuna distribution."""
        if self.type == "categorical":
            return od.CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return od.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return od.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def to_nni(self) -> dict[str, Any]:
        """The equivalent NNI search-space entry (``{"_type": ..., "_value": ...}``).

        Integers become ``randint`` (NNI's upper bound is exclusive) or, when stepped or
        log-scaled, a ``choice`` over the exact values, so NNI never proposes a value Optuna
        could not. Stepped floats become ``quniform``.
        """
        if self.type == "categorical":
            return {"_type": "choice", "_value": list(self.choices)}
        if self.type == "int":
            if self.step in (None, 1) and not self.log:
                return {"_type": "randint", "_value": [int(self.low), int(self.high) + 1]}
            return {"_type": "choice", "_value": self.grid()}
        if self.step is not None:
            return {"_type": "quniform", "_value": [self.low, self.high, self.step]}
        return {"_type": "loguniform" if self.log else "uniform", "_value": [self.low, self.high]}

    def grid(self) -> list[Value]:
        """Every value of a finite parameter, in order (the grid sampler needs them)."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is not None:
            n = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return [round(self.low + i * self.step, 12) for i in range(n)]
        raise SearchSpaceError(
            f"parameter {self.name!r} is a continuous float; the grid sampler "
            "needs categorical, int or stepped float parameters (add a step "
            "or choices, or use the tpe sampler)"
        )

    def sample(self, rng: np.random.Generator) -> Value:
        """One value drawn uniformly from the distribution (log-uniformly when ``log``).

        Stepped and integer parameters are drawn uniformly over their grid (log-scaled integers
        log-uniformly, then rounded); the draw uses only ``rng``, so a seed fixes it.
        """
        if self.type == "categorical":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.type == "int" and self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            return int(min(max(round(value), self.low), self.high))
        if self.type == "int" or self.step is not None:
            values = self.grid()
            return values[int(rng.integers(len(values)))]
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this parameter's distribution."""
        if self.type == "categorical":
            return any(_same(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.type == "int" and float(value) != int(value):
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True


@dataclass(frozen=True)
class SearchSpace:
    """Searched parameters plus fixed ones; ``name`` is the file stem."""

    name: str
    params: tuple[Param, ...]
    fixed: Mapping[str, Value] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read and validate a TOML space file.

        Raises:
            SearchSpaceError: The file is missing, not TOML, or declares an invalid parameter.
        """
        path = Path(path)
        if not path.is_file():
            raise SearchSpaceError(
                f"search space {str(path)!r} not found; pass a file such as "
                "search_spaces/convnet720.toml"
            )
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise SearchSpaceError(f"{path}: not valid TOML ({err}); fix the syntax") from None
        return cls.from_dict(data, name=path.stem)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "space") -> SearchSpace:
        """Validate a parsed space (the TOML document as a dict).

        Raises:
            SearchSpaceError: Unknown tables, names, types or keys; empty choices; low > high;
                log-scaling with low <= 0; a parameter both fixed and searched; nothing searched.
        """
        unknown = sorted(set(data) - _TOP_LEVEL)
        if unknown:
            raise SearchSpaceError(
                f"space {name}: unknown table(s) {unknown}; use [params] "
                "(searched) and [fixed] (constants)"
            )
        fixed: dict[str, Value] = {}
        params: list[Param] = []
        for key, spec in _flatten(data.get("params", {}), "params"):
            if isinstance(spec, Mapping):
                params.append(_parse_param(key, spec))
            else:
                fixed[key] = _check_fixed(key, spec)
        for key, value in _flatten(data.get("fixed", {}), "fixed"):
            if isinstance(value, Mapping):
                raise SearchSpaceError(
                    f"fixed parameter {key!r} must be a plain value, not a "
                    "table; move it under [params] to search it"
                )
            if key in fixed:
                raise SearchSpaceError(f"parameter {key!r} is fixed twice; keep one")
            fixed[key] = _check_fixed(key, value)
        overlap = sorted(set(fixed) & {p.name for p in params})
        if overlap:
            raise SearchSpaceError(f"parameter(s) {overlap} are both fixed and searched; keep one")
        if not params:
            raise SearchSpaceError(
                f"space {name} searches no parameter; add a [params.<group>."
                "<field>] table with a type"
            )
        description = data.get("description", "")
        return cls(name=name, params=tuple(params), fixed=fixed, description=str(description))

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the searched parameters, in file order."""
        return tuple(p.name for p in self.params)

    def to_optuna(self) -> dict[str, od.BaseDistribution]:
        """Searched parameters as Optuna distributions (for ``Study.ask``)."""
        return {p.name: p.to_optuna() for p in self.params}

    def to_nni(self) -> dict[str, dict[str, Any]]:
        """Searched parameters as NNI's search-space JSON."""
        return {p.name: p.to_nni() for p in self.params}

    def grid(self) -> dict[str, list[Value]]:
        """Every value of every searched parameter (for Optuna's GridSampler).

        Raises:
            SearchSpaceError: A continuous float parameter has no finite grid.
        """
        return {p.name: p.grid() for p in self.params}

    @property
    def size(self) -> float:
        """Number of distinct points (``inf`` when a float parameter is continuous)."""
        total = 1.0
        for p in self.params:
            if p.type == "float" and p.step is None:
                return math.inf
            total *= len(p.grid())
        return total

    def groups(self) -> set[str]:
        """Groups touched by the space (``arch``, ``train``, ``fedavg``)."""
        return {n.split(".")[0] for n in [*self.fixed, *self.names]}

    def point(self, values: Mapping[str, Any]) -> dict[str, Value] | None:
        """The searched part of ``values`` (``group.field`` → value) if it lies in the space.

        Used to express the study's reference candidate in the space's parameters; returns
        ``None`` when a searched parameter has no value or the value is not a point of the space.
        """
        out: dict[str, Value] = {}
        for p in self.params:
            if p.name not in values or not p.contains(values[p.name]):
                return None
            value = values[p.name]
            out[p.name] = int(value) if p.type == "int" else value
        return out

    def sample(self, rng: np.random.Generator) -> dict[str, Value]:
        """One point drawn independently per parameter (see :meth:`Param.sample`)."""
        return {p.name: p.sample(rng) for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        """The space as a JSON/TOML-able dict (inverse of :meth:`from_dict`)."""
        params: dict[str, Any] = {}
        for p in self.params:
            if p.type == "categorical":
                params[p.name] = {"type": p.type, "choices": list(p.choices)}
            else:
                cast = int if p.type == "int" else float
                spec: dict[str, Any] = {"type": p.type, "low": cast(p.low), "high": cast(p.high)}
                if p.log:
                    spec["log"] = True
                if p.step is not None:
                    spec["step"] = cast(p.step)
                params[p.name] = spec
        return {"description": self.description, "fixed": dict(self.fixed), "params": params}


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``True != 1`` here) but lets 2 == 2.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _flatten(table: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Yield (``group.field``, spec) from ``{"arch.depth": ..}`` or ``{"arch": {"depth": ..}}``."""
    if not isinstance(table, Mapping):
        raise SearchSpaceError(f"[{where}] must be a table of <group>.<field> entries")
    for key, value in table.items():
        if "." in key:
            yield key, value
        elif key in FIELDS and isinstance(value, Mapping) and "type" not in value:
            for sub, spec in value.items():
                yield f"{key}.{sub}", spec
        else:
            _check_name(key)  # raises with the list of valid names


def _check_name(name: str) -> str | tuple[str, ...]:
    group, _, fld = name.partition(".")
    kind = FIELDS.get(group, {}).get(fld)
    if kind is None:
        valid = "; ".join(f"{g}.{{{','.join(f)}}}" for g, f in FIELDS.items())
        raise SearchSpaceError(f"parameter {name!r} is unknown; valid names: {valid}")
    return kind


def _check_value(name: str, kind: str | tuple[str, ...], value: Any, what: str) -> None:
    if isinstance(kind, tuple):
        if not isinstance(value, str) or value not in kind:
            raise SearchSpaceError(
                f"parameter {name!r} has {what} {value!r}; use one of {', '.join(kind)}"
            )
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SearchSpaceError(
                f"parameter {name!r} needs integers but has {what} "
                f"{value!r}; write whole numbers without a decimal point"
            )
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise SearchSpaceError(f"parameter {name!r} needs numbers but has {what} {value!r}")


def _check_fixed(name: str, value: Any) -> Value:
    kind = _check_name(name)
    _check_value(name, kind, value, "fixed value")
    return value  # type: ignore[no-any-return]


def _parse_param(name: str, spec: Mapping[str, Any]) -> Param:
    kind = _check_name(name)
    dist = spec.get("type")
    if dist not in TYPES:
        raise SearchSpaceError(
            f"parameter {name!r} has unknown type {dist!r}; use one of {', '.join(TYPES)}"
        )
    extra = sorted(set(spec) - _KEYS[dist])
    if extra:
        raise SearchSpaceError(
            f"parameter {name!r} ({dist}) has unknown key(s) {extra}; "
            f"allowed: {sorted(_KEYS[dist])}"
        )
    if dist == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(
                f"parameter {name!r} has empty or missing choices; list at least one value"
            )
        if len({(type(c), c) for c in choices}) != len(choices):
            raise SearchSpaceError(f"parameter {name!r} lists a choice twice; remove duplicates")
        for choice in choices:
            _check_value(name, kind, choice, "choice")
        return Param(name, dist, choices=tuple(choices))
    if isinstance(kind, tuple):
        raise SearchSpaceError(
            f'parameter {name!r} takes names ({", ".join(kind)}); use type = "categorical"'
        )
    if kind == "int" and dist == "float":
        raise SearchSpaceError(f'parameter {name!r} is an integer field; use type = "int"')
    if "low" not in spec or "high" not in spec:
        raise SearchSpaceError(f"parameter {name!r} needs both low and high")
    low, high = spec["low"], spec["high"]
    for bound in (low, high):
        _check_value(name, "int" if dist == "int" else "float", bound, "bound")
    if low > high:
        raise SearchSpaceError(f"parameter {name!r} has low > high ({low} > {high}); swap them")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SearchSpaceError(f"parameter {name!r} has log = {log!r}; use true or false")
    step = spec.get("step")
    if log and low <= 0:
        raise SearchSpaceError(f"parameter {name!r} is log-scaled but low={low} <= 0; use low > 0")
    if log and step is not None:
        raise SearchSpaceError(f"parameter {name!r} cannot have both log and step; keep one")
    if step is not None:
        _check_value(name, "int" if dist == "int" else "float", step, "step")
        if step <= 0:
            raise SearchSpaceError(f"parameter {name!r} has step={step}; use a positive step")
    return Param(
        name,
        dist,
        low=float(low),
        high=float(high),
        log=log,
        step=None if step is None else float(step),
    )


__all__ = ["FIELDS", "GROUP_FIELDS", "TYPES", "Param", "SearchSpace", "Value"]
