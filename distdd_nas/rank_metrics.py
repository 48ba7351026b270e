"""Rank agreement between a proxy's scores and the truth (FedAvg accuracy), one definition each.

Used by the study report (:mod:`distdd_nas.report.metrics`: the validated candidates) and by
the evidence (:mod:`distdd_nas.evidence.statistics`: the ground-truth pool, with bootstrap
intervals). Higher is better for both inputs; ties in a ranking go to the earlier candidate.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from distdd_nas.errors import ConfigError


def _pair(proxy: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float arrays of one length."""
    x = np.asarray(proxy, dtype=float)
    y = np.asarray(truth, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ConfigError(
            f"proxy scores {x.shape} and FedAvg accuracies {y.shape} must be two "
            "1-D arrays of the same length"
        )
    return x, y


def _correlation(test: Callable[..., Any], proxy: Any, federated: Any) -> float:
    """``test(x, y).statistic`` on the paired inputs; NaN with < 2 points or a constant input
    (scipy warns and returns NaN there; the warning is silenced)."""
    x, y = _pair(proxy, federated)
    if len(x) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(test(x, y).statistic)


def kendall_tau(proxy: Any, federated: Any) -> float:
    """Kendall's τ-b between proxy scores and FedAvg accuracies (NaN with < 2 points or a
    constant input)."""
    return _correlation(stats.kendalltau, proxy, federated)


def spearman_rho(proxy: Any, federated: Any) -> float:
    """Spearman's ρ between proxy scores and FedAvg accuracies (NaN with < 2 points or a
    constant input)."""
    return _correlation(stats.spearmanr, proxy, federated)


def top1_regret(proxy: Any, federated: Any) -> float:
    """Best FedAvg accuracy among the validated minus that of the proxy's top-1 (ties in the
    proxy score go to the first candidate). NaN when nothing was validated."""
    x, y = _pair(proxy, federated)
    if len(x) == 0:
        return float("nan")
    return float(np.max(y) - y[int(np.argmax(x))])


def topk_overlap(proxy: Any, federated: Any, k: int) -> float:
    """|top-k by proxy ∩ top-k by FedAvg| / k over the validated candidates (k capped at their
    number; ties keep the earlier candidate)."""
    x, y = _pair(proxy, federated)
    k = min(k, len(x))
    if k <= 0:
        return float("nan")
    a = set(np.argsort(-x, kind="stable")[:k].tolist())
    b = set(np.argsort(-y, kind="stable")[:k].tolist())
    return len(a & b) / k


__all__ = ["kendall_tau", "spearman_rho", "top1_regret", "topk_overlap"]
