"""Statistics of a comparison against hand computations on fixed numbers."""

import math

import numpy as np
import pytest

from gradpower.experiments.stats import (
    count_spikes,
    paired_difference,
    speedup,
    steps_to_target,
    t_interval,
    verdict,
)

# Student-t 97.5% quantiles, from a table: df=1, 2, 3.
T975 = {1: 12.706204736174698, 2: 4.302652729911275, 3: 3.182446305284263}


def test_paired_difference_and_interval_by_hand():
    arm = [3.10, 3.05, 3.20, 3.00]
    base = [3.15, 3.12, 3.22, 3.08]
    d = [-0.05, -0.07, -0.02, -0.08]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    half = T975[3] * sd / 2
    got = paired_difference(arm, base)
    assert got.n == 4
    assert got.mean == pytest.approx(mean, abs=1e-12)
    assert (got.low, got.high) == (pytest.approx(mean - half, abs=1e-12), pytest.approx(mean + half, abs=1e-12))
    assert got.high < 0


def test_interval_needs_two_values_and_drops_non_finite_pairs():
    one = t_interval([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low) and not one.has_interval
    diff = paired_difference([1.0, float("nan"), 2.0], [0.5, 1.0, 1.0])
    assert diff.n == 2 and diff.mean == pytest.approx(0.75)
    assert diff.high - diff.mean == pytest.approx(T975[1] * math.sqrt(0.125) / math.sqrt(2))
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])


def test_steps_to_target_interpolates_linearly_on_a_fixed_curve():
    steps = [10, 20, 30, 40]
    values = [5.0, 4.0, 3.0, 2.5]
    assert steps_to_target(steps, values, 3.5) == pytest.approx(25.0)
    assert steps_to_target(steps, values, 2.75) == pytest.approx(35.0)
    assert steps_to_target(steps, values, 3.0) == pytest.approx(30.0)
    assert steps_to_target(steps, values, 6.0) == 10  # already below at the first evaluation
    assert math.isnan(steps_to_target(steps, values, 2.0))  # never reached
    # The first crossing counts, even if the curve rises again later.
    assert steps_to_target([1, 2, 3, 4], [4.0, 2.0, 3.0, 1.0], 2.5) == pytest.approx(1.75)


def test_speedup_from_fixed_curves_by_hand():
    steps = [10, 20, 30, 40]
    base = [[5.0, 4.0, 3.0, 2.0], [5.2, 4.2, 3.2, 2.2]]
    arm = [[4.5, 3.0, 2.0, 1.5], [4.7, 3.4, 2.2, 1.9]]
    result = speedup(steps, arm, base)
    # Seed-mean curves: base [5.1, 4.1, 3.1, 2.1] -> target 2.1; arm [4.6, 3.2, 2.1, 1.7] reaches 2.1 at step 30.
    assert result.steps_to_target == pytest.approx(30.0)
    assert result.speedup == pytest.approx(40.0 / 30.0)
    # Per seed: seed 0 target 2.0 reached at 30 -> 40/30; seed 1 target 2.2 reached at 30 -> 40/30.
    assert result.interval.mean == pytest.approx(40 / 30)
    assert result.interval.low == pytest.approx(40 / 30) and result.interval.high == pytest.approx(40 / 30)
    slower = speedup(steps, [[5.0, 4.5, 4.0, 3.0], [5.0, 4.5, 4.0, 3.0]], base)
    assert math.isnan(slower.speedup) and not slower.interval.has_interval  # never reaches the target


def test_spike_count_on_synthetic_losses():
    rng = np.random.default_rng(0)
    smooth = 4.0 - np.linspace(0, 1, 300) + rng.normal(0, 0.01, 300)
    assert count_spikes(smooth) == 0
    spiky = smooth.copy()
    spiky[100:103] += 1.0  # one spike lasting three steps
    spiky[200] += 0.5
    assert count_spikes(spiky) == 2
    small = smooth.copy()
    small[150] += 0.05  # above 6 robust sigmas of the noise but below the 0.1 nats floor
    assert count_spikes(small) == 0


def test_verdict_follows_the_interval():
    assert verdict("b", "a", paired_difference([1.0, 1.1, 1.2], [1.1, 1.2, 1.31])).endswith(
        "lower, 95% interval excludes 0")
    assert "higher, 95% interval excludes 0" in verdict("b", "a", paired_difference([2.0, 2.1, 2.2], [1.0, 1.1, 1.2]))
    mixed = verdict("b", "a", paired_difference([1.0, 1.3, 1.1], [1.1, 1.1, 1.1]))
    assert "no difference detectable with 3 seeds at this scale" in mixed
    assert "no interval" in verdict("b", "a", paired_difference([1.0], [1.1]))


def test_mde_and_seeds_needed_against_the_formula():
    from scipy.stats import t

    from gradpower.experiments.stats import mde_80, sd, seeds_needed

    diffs = [-0.014, -0.003, -0.066]
    s = float(np.std(diffs, ddof=1))
    assert sd(diffs) == pytest.approx(s)
    assert mde_80(s, 3) == pytest.approx((t.ppf(0.975, 2) + t.ppf(0.8, 2)) * s / math.sqrt(3))
    assert math.isnan(mde_80(s, 1)) and math.isnan(mde_80(math.nan, 3))
    n = seeds_needed(s, 0.01)
    by_hand = next(k for k in range(2, 10_000) if (t.ppf(0.975, k - 1) + t.ppf(0.8, k - 1)) * s / math.sqrt(k) <= 0.01)
    assert n == by_hand
    assert seeds_needed(0.0, 0.01) == 2 and seeds_needed(math.nan, 0.01) is None


def test_a_no_difference_verdict_says_what_the_design_could_detect():
    diff = t_interval([-0.014, -0.003, -0.066])
    line = verdict("adampower", "adamw", diff, diff_sd=0.0336, effect=0.01)
    assert "no difference detectable with 3 seeds" in line
    assert "this design detects differences above 0.1" in line and "seeds would resolve 0.01" in line


def _simulate(true_diff: float, experiments: int, max_seeds: int, seed: int) -> tuple[float, float]:
    """Share of experiments the sequential rule declares a difference in, and the mean seeds it used."""
    from gradpower.experiments.stats import sequential_decision, sequential_looks

    rng = np.random.default_rng(seed)
    looks = sequential_looks(max_seeds)
    declared, used = 0, []
    for _ in range(experiments):
        diffs = rng.normal(true_diff, 1.0, size=max_seeds)
        for n in looks:
            decision, _ = sequential_decision(diffs[:n], looks, effect=0.01)
            if decision != "continue":
                declared += decision == "excludes 0"
                used.append(n)
                break
    return declared / experiments, float(np.mean(used))


def test_the_sequential_rule_keeps_its_false_positive_rate_under_no_difference():
    rate, _ = _simulate(0.0, 2000, max_seeds=20, seed=0)
    slack = 3 * math.sqrt(0.05 * 0.95 / 2000)  # binomial sampling error of the estimated rate
    assert rate <= 0.05 + slack
    # the same looks read with the plain 95% interval each time would exceed it: the correction is needed
    from gradpower.experiments.stats import sequential_looks

    rng = np.random.default_rng(1)
    naive = 0
    for _ in range(2000):
        diffs = rng.normal(0.0, 1.0, size=20)
        naive += any((lambda i: i.low > 0 or i.high < 0)(t_interval(diffs[:n])) for n in sequential_looks(20))
    assert naive / 2000 > 0.05 + slack


def test_the_sequential_rule_stops_early_under_a_real_difference():
    rate, mean_seeds = _simulate(2.0, 500, max_seeds=20, seed=2)  # a true difference of 2 sd
    assert mean_seeds < 20 and rate > 0.9
