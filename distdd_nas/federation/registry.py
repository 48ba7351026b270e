"""The client tasks every engine can run, by name."""

from __future__ import annotations

from distdd_nas.federation.engine import ClientTask


def default_tasks() -> dict[str, ClientTask]:
    """Name → client function for every task of distdd-nas (imported lazily: no cycles)."""
    from distdd_nas.distill.client import class_gradients, class_stats
    from distdd_nas.fl.tasks import evaluate, local_train

    return {
        "class_gradients": class_gradients,
        "class_stats": class_stats,
        "local_train": local_train,
        "evaluate": evaluate,
    }
