"""Federation layer: messages, the metered Engine channel, ledgers and aggregators."""

from distdd_nas.federation.aggregators import (
    AGGREGATORS,
    AggregatorSpec,
    Combine,
    coordinate_median,
    drop_non_finite,
    make_aggregator,
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
    "AggregatorSpec",
    "ClientData",
    "ClientTask",
    "Combine",
    "Engine",
    "InProcessEngine",
    "Ledger",
    "LedgerRow",
    "Message",
    "as_numpy",
    "coordinate_median",
    "drop_non_finite",
    "make_aggregator",
    "select_clients",
    "weighted_mean",
]
