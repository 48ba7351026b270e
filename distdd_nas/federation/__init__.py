"""Federation layer: messages, the metered Engine channel, ledgers and aggregators."""

from distdd_nas.federation.aggregate import (
    AGGREGATORS,
    coordinate_median,
    drop_non_finite,
    get_aggregator,
    trimmed_mean,
    weighted_mean,
)
from distdd_nas.federation.engine import (
    ClientData,
    ClientTask,
    Engine,
    InProcessEngine,
    select_clients,
)
from distdd_nas.federation.ledger import Ledger, LedgerRow
from distdd_nas.federation.message import Message, as_numpy

__all__ = [
    "AGGREGATORS",
    "ClientData",
    "ClientTask",
    "Engine",
    "InProcessEngine",
    "Ledger",
    "LedgerRow",
    "Message",
    "as_numpy",
    "coordinate_median",
    "drop_non_finite",
    "get_aggregator",
    "select_clients",
    "trimmed_mean",
    "weighted_mean",
]
