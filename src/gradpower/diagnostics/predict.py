"""The predicted best p: measured per-coordinate (mu_i, sigma_i) through the theory's update formula.

For every measured coordinate the long-averaging AdamPower update is
u_i(p) = E[phi_p(g_i)] / (sqrt(E[|g_i|^(2p)]) + eps) with g_i = mu_i + noise
of standard deviation sigma_i (uniform as in the paper, or Gaussian; the
formulas are :mod:`gradpower.theory.toy`'s). The first-order loss decrease
of one step along the true gradient is D(p) = sum_i mu_i u_i(p) (each sampled
coordinate weighted by the coordinates it stands for), and p* = argmax D(p).

The mean enters with its sampling noise removed (:attr:`Measurement.signal`).
Coordinates whose corrected mean is 0 (no mean resolvable above the noise)
add nothing to D(p); they are counted (``frac_no_mean``, weighted by the
coordinates they stand for) and left out of the sigma/|mu| quantiles.

The grid spans 0.3 to 2.5. A p* on its edge means the optimum may lie beyond
it: :func:`grid_edge` names the edge, and callers warn and record it.

Assumptions, and where they break: the lr is the same for every p (the
optimizer is not retuned, while a user may retune it); curvature is ignored
(first order only, so a larger update is always "better"); coordinates are
independent and their noise stationary over Adam's averaging window; the
mean is measured on the current weights (the best p changes as training moves).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..theory.toy import edge_warning as toy_edge_warning
from ..theory.toy import grid_edge as toy_grid_edge
from ..theory.toy import update_limit
from .gradstats import Measurement

P_GRID = np.round(np.arange(0.3, 2.5001, 0.05), 10)
#: How close to its maximum D(p) must be for p to count as "as good" as p*: D(p) is often flat around its peak, so
#: p* alone reads more precise than the prediction is; every p* is reported with its flat range at this fraction.
FLAT_FRACTION = 0.02


def loss_decrease(meas: Measurement, batch_size: int, ps: np.ndarray = P_GRID, eps: float = 1e-8,
                  noise: str = "uniform", mask: np.ndarray | None = None) -> np.ndarray:
    """D(p) on the grid ``ps`` for the mini-batch gradient over ``batch_size`` sequences."""
    keep = np.ones(meas.mu.size, bool) if mask is None else mask
    signal = meas.signal
    keep = keep & (signal != 0)  # a coordinate without a resolvable mean adds exactly 0: not worth its moments
    mu, sigma, weight = signal[keep], meas.sigma_at(batch_size)[keep], meas.weights[keep]
    u = update_limit(ps[None, :], mu[:, None], sigma[:, None], eps, noise)
    return (weight[:, None] * mu[:, None] * u).sum(axis=0)


def predict_p(meas: Measurement, batch_size: int, ps: np.ndarray = P_GRID, eps: float = 1e-8,
              noise: str = "uniform", mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """p* = argmax D(p) and the curve D(p)."""
    curve = loss_decrease(meas, batch_size, ps, eps, noise, mask)
    return float(ps[int(np.argmax(curve))]), curve


def flat_range(curve: np.ndarray, ps: np.ndarray = P_GRID, fraction: float = FLAT_FRACTION) -> tuple[float, float]:
    """The p values around p* (the contiguous run of the grid containing the argmax) whose D(p) is within
    ``fraction`` of the maximum: the precision of the prediction, as (lowest, highest) p."""
    j = int(np.argmax(curve))
    threshold = curve[j] - fraction * abs(curve[j])
    low, high = j, j
    while low > 0 and curve[low - 1] >= threshold:
        low -= 1
    while high < curve.size - 1 and curve[high + 1] >= threshold:
        high += 1
    return float(ps[low]), float(ps[high])


def flat_text(low: float, high: float) -> str:
    """``[0.3, 1.2]``: a flat range as the tables print it."""
    return f"[{low:g}, {high:g}]"


def grid_edge(p_star: float, ps: np.ndarray = P_GRID) -> str | None:
    """:func:`gradpower.theory.toy.grid_edge` on this module's grid by default."""
    return toy_grid_edge(p_star, ps)


def edge_warning(what: str, p_star: float, ps: np.ndarray = P_GRID) -> str | None:
    """:func:`gradpower.theory.toy.edge_warning` on this module's grid by default."""
    return toy_edge_warning(what, p_star, ps)


def noise_ratios(meas: Measurement, batch_size: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """sigma/|mu| at ``batch_size`` for the coordinates with a resolvable mean, and the weighted share without."""
    keep = np.ones(meas.mu.size, bool) if mask is None else mask
    mu = np.abs(meas.signal[keep])
    resolved = mu > 0
    weights = meas.weights[keep]
    frac_no_mean = float(weights[~resolved].sum() / weights.sum()) if weights.size else math.nan
    return meas.sigma_at(batch_size)[keep][resolved] / mu[resolved], frac_no_mean


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def summary_rows(meas: Measurement, batch_size: int, p: float, eps: float = 1e-8) -> list[dict[str, Any]]:
    """Per block (and ``all``): quantiles of |g| and sigma/|mu|, the share of |g|^p below eps, B_simple, p*,
    and the share of coordinates without a resolvable mean."""
    blocks = meas.blocks()
    rows = []
    for block in ["all", *sorted(set(blocks))]:
        mask = np.ones(blocks.size, bool) if block == "all" else blocks == block
        mu = np.abs(meas.signal[mask])
        ratio, frac_no_mean = noise_ratios(meas, batch_size, mask)
        names = set(meas.names[mask])
        row: dict[str, Any] = {"batch_size": batch_size, "block": block, "coords": int(mask.sum())}
        for q in (10, 50, 90):
            row[f"abs_g_q{q}"] = float(np.percentile(mu, q))
            row[f"noise_ratio_q{q}"] = _quantile(ratio, q)
        row["frac_below_eps"] = float(np.average(mu ** p < eps, weights=meas.weights[mask]))
        row["b_simple"] = meas.noise_scale(names) if meas.tensor_norms else math.nan
        for noise in ("uniform", "gaussian"):
            row[f"p_star_{noise}"], curve = predict_p(meas, batch_size, eps=eps, noise=noise, mask=mask)
            row[f"p_flat_low_{noise}"], row[f"p_flat_high_{noise}"] = flat_range(curve)
        row["frac_no_mean"] = frac_no_mean
        rows.append(row)
    return rows


def json_safe(stats: dict[str, Any]) -> dict[str, Any]:
    """``stats`` with every non-finite float as None (what ``metrics.jsonl`` records: JSON has no nan or inf)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in stats.items()}


def choose_p(meas: Measurement, batch_size: int, eps: float, noise: str) -> tuple[float, dict[str, Any]]:
    """``--p auto``: p* for this run's batch size, and the statistics logged with it (``p_auto_edge``: the grid
    edge p* lies on, or None; ``p_flat_low``/``p_flat_high``: its flat range, :func:`flat_range`)."""
    p_star, curve = predict_p(meas, batch_size, eps=eps, noise=noise)
    ratio, frac_no_mean = noise_ratios(meas, batch_size)
    low, high = flat_range(curve)
    return p_star, {"p_auto": p_star, "p_flat_low": low, "p_flat_high": high, "noise_model": noise,
                    "b_simple": meas.noise_scale() if meas.tensor_norms else math.nan,
                    "noise_ratio_median": _quantile(ratio, 50), "frac_no_mean": frac_no_mean,
                    "p_auto_edge": grid_edge(p_star)}
