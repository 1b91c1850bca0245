"""Statistics of a comparison, on plain numbers: no training, files or plotting here.

- Paired differences over seeds with a 95% Student-t interval (n - 1 degrees
  of freedom): arms share each seed's initial weights and batches, so the
  per-seed difference removes most of the seed-to-seed variance.
- Steps to a target loss, by linear interpolation between evaluations, and
  the speed-up to reach the baseline's final loss, with an interval from the
  per-seed paired ratios.
- Loss spikes: a robust count on the per-step train loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from ..errors import BadInput

CONFIDENCE = 0.95
#: Power of the minimum detectable effect (``mde_80``) and of ``seeds_needed``.
POWER = 0.80
#: The effect ``seeds_needed`` sizes a comparison for unless told (nats); the papers report 0.015-0.03.
DEFAULT_EFFECT = 0.01
#: Spike rule (see :func:`count_spikes`).
SPIKE_WINDOW = 25
SPIKE_SIGMAS = 6.0
SPIKE_MIN_JUMP = 0.1


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided 95% Student-t interval (``nan`` bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of ``values`` (non-finite values are dropped)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def sd(values: Sequence[float]) -> float:
    """The sample standard deviation (n - 1) of the finite values; nan for fewer than two."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return float(x.std(ddof=1)) if x.size >= 2 else math.nan


def _detectable(diff_sd: float, n: int) -> float:
    t = scipy_stats.t
    return float((t.ppf(0.5 + CONFIDENCE / 2, n - 1) + t.ppf(POWER, n - 1)) * diff_sd / math.sqrt(n))


def mde_80(diff_sd: float, n: int) -> float:
    """The smallest true paired difference that ``n`` seeds detect with 80% power at the two-sided 95% level:
    ``(t(0.975, n-1) + t(0.80, n-1)) * diff_sd / sqrt(n)``; nan for n < 2."""
    return _detectable(diff_sd, n) if n >= 2 and math.isfinite(diff_sd) else math.nan


def seeds_needed(diff_sd: float, effect: float, max_seeds: int = 100_000) -> int | None:
    """The smallest n >= 2 whose ``mde_80`` is at most ``effect``, for the measured ``diff_sd``.

    ``None`` when ``diff_sd`` is unknown (fewer than two seeds) or more than ``max_seeds`` would be needed.
    """
    if not (math.isfinite(diff_sd) and effect > 0):
        return None
    if diff_sd == 0:
        return 2
    # mde_80 falls monotonically in n: bisect on [2, max_seeds]
    if _detectable(diff_sd, max_seeds) > effect:
        return None
    low, high = 2, max_seeds
    while low < high:
        mid = (low + high) // 2
        if _detectable(diff_sd, mid) <= effect:
            high = mid
        else:
            low = mid + 1
    return low


def seeds_needed_range(diff_sd: float, n: int, effect: float, max_seeds: int = 100_000
                       ) -> tuple[int | None, int | None]:
    """How uncertain :func:`seeds_needed` is when its spread comes from ``n`` seeds: the seeds needed at the ends of
    the 95% chi-square interval of the standard deviation, ``sd * sqrt((n-1) / chi2(0.975 | 0.025, n-1))``.
    ``(None, None)`` for fewer than two seeds; ``None`` for an end beyond ``max_seeds``."""
    if n < 2 or not math.isfinite(diff_sd):
        return None, None
    dof = n - 1
    low_sd = diff_sd * math.sqrt(dof / scipy_stats.chi2.ppf(0.5 + CONFIDENCE / 2, dof))
    high_sd = diff_sd * math.sqrt(dof / scipy_stats.chi2.ppf(0.5 - CONFIDENCE / 2, dof))
    return seeds_needed(low_sd, effect, max_seeds), seeds_needed(high_sd, effect, max_seeds)


def seeds_needed_text(diff_sd: float, n: int, effect: float) -> str:
    """``about 130 seeds would resolve 0.01 (95% range 18 to more than 100,000: the spread comes from 2 seeds)``."""
    needed = seeds_needed(diff_sd, effect)
    if needed is None:
        return f"no practical number of seeds would resolve {effect:g} at this spread"
    return f"about {needed} seeds would resolve {effect:g} ({seeds_range_text(diff_sd, n, effect)})"


def seeds_range_text(diff_sd: float, n: int, effect: float) -> str:
    """``95% range 18 to more than 100,000: the spread comes from 2 seeds``."""
    low, high = seeds_needed_range(diff_sd, n, effect)
    top = f"{high:,}" if high is not None else "more than 100,000"
    return f"95% range {low or 2:,} to {top}: the spread comes from {n} seeds"


def paired_difference(arm: Sequence[float], baseline: Sequence[float]) -> Interval:
    """arm - baseline, paired by position (seed); pairs with a non-finite side are dropped."""
    if len(arm) != len(baseline):
        raise BadInput(f"paired values need equal lengths, got {len(arm)} and {len(baseline)}")
    return t_interval([a - b for a, b in zip(arm, baseline)])


#: The sequential rule, as named in reports.
SEQUENTIAL_RULE = ("group-sequential looks fixed in advance, alpha 0.05 split evenly over them (Bonferroni): "
                   "each look's Student-t interval is at level 1 - 0.05 / looks, so the chance that any look "
                   "excludes 0 when there is no difference stays at most 5%")


def sequential_looks(max_seeds: int, first: int = 3) -> tuple[int, ...]:
    """The seed counts at which ``--seeds auto`` looks, fixed before any run: ``first``, then doubling, up to
    ``max_seeds`` (e.g. 3, 6, 12, 20). Few looks keep each look's interval narrow."""
    if max_seeds < 2:
        raise BadInput(f"--max-seeds must be at least 2, got {max_seeds}")
    looks = [min(first, max_seeds)]
    while looks[-1] < max_seeds:
        looks.append(min(max_seeds, 2 * looks[-1]))
    return tuple(looks)


def sequential_confidence(looks: Sequence[int], alpha: float = 1 - CONFIDENCE) -> float:
    """The confidence of each look's interval under :data:`SEQUENTIAL_RULE`."""
    return 1 - alpha / len(looks)


def sequential_decision(diffs: Sequence[float], looks: Sequence[int], effect: float) -> tuple[str, Interval]:
    """After a look at ``len(diffs)`` paired differences: ``"excludes 0"``, ``"precise"`` (the interval's
    half-width is at most ``effect / 2``), ``"max seeds"`` (the last look) or ``"continue"``, with the look's
    interval (at :func:`sequential_confidence`)."""
    interval = t_interval(diffs, sequential_confidence(looks))
    if interval.has_interval and (interval.low > 0 or interval.high < 0):
        return "excludes 0", interval
    if interval.has_interval and (interval.high - interval.low) / 2 <= effect / 2:
        return "precise", interval
    if len(diffs) >= looks[-1]:
        return "max seeds", interval
    return "continue", interval


def steps_to_target(steps: Sequence[float], values: Sequence[float], target: float) -> float:
    """The first (linearly interpolated) step at which ``values`` reach ``target`` or below; nan if never.

    ``values[k]`` is the loss at ``steps[k]``; between two evaluations the
    loss is taken as linear. A curve already at or below the target at its
    first evaluation returns that first step.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    hits = np.flatnonzero(y <= target)
    if hits.size == 0 or not math.isfinite(target):
        return math.nan
    k = int(hits[0])
    if k == 0:
        return float(x[0])
    y0, y1 = y[k - 1], y[k]
    return float(x[k - 1] + (y0 - target) / (y0 - y1) * (x[k] - x[k - 1]))


@dataclass(frozen=True)
class Speedup:
    """Steps to reach the baseline's final loss, and baseline steps / arm steps."""

    steps_to_target: float
    speedup: float
    interval: Interval  # of the per-seed ratios


def speedup(
    steps: Sequence[float], arm_curves: Sequence[Sequence[float]], base_curves: Sequence[Sequence[float]]
) -> Speedup:
    """Speed-up of an arm over the baseline, both evaluated at ``steps``, one curve per seed (paired).

    Point estimate: on the seed-mean curves, the step where the arm first
    reaches the baseline's final mean loss, and the baseline's own step for
    it (by construction its last step unless its curve dipped lower earlier);
    speedup = baseline steps / arm steps. Interval: a Student-t interval of
    the per-seed ratios, each seed's target being its own baseline final loss.
    """
    arm = np.asarray(arm_curves, dtype=float)
    base = np.asarray(base_curves, dtype=float)
    arm_mean, base_mean = arm.mean(axis=0), base.mean(axis=0)
    target = float(base_mean[-1])
    arm_steps = steps_to_target(steps, arm_mean, target)
    base_steps = steps_to_target(steps, base_mean, target)
    ratios = []
    for a, b in zip(arm, base):
        reached = steps_to_target(steps, a, float(b[-1]))
        ratios.append(steps_to_target(steps, b, float(b[-1])) / reached if reached > 0 else math.nan)
    point = base_steps / arm_steps if arm_steps > 0 else math.nan
    # A seed that never reaches its target has no ratio: no interval is honest then.
    interval = (
        t_interval(ratios) if all(math.isfinite(r) for r in ratios) else Interval(math.nan, math.nan, math.nan, 0)
    )
    return Speedup(arm_steps, point, interval)


def count_spikes(
    losses: Sequence[float], window: int = SPIKE_WINDOW, sigmas: float = SPIKE_SIGMAS, min_jump: float = SPIKE_MIN_JUMP
) -> int:
    """Count loss spikes: jumps of the train loss above the median of the preceding ``window`` steps.

    Step t is spiking when loss_t - median(previous window) exceeds both
    ``sigmas`` robust standard deviations of that window (1.4826 x the median
    absolute deviation) and ``min_jump`` nats. Consecutive spiking steps count
    as one spike. Needs the per-step loss (``log_every=1``); the first
    ``window`` steps (the initial fall) are never counted.
    """
    x = np.asarray(losses, dtype=float)
    spikes, inside = 0, False
    for t in range(window, x.size):
        past = x[t - window:t]
        past = past[np.isfinite(past)]
        if past.size == 0 or not math.isfinite(x[t]):
            continue
        median = float(np.median(past))
        robust_sigma = 1.4826 * float(np.median(np.abs(past - median)))
        spiking = x[t] - median > max(sigmas * robust_sigma, min_jump)
        if spiking and not inside:
            spikes += 1
        inside = spiking
    return spikes


def verdict(arm: str, baseline: str, diff: Interval, what: str = "final val loss", diff_sd: float = math.nan,
            effect: float = DEFAULT_EFFECT, confidence: float = CONFIDENCE) -> str:
    """One line that follows the interval: lower / higher only when the 95% interval excludes 0; otherwise
    what the design could have detected (``mde_80``) and the seeds that would resolve ``effect``."""
    if diff.n == 0:
        return f"{arm} - {baseline}: no paired {what} (runs missing or diverged)"
    if not diff.has_interval:
        return f"{arm} - {baseline} = {diff.mean:+.4f} from {diff.n} seed: no interval, no verdict"
    span = f"[{diff.low:+.4f}, {diff.high:+.4f}]"
    level = f"{confidence * 100:.4g}%"
    if diff.high < 0:
        return f"{arm} - {baseline} = {diff.mean:+.4f} {span}: lower, {level} interval excludes 0"
    if diff.low > 0:
        return f"{arm} - {baseline} = {diff.mean:+.4f} {span}: higher, {level} interval excludes 0"
    if diff.low == diff.high == 0:
        return f"{arm} - {baseline}: degenerate: the arms gave identical losses on every seed (no design, no verdict)"
    line = f"{arm} - {baseline} = {diff.mean:+.4f}: no difference detectable with {diff.n} seeds at this scale: {span}"
    mde = mde_80(diff_sd, diff.n)
    if math.isfinite(mde):
        line += f"; this design detects differences above {mde:.3f} with 80% power"
        line += f"; {seeds_needed_text(diff_sd, diff.n, effect)}"
    return line
