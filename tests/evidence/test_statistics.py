"""Ranking statistics with bootstrap intervals, against hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distdd_nas import rank_metrics
from distdd_nas.errors import ConfigError
from distdd_nas.evidence.statistics import (
    Interval,
    better_half,
    bootstrap_interval,
    proxy_evidence,
    ranking_evidence,
    tau_difference,
    top1_regret,
    topk_overlap,
)
from distdd_nas.rank_metrics import kendall_tau, kendall_tau_rows, spearman_rho, spearman_rho_rows
from distdd_nas.seeding import numpy_rng


def test_one_discordant_pair_of_four_gives_tau_four_sixths() -> None:
    ev = ranking_evidence([1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.4, 0.3], seed=0, boot=200)
    assert ev.tau.point == pytest.approx(4 / 6)
    assert ev.rho.point == pytest.approx(1 - 6 * 2 / (4 * 15))  # one swapped neighbour pair
    assert ev.regret.point == pytest.approx(0.1)  # proxy picks 0.3, best is 0.4
    assert ev.n == 4 and ev.k == 4 and ev.topk.point == 1.0


def test_perfect_and_reversed_rankings() -> None:
    truth = np.linspace(0.5, 0.9, 10)
    perfect = ranking_evidence(truth * 3, truth, seed=1, boot=300)
    assert perfect.tau.point == pytest.approx(1.0) and perfect.rho.point == pytest.approx(1.0)
    assert perfect.topk.point == 1.0 and perfect.regret.point == 0.0
    assert perfect.regret.low == perfect.regret.high == 0.0  # every resample: regret 0
    reversed_ = ranking_evidence(-truth, truth, seed=1, boot=300)
    assert reversed_.tau.point == pytest.approx(-1.0)
    assert reversed_.rho.point == pytest.approx(-1.0)
    assert reversed_.topk.point == 0.0
    assert reversed_.regret.point == pytest.approx(0.4)


def test_known_top5_overlap_and_regret() -> None:
    truth = np.arange(10, dtype=float) / 10  # best: index 9, top-5: 5..9
    proxy = np.array([9.0, 8, 0, 0, 0, 0, 7, 6, 5, 0.5])  # top-5: 0, 1, 6, 7, 8
    assert topk_overlap(proxy, truth, 5) == pytest.approx(3 / 5)  # 6, 7, 8
    assert top1_regret(proxy, truth) == pytest.approx(0.9)  # picks index 0
    ev = ranking_evidence(proxy, truth, seed=0, boot=100)
    assert ev.topk.point == pytest.approx(0.6) and ev.regret.point == pytest.approx(0.9)


def test_ties_in_the_proxy_go_to_the_earlier_candidate() -> None:
    assert top1_regret([1.0, 1.0, 0.0], [0.2, 0.5, 0.1]) == pytest.approx(0.3)
    assert top1_regret([1.0, 1.0, 0.0], [0.5, 0.2, 0.1]) == 0.0


def test_bootstrap_is_deterministic_with_a_seed_and_varies_with_it() -> None:
    rng = numpy_rng(5, "test")
    truth = rng.uniform(size=20)
    proxy = truth + rng.normal(scale=0.2, size=20)
    a = ranking_evidence(proxy, truth, seed=7, boot=500)
    b = ranking_evidence(proxy, truth, seed=7, boot=500)
    c = ranking_evidence(proxy, truth, seed=8, boot=500)
    assert a == b
    assert (a.tau.low, a.tau.high) != (c.tau.low, c.tau.high)
    assert a.tau.point == c.tau.point


def _noisy(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = numpy_rng(0, "noisy", n)
    truth = rng.uniform(0.5, 0.9, size=n)
    return truth + rng.normal(scale=0.08, size=n), truth


def test_intervals_contain_the_point_and_narrow_as_n_grows() -> None:
    small = ranking_evidence(*_noisy(8), seed=0)
    large = ranking_evidence(*_noisy(200), seed=0)
    for ev in (small, large):
        for name in ("tau", "rho", "topk", "regret"):
            interval: Interval = getattr(ev, name)
            assert interval.contains(interval.point), (ev.n, name, interval)
    for name in ("tau", "rho"):
        w_small = getattr(small, name).high - getattr(small, name).low
        w_large = getattr(large, name).high - getattr(large, name).low
        assert w_large < w_small / 2, (name, w_small, w_large)
    assert small.boot == 2000 and small.confidence == 0.9


def test_nan_resamples_are_dropped_and_counted() -> None:
    # Two candidates: a resample of one candidate twice has constant values (τ undefined).
    ev = ranking_evidence([0.0, 1.0], [0.3, 0.6], seed=0, boot=400)
    assert ev.tau.point == pytest.approx(1.0)
    assert 0 < ev.tau.valid < 400  # about half the resamples repeat one candidate
    assert not math.isnan(ev.tau.low) and ev.tau.high == pytest.approx(1.0)
    assert ev.regret.valid == 400


def test_better_half_is_the_top_half_by_truth() -> None:
    truth = np.array([0.1, 0.9, 0.5, 0.7, 0.2])
    assert better_half(truth).tolist() == [1, 3]
    proxy = np.array([0.0, 1.0, 0.5, 0.2, 0.1])
    ev = proxy_evidence(proxy, truth, seed=0, boot=200)
    assert ev.all.n == 5 and ev.better_half.n == 2
    assert ev.better_half.tau.point == pytest.approx(1.0)
    row = ev.to_row()
    assert row["n"] == 5 and row["half_n"] == 2 and row["half_tau"] == pytest.approx(1.0)
    assert {"tau_low", "tau_high", "regret", "half_topk_high"} <= set(row)


def test_length_mismatch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"same length, one value per candidate"):
        ranking_evidence([0.1, 0.2, 0.3], [0.1, 0.2], seed=0)
    with pytest.raises(ConfigError, match=r"hold NaN"):
        ranking_evidence([0.1, math.nan], [0.1, 0.2], seed=0)
    with pytest.raises(ConfigError, match=r"at least 2"):
        proxy_evidence([0.1], [0.1], seed=0)


def test_interval_formatting() -> None:
    assert Interval(0.5, 0.25, 0.75).format(2) == "0.50 [0.25, 0.75]"
    assert Interval(0.01, 0.0, 0.02).format(1, scale=100) == "1.0 [0.0, 2.0]"
    assert Interval(math.nan, math.nan, math.nan).format() == "nan [nan, nan]"


def test_tau_difference_is_paired_and_signed() -> None:
    from distdd_nas.evidence.statistics import kendall_tau_b, tau_difference

    rng = np.random.default_rng(0)
    truth = rng.normal(size=60)
    good = truth + rng.normal(scale=0.3, size=60)
    bad = rng.normal(size=60)
    diff = tau_difference(good, bad, truth, seed=1, boot=400)
    assert diff.point == pytest.approx(kendall_tau_b(good, truth) - kendall_tau_b(bad, truth))
    assert diff.low > 0  # clearly better: the paired interval excludes 0
    same = tau_difference(good, good, truth, seed=1, boot=100)
    assert same.point == 0 and same.low == 0 and same.high == 0
    again = tau_difference(good, bad, truth, seed=1, boot=400)
    assert (again.low, again.high) == (diff.low, diff.high)


def test_tau_interval_equals_ranking_evidences_tau() -> None:
    from distdd_nas.evidence.statistics import ranking_evidence, tau_interval

    rng = np.random.default_rng(3)
    truth = rng.normal(size=12)
    proxy = truth + rng.normal(size=12)
    full = ranking_evidence(proxy, truth, seed=5, boot=300).tau
    alone = tau_interval(proxy, truth, seed=5, boot=300)
    assert (alone.point, alone.low, alone.high, alone.valid) == (
        full.point,
        full.low,
        full.high,
        full.valid,
    )


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_rowwise_tau_and_rho_equal_scipy_on_every_resample(n: int) -> None:
    """The vectorised τ-b equals one scipy call per resample bit for bit, ρ to rounding — ties
    (values rounded to one decimal, repeated candidates) and constant rows (NaN) included."""
    rng = np.random.default_rng(n)
    x, y = np.round(rng.normal(size=n), 1), np.round(rng.normal(size=n), 1)
    idx = rng.integers(0, n, size=(300, n))
    xs, ys = x[idx], y[idx]
    xs[0] = 1.0  # a constant proxy row: undefined in both
    tau = kendall_tau_rows(xs, ys)
    np.testing.assert_array_equal(tau, [kendall_tau(a, b) for a, b in zip(xs, ys, strict=True)])
    rho = spearman_rho_rows(xs, ys)
    expected = np.array([spearman_rho(a, b) for a, b in zip(xs, ys, strict=True)])
    np.testing.assert_allclose(rho, expected, rtol=0, atol=1e-12)
    assert np.isnan(tau[0]) and np.isnan(rho[0])


def test_rowwise_tau_by_hand_and_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """One discordant pair of six → τ 4/6 in every row, however the rows are chunked."""
    monkeypatch.setattr(rank_metrics, "PAIR_CHUNK", 7)  # one row (6 pairs) per chunk
    x = np.tile([1.0, 2.0, 3.0, 4.0], (5, 1))
    y = np.tile([1.0, 3.0, 2.0, 4.0], (5, 1))
    tau = kendall_tau_rows(x, y)
    assert tau == pytest.approx([4 / 6] * 5, abs=1e-15)
    assert tau.tolist() == [kendall_tau(x[0], y[0])] * 5
    with pytest.raises(ConfigError, match="two B × N arrays"):
        kendall_tau_rows(x, y[:, :3])


def test_bootstrap_interval_rowwise_equals_the_per_resample_loop() -> None:
    """The fast path gives the interval the slow path (one metric call per resample) gives;
    the paired τ difference too."""
    rng = np.random.default_rng(5)
    x, y, z = rng.normal(size=(3, 25))
    resamples = rng.integers(0, 25, size=(400, 25))
    for metric in (kendall_tau, spearman_rho):
        fast = bootstrap_interval(metric, x, y, resamples)
        slow = bootstrap_interval(lambda a, b, m=metric: m(a, b), x, y, resamples)
        assert fast.point == slow.point and fast.valid == slow.valid
        np.testing.assert_allclose([fast.low, fast.high], [slow.low, slow.high], atol=1e-12)
    paired = tau_difference(x, z, y, seed=3, boot=300)
    loop = bootstrap_interval(
        lambda ab, t: kendall_tau(ab[:, 0], t) - kendall_tau(ab[:, 1], t),
        np.column_stack([x, z]),
        y,
        numpy_rng(3, "evidence", "bootstrap", "paired").integers(0, 25, size=(300, 25)),
    )
    assert (paired.point, paired.low, paired.high) == (loop.point, loop.low, loop.high)
