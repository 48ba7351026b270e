"""How a model travels: architecture as JSON in ``Message.config["arch"]``, weights as arrays.

Every algorithm that sends the server's model to clients (DistDD's class gradients, FedAvg's
local training, federated evaluation) rebuilds it on the client with :func:`model_from_message`.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from torch import nn

from distdd_nas.federation.engine import ClientData
from distdd_nas.federation.message import Message
from distdd_nas.models import ArchSpec, build_model, set_parameters


def model_from_message(
    client: ClientData, msg: Message, *, extra: Collection[str] = ()
) -> nn.Module:
    """Rebuild the server's model on the client: architecture from config, weights from arrays
    (all arrays except the names in ``extra``, which carry other task inputs) — or, when the
    config carries ``init_seed``, the freshly initialised network of that seed, bit-identical
    to the server's ``build_model(..., seed=init_seed)`` (a few bytes instead of the weights)."""
    spec = ArchSpec.from_dict(json.loads(str(msg.config["arch"])))
    fresh = msg.config.get("init_seed")
    model = build_model(
        spec,
        input_shape=client.dataset.input_shape,
        num_classes=client.dataset.num_classes,
        # without init_seed the weights are overwritten next; a fixed seed keeps the global
        # RNG untouched
        seed=0 if fresh is None else int(fresh),
    )
    if fresh is None:
        set_parameters(model, {k: v for k, v in msg.arrays.items() if k not in extra})
    return model
