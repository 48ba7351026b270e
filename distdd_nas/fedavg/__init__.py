"""FedAvg (and FedProx) as an algorithm on the Engine: client tasks and the server loop."""

from distdd_nas.fedavg.server import (
    FedAvgResult,
    FedAvgSettings,
    evaluate_parameters,
    run_fedavg,
    server_update,
)

__all__ = ["FedAvgResult", "FedAvgSettings", "evaluate_parameters", "run_fedavg", "server_update"]
