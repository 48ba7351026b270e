"""Architecture specs and the one factory that turns them into modules.

An :class:`ArchSpec` is a frozen, hashable value of a few JSON fields, so it can be a search
candidate, travel to clients inside a message, and rebuild the identical network anywhere;
:func:`build_model` with a ``seed`` also makes the initial weights a pure function of that seed.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from distdd_nas.errors import ConfigError
from distdd_nas.models.convnet import ConvNet
from distdd_nas.models.lenet import LeNet
from distdd_nas.models.mlp import MLP
from distdd_nas.models.params import count_parameters, init_model

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "NORMS",
    "POOLS",
    "ArchSpec",
    "build_model",
    "count_parameters",
]

FAMILIES = ("convnet", "mlp", "lenet")
ACTIVATIONS = ("relu", "leakyrelu", "sigmoid")
NORMS = ("none", "batch", "layer", "instance", "group")
POOLS = ("none", "max", "avg")

_CHOICES: dict[str, tuple[str, ...]] = {
    "family": FAMILIES,
    "act": ACTIVATIONS,
    "norm": NORMS,
    "pool": POOLS,
}
_POSITIVE_INTS = ("depth", "width", "hidden")
_GROUPS = 4  # DC's "groupnorm" uses GroupNorm(4, width)


def _is_int(value: object) -> bool:
    """True for Python/NumPy integers, False for bools and floats (``3.0`` is not a depth)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ArchSpec:
    """One network of the search space (DC's ConvNet family by default).

    Attributes:
        family: ``convnet``, ``mlp`` or ``lenet``.
        depth: ConvNet blocks, or MLP hidden layers.
        width: ConvNet channels per block.
        act: Activation everywhere: ``relu``, ``leakyrelu`` or ``sigmoid``.
        norm: ConvNet normalisation: ``none``, ``batch``, ``layer``, ``instance`` or ``group``.
        pool: ConvNet pooling after each block: ``none``, ``max`` or ``avg``.
        hidden: MLP hidden width.

    Fields a family does not use (e.g. ``width`` for the MLP) are still validated, but ignored by
    :func:`build_model`; :meth:`canonical` resets them so equal networks compare equal.
    """

    family: str = "convnet"
    depth: int = 3
    width: int = 128
    act: str = "relu"
    norm: str = "instance"
    pool: str = "avg"
    hidden: int = 128

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise ConfigError(
                    f"architecture field {name}={value!r} is invalid; use one of: "
                    f"{', '.join(allowed)}"
                )
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(
                    f"architecture field {name}={value!r} is invalid; use an integer >= 1"
                )
            object.__setattr__(self, name, int(value))  # numpy/optuna ints → plain int
        if self.family == "convnet" and self.norm == "group" and self.width % _GROUPS:
            raise ConfigError(
                f"architecture field width={self.width} is invalid with norm='group' "
                f"(GroupNorm({_GROUPS}, width) needs width divisible by {_GROUPS}); use a "
                f"multiple of {_GROUPS} or another norm"
            )

    def to_dict(self) -> dict[str, int | str]:
        """Return the fields as a JSON-ready dict (field order as declared)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        """Build a spec from a mapping; missing fields take defaults, unknown keys are an error.

        Raises:
            ConfigError: Unknown keys or invalid values.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ConfigError(
                f"unknown architecture field(s) {', '.join(unknown)}; valid fields are "
                f"{', '.join(known)}"
            )
        return cls(**{str(k): v for k, v in data.items()})

    def canonical(self) -> ArchSpec:
        """Return the spec with the fields its family ignores reset to their defaults."""
        default = ArchSpec()
        if self.family == "convnet":
            return replace(self, hidden=default.hidden)
        if self.family == "mlp":
            return ArchSpec(family="mlp", depth=self.depth, act=self.act, hidden=self.hidden)
        return ArchSpec(family="lenet", act=self.act)

    def short_name(self) -> str:
        """Human-readable name, e.g. ``ConvNet-d3w128-relu-instance-avg``."""
        if self.family == "convnet":
            return f"ConvNet-d{self.depth}w{self.width}-{self.act}-{self.norm}-{self.pool}"
        if self.family == "mlp":
            return f"MLP-d{self.depth}h{self.hidden}-{self.act}"
        return f"LeNet-{self.act}"


def _check_shapes(input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(_is_int(s) and s >= 1 for s in shape):
        raise ConfigError(
            f"input_shape={input_shape!r} is invalid; pass (channels, height, width) as three "
            "positive integers"
        )
    if not _is_int(num_classes) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} is invalid; pass an integer >= 1")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _construct(spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if spec.family == "convnet":
        return ConvNet(
            input_shape=input_shape,
            num_classes=num_classes,
            depth=spec.depth,
            width=spec.width,
            act=spec.act,
            norm=spec.norm,
            pool=spec.pool,
        )
    if spec.family == "mlp":
        return MLP(
            input_shape=input_shape,
            num_classes=num_classes,
            depth=spec.depth,
            hidden=spec.hidden,
            act=spec.act,
        )
    return LeNet(input_shape=input_shape, num_classes=num_classes, act=spec.act)


def build_model(
    spec: ArchSpec, *, input_shape: tuple[int, int, int], num_classes: int, seed: int | None = None
) -> nn.Module:
    """Build the network described by ``spec`` for images of ``input_shape`` (C, H, W).

    Args:
        spec: The architecture.
        input_shape: (channels, height, width) of one input image.
        num_classes: Number of output logits.
        seed: If given, weights come from ``torch.Generator().manual_seed(seed)`` via
            :func:`~distdd_nas.models.params.init_model`: bit-identical for the same seed, and the
            global RNG is not touched (the module is built on the meta device, then materialised).
            If ``None``, PyTorch's default init draws from the global RNG, as usual.

    Returns:
        The module on the CPU, in training mode.

    Raises:
        ConfigError: Invalid shapes, or an architecture that does not fit the input (e.g. a
            ConvNet whose pooling would shrink the feature map below 1×1).
    """
    shape = _check_shapes(input_shape, num_classes)
    if seed is None:
        return _construct(spec, shape, int(num_classes))
    if not _is_int(seed) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed={seed!r} is invalid; pass an integer in [0, 2**64) or None")
    with torch.device("meta"):
        model = _construct(spec, shape, int(num_classes))
    model = model.to_empty(device="cpu")
    init_model(model, generator=torch.Generator().manual_seed(int(seed)))
    return model
