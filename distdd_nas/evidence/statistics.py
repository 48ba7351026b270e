"""How well a proxy ranks candidates like the ground truth does, with bootstrap intervals.

Inputs are two aligned vectors over the same N candidates: the proxy's scores and the
ground-truth accuracies, both "higher is better". The figures:

* **Kendall τ-b** and **Spearman ρ** (``scipy.stats``; τ-b corrects for ties, which the
  bootstrap creates by repeating candidates). NaN when fewer than two candidates or when either
  vector is constant.
* **Top-k overlap** (k = 5, capped at N): |top-k by proxy ∩ top-k by truth| / k, each top-k
  taken by a stable sort, so ties go to the earlier candidate.
* **Regret of the proxy's top-1**: max truth − truth of the candidate with the highest proxy
  score (ties to the earlier candidate); 0 when the proxy picks the best. In the truth's units.

Each comes with a **percentile bootstrap interval over candidates**: B resamples of N
candidate indices drawn with replacement from a seeded NumPy generator (the same index matrix
serves all four figures, so they are paired), the figure recomputed on every resample, and the
interval the (α/2, 1 − α/2) percentiles of those B values (90 %: the 5th and 95th). Figures are
computed positionally on the resampled arrays, so a repeated candidate is a tie broken by its
position. A resample can make a figure undefined (τ and ρ of a resample whose proxy or truth
values are all equal); such NaN values are dropped (``numpy.nanpercentile``) and the number of
defined resamples is kept with the interval. The percentile interval does not have to contain
the point estimate (a skewed bootstrap distribution); it is reported as computed.

"The better half" repeats everything on the ⌊N/2⌋ candidates with the highest truth (ties to
the earlier candidate): can the proxy still tell good from very good? The subset is fixed
first, then bootstrapped over its own candidates.

This module is pure: arrays in, frozen dataclasses out. It does not import
:mod:`distdd_nas.report` (evidence and report are independent siblings).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distdd_nas.errors import ConfigError
from distdd_nas.rank_metrics import (
    ROWWISE,
    kendall_tau,
    kendall_tau_rows,
    spearman_rho,
    top1_regret,
    topk_overlap,
)
from distdd_nas.seeding import numpy_rng

#: Default bootstrap resamples, confidence level and top-k.
BOOTSTRAP = 2000
CONFIDENCE = 0.90
TOP_K = 5

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (``valid``: resamples that were defined)."""

    point: float
    low: float
    high: float
    valid: int = 0

    def contains(self, value: float) -> bool:
        """True when ``low <= value <= high`` (False for NaN bounds)."""
        return bool(self.low <= value <= self.high)

    def format(self, digits: int = 2, scale: float = 1.0) -> str:
        """``"0.64 [0.41, 0.80]"`` (values times ``scale``; ``"nan"`` where undefined)."""

        def f(v: float) -> str:
            return "nan" if math.isnan(v) else f"{v * scale:.{digits}f}"

        return f"{f(self.point)} [{f(self.low)}, {f(self.high)}]"


@dataclass(frozen=True)
class RankingEvidence:
    """Ranking figures of one proxy on one set of candidates.

    Attributes:
        n: Candidates compared.
        k: The k of the top-k overlap (5, capped at ``n``).
        tau, rho, topk, regret: Kendall τ-b, Spearman ρ, top-k overlap, regret of top-1.
        boot: Bootstrap resamples drawn.
        confidence: Coverage of the intervals (0.9: 5th to 95th percentile).
    """

    n: int
    k: int
    tau: Interval
    rho: Interval
    topk: Interval
    regret: Interval
    boot: int
    confidence: float

    def to_row(self, prefix: str = "") -> dict[str, float | int]:
        """Flat columns for a table: ``n``, ``k``, then point/low/high of every figure."""
        row: dict[str, float | int] = {f"{prefix}n": self.n, f"{prefix}k": self.k}
        for name in ("tau", "rho", "topk", "regret"):
            interval: Interval = getattr(self, name)
            row[f"{prefix}{name}"] = interval.point
            row[f"{prefix}{name}_low"] = interval.low
            row[f"{prefix}{name}_high"] = interval.high
        return row


@dataclass(frozen=True)
class ProxyEvidence:
    """A proxy's figures on all candidates and on the better half (by truth)."""

    all: RankingEvidence
    better_half: RankingEvidence

    def to_row(self) -> dict[str, float | int]:
        """Flat columns: those of ``all`` unprefixed, then ``half_*`` for the better half."""
        return {**self.all.to_row(), **self.better_half.to_row("half_")}


def _pair(proxy: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float arrays of one length, without NaN (±inf is a valid score)."""
    x = np.asarray(proxy, dtype=float)
    y = np.asarray(truth, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ConfigError(
            f"proxy scores (shape {x.shape}) and ground-truth accuracies (shape {y.shape}) "
            "must be two 1-D sequences of the same length, one value per candidate"
        )
    if np.isnan(x).any() or np.isnan(y).any():
        raise ConfigError(
            "proxy scores or ground-truth accuracies hold NaN; drop those candidates first "
            "(every candidate needs a score and a truth)"
        )
    return x, y


#: The one definition of each figure (:mod:`distdd_nas.rank_metrics`), under this module's names.
kendall_tau_b = kendall_tau
spearman = spearman_rho


def bootstrap_interval(
    metric: Metric,
    x: np.ndarray,
    y: np.ndarray,
    resamples: np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    rowwise: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Interval:
    """Point estimate of ``metric(x, y)`` and its percentile interval over ``resamples``.

    Args:
        metric: A figure of two aligned arrays.
        x, y: Proxy scores and truth of the candidates.
        resamples: B × N candidate indices (rows drawn with replacement).
        confidence: Coverage (0.9: the 5th and 95th percentiles).
        rowwise: ``metric`` of every resample at once (B × N …, B × N → B values); default
            :data:`~distdd_nas.rank_metrics.ROWWISE`'s entry for ``metric``, else one call per
            resample. τ and ρ row-wise are ~10× faster than 2,000 scipy calls.
    """
    point = metric(x, y)
    rows = rowwise or ROWWISE.get(metric)
    if rows is not None:
        values = np.asarray(rows(x[resamples], y[resamples]), dtype=float)
    else:
        values = np.array([metric(x[idx], y[idx]) for idx in resamples], dtype=float)
    valid = int(np.isfinite(values).sum())
    if valid == 0:
        return Interval(point, math.nan, math.nan, 0)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.nanpercentile(values, [alpha, 100.0 - alpha])
    return Interval(point, float(low), float(high), valid)


def _resamples(seed: int, stream: str, *, boot: int, n: int) -> np.ndarray:
    """``boot`` × ``n`` candidate indices drawn with replacement from the named stream."""
    return numpy_rng(seed, "evidence", "bootstrap", stream).integers(0, n, size=(boot, n))


def tau_interval(
    proxy: Any, truth: Any, *, seed: int, boot: int = BOOTSTRAP, confidence: float = CONFIDENCE
) -> Interval:
    """Kendall τ-b alone with its bootstrap interval (the same resamples, hence the same
    interval, as :func:`ranking_evidence`'s ``tau``)."""
    x, y = _pair(proxy, truth)
    resamples = _resamples(seed, "all", boot=boot, n=len(x))
    return bootstrap_interval(kendall_tau_b, x, y, resamples, confidence=confidence)


def ranking_evidence(
    proxy: Any,
    truth: Any,
    *,
    seed: int,
    boot: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    k: int = TOP_K,
    stream: str = "all",
) -> RankingEvidence:
    """Kendall τ-b, Spearman ρ, top-k overlap and top-1 regret with bootstrap intervals.

    Resamples come from ``numpy_rng(seed, "evidence", "bootstrap", stream)``: the same seed
    and inputs give the same intervals.

    Raises:
        ConfigError: Inputs of different lengths, not 1-D, holding NaN, or no candidate; a
            bad ``boot``, ``confidence`` or ``k``.
    """
    x, y = _pair(proxy, truth)
    if len(x) == 0:
        raise ConfigError("no candidates to compare; the proxy and the truth are empty")
    if boot < 1 or not 0.0 < confidence < 1.0 or k < 1:
        raise ConfigError(
            f"boot={boot}, confidence={confidence}, k={k} out of range; use boot >= 1, "
            "0 < confidence < 1, k >= 1"
        )
    n = len(x)
    resamples = _resamples(seed, stream, boot=boot, n=n)
    kk = min(k, n)

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return topk_overlap(a, b, kk)

    def interval(metric: Metric) -> Interval:
        return bootstrap_interval(metric, x, y, resamples, confidence=confidence)

    return RankingEvidence(
        n=n,
        k=kk,
        tau=interval(kendall_tau_b),
        rho=interval(spearman),
        topk=interval(overlap),
        regret=interval(top1_regret),
        boot=boot,
        confidence=confidence,
    )


def tau_difference(
    proxy_a: Any,
    proxy_b: Any,
    truth: Any,
    *,
    seed: int,
    boot: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
) -> Interval:
    """τ(a, truth) − τ(b, truth) with a *paired* percentile-bootstrap interval: both proxies
    are re-scored on the same resampled candidates, so the interval is of the difference
    itself (two separate intervals that overlap do not say the proxies tie). An interval
    above 0 is evidence that ``a`` ranks better than ``b``.

    Raises:
        ConfigError: As :func:`ranking_evidence`.
    """
    a, y = _pair(proxy_a, truth)
    b, _ = _pair(proxy_b, truth)
    if len(y) < 2 or boot < 1 or not 0.0 < confidence < 1.0:
        raise ConfigError(
            f"tau_difference needs >= 2 candidates (got {len(y)}), boot >= 1 and "
            "0 < confidence < 1"
        )
    resamples = _resamples(seed, "paired", boot=boot, n=len(y))

    def delta(ab: np.ndarray, t: np.ndarray) -> float:  # rows: candidates; columns: a, b
        return kendall_tau(ab[:, 0], t) - kendall_tau(ab[:, 1], t)

    def deltas(ab: np.ndarray, t: np.ndarray) -> np.ndarray:  # B resamples × candidates × 2
        return kendall_tau_rows(ab[..., 0], t) - kendall_tau_rows(ab[..., 1], t)

    return bootstrap_interval(
        delta, np.column_stack([a, b]), y, resamples, confidence=confidence, rowwise=deltas
    )


def better_half(truth: Any) -> np.ndarray:
    """Sorted indices of the ⌊N/2⌋ candidates with the highest truth (ties: earlier first)."""
    y = np.asarray(truth, dtype=float)
    order = np.argsort(-y, kind="stable")
    return np.sort(order[: len(y) // 2])


def halves(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``range(n)`` into two sorted halves (sizes ⌈n/2⌉ and ⌊n/2⌋): tune
    a proxy's settings on one, report it on the other (``bench/proxy_blend.py``,
    ``bench/proxy_recipe.py``). The stream keeps the name of the bench that introduced it, so
    the halves of the committed blend tables stay the same."""
    order = numpy_rng(seed, "proxy_blend", "halves").permutation(n)
    return np.sort(order[: (n + 1) // 2]), np.sort(order[(n + 1) // 2 :])


def proxy_evidence(
    proxy: Any,
    truth: Any,
    *,
    seed: int,
    boot: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    k: int = TOP_K,
) -> ProxyEvidence:
    """:func:`ranking_evidence` on all candidates and on :func:`better_half` of them.

    Raises:
        ConfigError: As :func:`ranking_evidence`; also fewer than 2 candidates (the better
            half would be empty).
    """
    x, y = _pair(proxy, truth)
    if len(x) < 2:
        raise ConfigError(
            f"{len(x)} candidate(s) give no ranking; compare at least 2 (4 for a better half of 2)"
        )
    kwargs: dict[str, Any] = {"seed": seed, "boot": boot, "confidence": confidence, "k": k}
    half = better_half(y)
    return ProxyEvidence(
        all=ranking_evidence(x, y, stream="all", **kwargs),
        better_half=ranking_evidence(x[half], y[half], stream="better_half", **kwargs),
    )


__all__ = [
    "BOOTSTRAP",
    "CONFIDENCE",
    "TOP_K",
    "Interval",
    "ProxyEvidence",
    "RankingEvidence",
    "better_half",
    "bootstrap_interval",
    "halves",
    "kendall_tau_b",
    "proxy_evidence",
    "ranking_evidence",
    "spearman",
    "tau_difference",
    "tau_interval",
    "top1_regret",
    "topk_overlap",
]
