"""The predicted best p: measured per-coordinate (mu_i, sigma_i) through the theory's update formula.

For every measured coordinate the long-averaging AdamPower update is
u_i(p) = E[phi_p(g_i)] / (sqrt(E[|g_i|^(2p)]) + eps) with g_i = mu_i + noise
of standard deviation sigma_i (uniform as in the paper, or Gaussian; the
formulas are :mod:`gradpower.theory.toy`'s). The first-order loss decrease
of one step along the true gradient is D(p) = sum_i mu_i u_i(p) (each sampled
coordinate weighted by the coordinates it stands for), and p* = argmax D(p).

The mean enters with its sampling noise removed (:attr:`Measurement.signal`).

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

from ..theory.toy import update_limit
from .gradstats import Measurement

P_GRID = np.round(np.arange(0.5, 2.5001, 0.05), 10)


def loss_decrease(meas: Measurement, batch_size: int, ps: np.ndarray = P_GRID, eps: float = 1e-8,
                  noise: str = "uniform", mask: np.ndarray | None = None) -> np.ndarray:
    """D(p) on the grid ``ps`` for the mini-batch gradient over ``batch_size`` sequences."""
    keep = slice(None) if mask is None else mask
    mu, sigma, weight = meas.signal[keep], meas.sigma_at(batch_size)[keep], meas.weights[keep]
    u = update_limit(ps[None, :], mu[:, None], sigma[:, None], eps, noise)
    return (weight[:, None] * mu[:, None] * u).sum(axis=0)


def predict_p(meas: Measurement, batch_size: int, ps: np.ndarray = P_GRID, eps: float = 1e-8,
              noise: str = "uniform", mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """p* = argmax D(p) and the curve D(p)."""
    curve = loss_decrease(meas, batch_size, ps, eps, noise, mask)
    return float(ps[int(np.argmax(curve))]), curve


def summary_rows(meas: Measurement, batch_size: int, p: float, eps: float = 1e-8) -> list[dict[str, Any]]:
    """Per block (and ``all``): quantiles of |g| and sigma/|mu|, the share of |g|^p below eps, B_simple, p*."""
    blocks = meas.blocks()
    rows = []
    for block in ["all", *sorted(set(blocks))]:
        mask = np.ones(blocks.size, bool) if block == "all" else blocks == block
        mu = np.abs(meas.signal[mask])
        ratio = meas.sigma_at(batch_size)[mask] / np.maximum(mu, 1e-45)
        names = set(meas.names[mask])
        row: dict[str, Any] = {"batch_size": batch_size, "block": block, "coords": int(mask.sum())}
        for q in (10, 50, 90):
            row[f"abs_g_q{q}"] = float(np.percentile(mu, q))
            row[f"noise_ratio_q{q}"] = float(np.percentile(ratio, q))
        row["frac_below_eps"] = float(np.average(mu ** p < eps, weights=meas.weights[mask]))
        row["b_simple"] = meas.noise_scale(names) if meas.tensor_norms else math.nan
        for noise in ("uniform", "gaussian"):
            row[f"p_star_{noise}"] = predict_p(meas, batch_size, eps=eps, noise=noise, mask=mask)[0]
        rows.append(row)
    return rows


def choose_p(meas: Measurement, batch_size: int, eps: float, noise: str) -> tuple[float, dict[str, Any]]:
    """``--p auto``: p* for this run's batch size, and the statistics logged with it."""
    p_star, _ = predict_p(meas, batch_size, eps=eps, noise=noise)
    ratio = meas.sigma_at(batch_size) / np.maximum(np.abs(meas.signal), 1e-45)
    return p_star, {"p_auto": p_star, "noise_model": noise,
                    "b_simple": meas.noise_scale() if meas.tensor_norms else math.nan,
                    "noise_ratio_median": float(np.median(ratio))}
