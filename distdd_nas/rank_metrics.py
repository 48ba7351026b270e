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


def _pair(proxy: Any, truth: Any, *, ndim: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float arrays of one shape: 1-D (one ranking) or B × N (``ndim`` 2: one
    ranking per row)."""
    x = np.asarray(proxy, dtype=float)
    y = np.asarray(truth, dtype=float)
    if x.shape != y.shape or x.ndim != ndim:
        what = "1-D arrays of the same length" if ndim == 1 else "B × N arrays of one shape"
        raise ConfigError(
            f"proxy scores {x.shape} and FedAvg accuracies {y.shape} must be two {what}"
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


#: Most pair differences one chunk of :func:`kendall_tau_rows` holds (rows × N(N − 1)/2).
PAIR_CHUNK = 2_000_000


def kendall_tau_rows(proxy: Any, federated: Any) -> np.ndarray:
    """:func:`kendall_tau` of every row pair of two B × N arrays (bootstrap resamples), at once.

    The same counts as scipy's τ-b — concordant minus discordant pairs, pairs untied in each
    input — and its formula ``(C − D) / √(untied x) / √(untied y)`` clipped to [−1, 1], so every
    value equals ``kendall_tau(proxy[i], federated[i])`` bit for bit (NaN with < 2 points or a
    constant row). Pairs are formed in chunks of rows (:data:`PAIR_CHUNK` differences).
    """
    x, y = _pair(proxy, federated, ndim=2)
    b, n = x.shape
    out = np.full(b, np.nan)
    i, j = np.triu_indices(n, k=1)
    if len(i) == 0:
        return out
    step = max(1, PAIR_CHUNK // len(i))
    for lo in range(0, b, step):
        sx = np.sign(x[lo : lo + step, i] - x[lo : lo + step, j])
        sy = np.sign(y[lo : lo + step, i] - y[lo : lo + step, j])
        con_minus_dis = (sx * sy).sum(axis=1)
        untied_x = np.count_nonzero(sx, axis=1)
        untied_y = np.count_nonzero(sy, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = con_minus_dis / np.sqrt(untied_x) / np.sqrt(untied_y)
        tau = np.where((untied_x == 0) | (untied_y == 0), np.nan, np.clip(tau, -1.0, 1.0))
        out[lo : lo + step] = tau
    return out


def spearman_rho_rows(proxy: Any, federated: Any) -> np.ndarray:
    """:func:`spearman_rho` of every row pair of two B × N arrays, at once: Pearson's r of
    the rows' average ranks, scipy's definition; equal to scipy's values to float rounding
    (the sums run in another order). NaN with < 2 points or a constant row."""
    x, y = _pair(proxy, federated, ndim=2)
    if x.shape[1] < 2:
        return np.full(x.shape[0], np.nan)
    rx = stats.rankdata(x, axis=1)
    ry = stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    scale = np.sqrt((rx * rx).sum(axis=1)) * np.sqrt((ry * ry).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rx * ry).sum(axis=1) / scale
    return np.where(scale == 0, np.nan, np.clip(rho, -1.0, 1.0))


#: The row-wise form of a metric, where one exists (:func:`distdd_nas.evidence.statistics.
#: bootstrap_interval` uses it for its resamples).
ROWWISE: dict[Callable[..., float], Callable[..., np.ndarray]] = {
    kendall_tau: kendall_tau_rows,
    spearman_rho: spearman_rho_rows,
}


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


__all__ = [
    "ROWWISE",
    "kendall_tau",
    "kendall_tau_rows",
    "spearman_rho",
    "spearman_rho_rows",
    "top1_regret",
    "topk_overlap",
]
