"""Parameters as values: seeded initialisation, counting, and NumPy transport for the federation.

Two guarantees the rest of distdd-nas relies on:

* :func:`init_model` draws every random number from an explicit :class:`torch.Generator`, using the
  same distributions (and the same draw order) as PyTorch's default ``reset_parameters``. The same
  seed therefore gives bit-identical weights on every machine, whatever the global RNG state, and a
  seed is enough to ship a freshly initialised network to a client.
* :func:`get_parameters` / :func:`set_parameters` move the *whole* state (parameters and buffers
  such as BatchNorm running statistics) as NumPy arrays in ``state_dict`` order, so the engine can
  meter the bytes and a model rebuilt from the same ArchSpec receives exactly what was sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from distdd_nas.errors import ConfigError

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters (``requires_grad``), buffers excluded.

    Works on models built on the ``meta`` device too, so a search space can be costed without
    allocating any weights.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def init_model(model: nn.Module, *, generator: torch.Generator) -> None:
    """Re-initialise every parameter and buffer of ``model`` in place from ``generator``.

    Conv and linear layers get PyTorch's default scheme (``kaiming_uniform_`` with ``a=√5`` for
    the weight, i.e. U(±1/√fan_in), and U(±1/√fan_in) for the bias), drawn in module registration
    order; normalisation layers get ones/zeros and fresh running statistics. With
    ``generator = torch.Generator().manual_seed(s)`` the result equals default construction after
    ``torch.manual_seed(s)``, but the global RNG is neither read nor advanced.

    Args:
        model: Module whose layers are all of the supported kinds (conv, linear, batch/layer/group
            norm) or parameter-free (activations, pooling, containers).
        generator: CPU generator that supplies every random draw.

    Raises:
        TypeError: A module owns parameters or buffers but is of an unsupported kind; silently
            leaving it uninitialised would break the determinism guarantee.
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, _CONV_LINEAR):
                weight = module.weight
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    fan_in = weight[0].numel()  # in_features, or in_channels/groups * kH * kW
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, _NORMS):
                module.reset_parameters()  # ones/zeros (+ running stats for BatchNorm); no RNG
            elif any(True for _ in module.parameters(recurse=False)) or any(
                True for _ in module.buffers(recurse=False)
            ):
                raise TypeError(
                    f"init_model cannot initialise module {name!r} of type "
                    f"{type(module).__name__}; add its default init to distdd_nas.models.params"
                )


def get_parameters(model: nn.Module) -> dict[str, np.ndarray]:
    """Return the model's full state as NumPy copies in ``state_dict`` order.

    Floating tensors become ``float32`` and integer buffers (BatchNorm's ``num_batches_tracked``)
    ``int64``. The arrays are copies: mutating them never touches the model.
    """
    out: dict[str, np.ndarray] = {}
    for key, tensor in model.state_dict().items():
        dtype = np.float32 if tensor.is_floating_point() else np.int64
        out[key] = np.array(tensor.detach().cpu().numpy(), dtype=dtype, copy=True)
    return out


def set_parameters(model: nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Copy ``params`` into ``model``'s parameters and buffers, in place.

    Everything is checked before anything is written, so a failed call leaves the model untouched.
    Parameter objects keep their identity (an optimizer built on the model stays valid).

    Raises:
        ConfigError: Keys are missing or unexpected, or an array's shape or dtype does not fit; the
            message names the offending key.
    """
    state = model.state_dict()
    missing = [k for k in state if k not in params]
    extra = sorted(k for k in params if k not in state)
    if missing or extra:
        raise ConfigError(
            f"parameters do not fit the model: missing keys {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, unexpected keys {extra[:5]}"
            f"{' …' if len(extra) > 5 else ''}; send parameters of a model built from the same "
            "ArchSpec, input shape and class count"
        )
    arrays: dict[str, np.ndarray] = {}
    for key, target in state.items():
        arr = np.asarray(params[key])
        if tuple(arr.shape) != tuple(target.shape):
            raise ConfigError(
                f"parameter {key!r} has shape {tuple(arr.shape)} but the model expects "
                f"{tuple(target.shape)}; send parameters of a model built from the same ArchSpec, "
                "input shape and class count"
            )
        if arr.dtype.kind not in "fiub":
            raise ConfigError(
                f"parameter {key!r} has non-numeric dtype {arr.dtype}; send float32/int64 arrays "
                "as returned by get_parameters"
            )
        arrays[key] = arr
    with torch.no_grad():
        for key, target in state.items():  # state_dict tensors share storage with the model
            # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
            target.copy_(torch.from_numpy(np.require(arrays[key], requirements="C")))
