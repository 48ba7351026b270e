"""DistDD: federated dataset distillation by gradient matching (client tasks, server, loop)."""

from distdd_nas.distill.client import class_gradients, class_stats, per_class_gradients
from distdd_nas.distill.compiled import compiles
from distdd_nas.distill.evaluate import (
    evaluate_random_real,
    evaluate_synthetic,
    random_real_subset,
)
from distdd_nas.distill.loop import run_distill
from distdd_nas.distill.matching import DISTANCES, get_distance
from distdd_nas.distill.reference import centralized_engine
from distdd_nas.distill.result import DistilledSet, DistillResult
from distdd_nas.distill.server import resolve_loops

__all__ = [
    "DISTANCES",
    "DistillResult",
    "DistilledSet",
    "centralized_engine",
    "class_gradients",
    "class_stats",
    "compiles",
    "evaluate_random_real",
    "evaluate_synthetic",
    "get_distance",
    "per_class_gradients",
    "random_real_subset",
    "resolve_loops",
    "run_distill",
]
