"""``gradpower theory``: tables and figures of the toy model and of the Adagrad problem."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .adagrad import run_adagrad
from .toy import best_p, edge_warning, grid_edge, simulate_update, update_limit

DEFAULT_RATIOS = (0.5, 2.0, 5.0, 10.0, 50.0)


def p_grid(start: float = 0.5, stop: float = 2.5, step: float = 0.05) -> np.ndarray:
    """An inclusive grid of exponents."""
    if not 0 < start < stop or step <= 0:
        raise BadInput(f"need 0 < start < stop and step > 0, got {start}:{stop}:{step}")
    return np.round(np.arange(start, stop + step / 2, step), 10)


def run_toy(out: Path, mu: float = 1e-6, eps: float = 1e-8, beta1: float = 0.9, beta2: float = 0.95,
            ratios: tuple[float, ...] = DEFAULT_RATIOS, ps: np.ndarray | None = None, steps: int = 20000,
            chains: int = 8, seed: int = 0) -> str:
    """theory.csv, optimal_p.csv and theory.png for uniform noise; returns the optimal-p table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if mu <= 0 or eps < 0 or not 0 <= beta1 < 1 or not 0 <= beta2 < 1 or any(r < 0 for r in ratios):
        raise BadInput("theory needs mu > 0, eps >= 0, beta1 and beta2 in [0, 1) and sigma/mu ratios >= 0")
    ps = p_grid() if ps is None else np.asarray(ps, float)
    if ps.size > 1 and np.max(np.diff(np.sort(ps))) > 0.05 + 1e-12:
        raise BadInput("the p grid must be at most 0.05 apart (the optimum would be too coarse)")
    sigmas = np.asarray(ratios, float)[:, None] * mu
    limit = update_limit(ps[None, :], mu, sigmas, eps)
    sim = simulate_update(ps[None, :], mu, sigmas, eps, beta1, beta2, steps=steps, chains=chains, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "theory.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["p", "mu", "sigma", "eps", "update_sim", "update_limit"])
        for i, sigma in enumerate(sigmas[:, 0]):
            for j, p in enumerate(ps):
                writer.writerow(
                    [f"{p:g}", f"{mu:g}", f"{sigma:g}", f"{eps:g}", f"{sim[i, j]:.6g}", f"{limit[i, j]:.6g}"]
                )
    best_limit, best_sim = best_p(ps, limit), best_p(ps, sim)
    with open(out / "optimal_p.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sigma_over_mu", "mu", "sigma", "eps", "p_opt_limit", "p_opt_sim", "update_limit_max",
                         "update_sim_max", "p_opt_edge"])
        for i, ratio in enumerate(ratios):
            writer.writerow([f"{ratio:g}", f"{mu:g}", f"{sigmas[i, 0]:g}", f"{eps:g}", f"{best_limit[i]:g}",
                             f"{best_sim[i]:g}", f"{limit[i].max():.6g}", f"{sim[i].max():.6g}",
                             grid_edge(best_limit[i], ps) or ""])
    fig, (ax_rel, ax_log) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, ratio in enumerate(ratios):
        top = limit[i].max()
        j = int(np.argmax(limit[i]))
        for ax, scale in ((ax_rel, top), (ax_log, 1.0)):
            (line,) = ax.plot(ps, limit[i] / scale, label=f"sigma/mu={ratio:g}")
            ax.plot(ps, sim[i] / scale, ls="--", color=line.get_color(), alpha=0.8)
            ax.plot(ps[j], limit[i, j] / scale, marker="*", ms=12, color=line.get_color())
    for ax in (ax_rel, ax_log):
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_rel.set(xlabel="p", ylabel="u(p) / max over p", ylim=(0.0, 1.05),
               title="relative update (solid: limit, dashed: simulated; *: optimum)")
    ax_log.set(
        xlabel="p", ylabel="u(p)", yscale="log", title=f"update, mu={mu:g}, eps={eps:g}, beta=({beta1}, {beta2})"
    )
    fig.tight_layout()
    fig.savefig(out / "theory.png", dpi=120)
    plt.close(fig)
    lines = ["| sigma/mu | optimal p (limit) | optimal p (simulated) | max update (limit) |", "|---|---|---|---|"]
    lines += [f"| {r:g} | {best_limit[i]:g}{' (grid edge)' if grid_edge(best_limit[i], ps) else ''} | "
              f"{best_sim[i]:g} | {limit[i].max():.4f} |" for i, r in enumerate(ratios)]
    warnings = [edge_warning(f"warning: sigma/mu = {r:g}:", best_limit[i], ps) for i, r in enumerate(ratios)]
    return "\n".join(lines + [w for w in warnings if w])


def run_adagrad_comparison(out: Path, ps: tuple[float, ...] = (0.8, 1.0, 1.2, 1.5), seeds: int = 3,
                           noise: tuple[float, ...] = (0.1, 3.0), steps: int = 500) -> str:
    """adagrad.csv and adagrad.png: loss against steps per noise level and p (seed mean, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(noise), figsize=(5.5 * len(noise), 4), squeeze=False)
    finals: dict[tuple[float, float], list[float]] = {}
    with open(out / "adagrad.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sigma", "p", "seed", "step", "loss"])
        for ax, sigma in zip(axes[0], noise):
            for p in ps:
                curves = []
                for seed in range(seeds):
                    steps_at, losses = run_adagrad(p, sigma, seed, steps=steps)
                    curves.append(losses)
                    writer.writerows([sigma, p, seed, s, f"{v:.6g}"] for s, v in zip(steps_at, losses))
                curves_arr = np.array(curves)
                finals[(sigma, p)] = list(curves_arr[:, -1])
                label = f"p={p:g}" + (" (Adagrad)" if p == 1 else "")
                (line,) = ax.plot(steps_at, curves_arr.mean(axis=0), label=label)
                ax.fill_between(steps_at, curves_arr.min(axis=0), curves_arr.max(axis=0), color=line.get_color(),
                                alpha=0.2)
            ax.set(xlabel="step", ylabel="f(x) - min f", yscale="log", title=f"noise sigma={sigma:g}")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "adagrad.png", dpi=120)
    plt.close(fig)
    lines = ["| noise sigma | " + " | ".join(f"p={p:g}" for p in ps) + " |", "|---" * (len(ps) + 1) + "|"]
    for sigma in noise:
        lines.append(f"| {sigma:g} | " + " | ".join(f"{np.mean(finals[(sigma, p)]):.4g}" for p in ps) + " |")
    return f"final loss f(x) - min f after {steps} steps, mean of {seeds} seeds:\n" + "\n".join(lines)
