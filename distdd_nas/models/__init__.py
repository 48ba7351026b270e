"""Model family: ArchSpec → build_model() (DC's ConvNets, an MLP, LeNet) and parameter transport.

Everything other packages need is re-exported here; import from ``distdd_nas.models``.
"""

from distdd_nas.models.convnet import ConvNet
from distdd_nas.models.lenet import LeNet
from distdd_nas.models.mlp import MLP
from distdd_nas.models.params import count_parameters, get_parameters, init_model, set_parameters
from distdd_nas.models.spec import ACTIVATIONS, FAMILIES, NORMS, POOLS, ArchSpec, build_model

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "MLP",
    "NORMS",
    "POOLS",
    "ArchSpec",
    "ConvNet",
    "LeNet",
    "build_model",
    "count_parameters",
    "get_parameters",
    "init_model",
    "set_parameters",
]
