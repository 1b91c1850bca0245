"""PNG figures of comparisons and sweeps (matplotlib, no display needed).

Each function takes the same per-arm / per-point numbers the CSV tables hold
and writes one file; nothing here reads run folders or computes statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the Agg backend must be chosen before pyplot is imported


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the figure, with every title, axis label and legend entry in its PNG ``Description`` text, so
    what a figure shows can be searched and checked without looking at it."""
    fig.tight_layout()
    words = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        legend = ax.get_legend()
        words += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        words += [t.get_text() for t in legend.get_texts()] if legend is not None else []
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Description": " | ".join(w for w in words if w)})
    plt.close(fig)
    return path


def _legend_below(ax: plt.Axes, **kwargs) -> None:
    """The axes' legend under it, off the data (a legend inside the axes covers curves or bands)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8,
                  ncol=min(2, len(handles)), frameon=False, **kwargs)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what is there)."""
    if window <= 1 or values.size == 0:
        return values
    cumulative = np.cumsum(np.insert(np.nan_to_num(values), 0, 0.0))
    counts = np.minimum(np.arange(1, values.size + 1), window)
    return (cumulative[1:] - cumulative[np.maximum(0, np.arange(1, values.size + 1) - window)]) / counts


def loss_curves(
    path: Path, curves: dict[str, dict[str, np.ndarray]], title: str, note: str = ""
) -> Path:
    """Validation loss (left) and smoothed train loss (right) per arm: seed mean with a min-max band.

    ``curves[arm]`` holds ``val_step``, ``val`` (seeds x evals: the small regular evaluation), ``step``,
    ``train`` (seeds x steps), and ``final`` (the final evaluation of each seed, drawn at ``final_step``: the
    number the results table gives, on the larger held-out set the regular one is spread over). ``note`` says
    under the panel why the two differ (e.g. how far apart they ended). An arm whose p tracks the noise also has
    ``p_track`` (each seed's (steps, p) steps): drawn dotted on a second axis of the train-loss panel.
    """
    fig, (ax_val, ax_train) = plt.subplots(1, 2, figsize=(11, 4))
    ax_p = None
    for name, c in curves.items():
        for ax, x, y in ((ax_val, c["val_step"], c["val"]), (ax_train, c["step"], c["train"])):
            if y.size == 0:
                continue
            (line,) = ax.plot(x, y.mean(axis=0), label=name)
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.2)
            if ax is ax_val and c.get("final") is not None and np.isfinite(c["final"]).any():
                ax.errorbar([c["final_step"]], [np.nanmean(c["final"])], yerr=[[np.nanmean(c["final"]) - np.nanmin(
                    c["final"])], [np.nanmax(c["final"]) - np.nanmean(c["final"])]], fmt="D", color=line.get_color(),
                    capsize=3, label=f"{name}: final evaluation (the table's number)")
        for i, (x, p) in enumerate(c.get("p_track") or []):
            ax_p = ax_p or ax_train.twinx()
            seeds = " (each seed)" if len(c["p_track"]) > 1 else ""
            ax_p.step(x, p, where="post", ls=":", lw=1.2, color=line.get_color(),
                      label=None if i else f"{name}: p in force{seeds}")
    ax_val.set(xlabel="step", ylabel="validation loss",
               title="val loss: lines the regular evaluation, ◆ the final one")
    ax_train.set(xlabel="step", ylabel="train loss (smoothed)", title="train loss (moving average)")
    if ax_p is not None:
        ax_p.set_ylabel("p (--p track; dotted)")
        handles, labels = ax_p.get_legend_handles_labels()
        for handle, label in zip(handles, labels):  # in the train panel's legend, below it
            ax_train.plot([], [], ls=":", color=handle.get_color(), label=label)
    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3)
        _legend_below(ax)
    if note:
        ax_val.set_title(f"{ax_val.get_title()}\n{note}", fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


def difference_curves(path: Path, steps: np.ndarray, diffs: dict[str, dict[str, np.ndarray]], baseline: str) -> Path:
    """Paired val-loss difference to the baseline over steps: mean and 95% t band per arm, and each seed's own
    paired curve (``diffs[arm]["per_seed"]``, one row per seed) as a thin line."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, d in diffs.items():
        n = len(d.get("per_seed", []))
        (line,) = ax.plot(steps, d["mean"], lw=2, label=f"{name} - {baseline} (n = {n} seeds; thin: each seed)")
        if np.isfinite(d["low"]).any():
            ax.fill_between(steps, d["low"], d["high"], color=line.get_color(), alpha=0.2)
        for curve in d.get("per_seed", []):
            ax.plot(steps, curve, color=line.get_color(), lw=0.7, alpha=0.5)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set(xlabel="step", ylabel="val loss difference", title="paired difference to the baseline (95% interval)")
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _save(fig, path)


def lr_schedules(path: Path, schedules: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """The lr each arm's scheduler applied, per step."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, (x, lr) in schedules.items():
        ax.plot(x, lr, label=name)
    ax.set(xlabel="step", ylabel="lr", title="learning rate applied")
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _save(fig, path)


def heatmap(path: Path, x_name: str, x_values: Sequence, y_name: str, y_values: Sequence, grid: np.ndarray,
            title: str) -> Path:
    """Mean final val loss over a 2-D grid (rows: y, columns: x), each cell annotated (dark text on light
    cells, light on dark), the best cell per row outlined."""
    fig, ax = plt.subplots(figsize=(1.2 * len(x_values) + 3, 0.8 * len(y_values) + 2))
    image = ax.imshow(grid, cmap="cividis_r", aspect="auto")
    ax.set_xticks(range(len(x_values)), [str(v) for v in x_values])
    ax.set_yticks(range(len(y_values)), [str(v) for v in y_values])
    ax.set(xlabel=x_name, ylabel=y_name, title=title)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                red, green, blue, _ = image.cmap(image.norm(grid[i, j]))
                light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="black" if light else "white",
                        fontsize=9)
        if np.isfinite(grid[i]).any():
            j = int(np.nanargmin(grid[i]))
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    fig.colorbar(image, ax=ax, label="final val loss (mean)")
    return _save(fig, path)


def error_bar_lines(path: Path, x_name: str, series: dict[str, tuple[list, np.ndarray, np.ndarray]],
                    title: str) -> Path:
    """Mean final val loss against one field, one line per value of the others, with 95% interval bars
    (``series`` holds x, the means and the bars' half-widths)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, mean, std) in series.items():
        numeric = all(isinstance(v, (int, float)) for v in x)
        positions = x if numeric else list(range(len(x)))
        ax.errorbar(positions, mean, yerr=std, marker="o", capsize=3, label=name or None)
        if not numeric:
            ax.set_xticks(positions, [str(v) for v in x])
    ax.set(xlabel=x_name, ylabel="final val loss", title=title)
    ax.grid(alpha=0.3)
    if any(series):
        _legend_below(ax)
    return _save(fig, path)


def horizon_differences(path: Path, series: dict[str, dict[str, np.ndarray]], baseline: str,
                        baseline_loss: tuple[np.ndarray, np.ndarray], title: str) -> Path:
    """Left: each arm's paired final-val-loss difference to the baseline against training tokens (log x), with
    its 95% interval as bars and the zero line. Right: the baseline's final val loss (seed mean) per horizon.

    ``series[arm]`` holds ``tokens``, ``mean``, ``low`` and ``high`` (nan bounds: no bar)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, s in series.items():
        low, high = np.nan_to_num(s["mean"] - s["low"]), np.nan_to_num(s["high"] - s["mean"])
        left.errorbar(s["tokens"], s["mean"], yerr=[low, high], marker="o", capsize=4, label=arm)
    left.axhline(0.0, color="black", linewidth=0.8)
    left.set_xscale("log")
    left.set_xlabel("training tokens (log)")
    left.set_ylabel(f"final val loss - {baseline} (nats)")
    left.set_title("paired difference, 95% interval")
    _legend_below(left)  # a one-arm ladder has nothing to pair: no legend
    tokens, loss = baseline_loss
    right.plot(tokens, loss, marker="o", color="black")
    right.set_xscale("log")
    right.set_xlabel("training tokens (log)")
    right.set_ylabel(f"{baseline}: final val loss (seed mean)")
    right.set_title("the baseline at each horizon")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def size_trend(path: Path, params: Sequence[int], members: Sequence, slope, intercept: float, title: str) -> Path:
    """A contrast against model size (log x): each size's seed mean with its 95% interval, the zero line and the
    fitted line ``intercept + slope x ln(params)`` (``members`` and ``slope`` are intervals: mean, low, high)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.array(params, dtype=float)
    mean = np.array([m.mean for m in members])
    low, high = np.nan_to_num(mean - np.array([m.low for m in members])), np.nan_to_num(
        np.array([m.high for m in members]) - mean)
    ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=4, ls="none", label="each size: mean, 95% interval")
    grid = np.geomspace(x.min(), x.max(), 50)
    band = f" [{slope.low:+.4f}, {slope.high:+.4f}]" if np.isfinite(slope.low) else ""
    ax.plot(grid, intercept + slope.mean * np.log(grid), color="black", lw=1,
            label=f"fitted: {slope.mean:+.4f}{band} nats per e-fold of parameters")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="parameters (log)", ylabel="contrast (nats)", title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _save(fig, path)
