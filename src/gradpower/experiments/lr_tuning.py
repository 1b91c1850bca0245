"""Tuning lr per arm: each arm's runs over its lr grid, the lr each keeps, and whether that lr lies at an edge of
the grid. ``compare`` chooses with it between its tuning and its final runs, ``claims`` warns with it, and the
compare report prints its table.

The rule, fixed before any run: the lr with the lowest mean final val loss over the tuning seeds; an lr whose runs
diverged or failed is never chosen, and an arm whose every lr did has no choice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .folder import load_listed_runs
from .kinds import read_experiment
from .runs import Run


def tuning_table(loaded: list[tuple[dict[str, Any], Run | None]]) -> tuple[dict[str, dict[float, float]],
                                                                          dict[str, float]]:
    """Mean final val loss per (arm, lr) over the tuning runs listed (``inf`` where one diverged or failed), and
    each arm's chosen lr."""
    table: dict[str, dict[float, list[float]]] = {}
    for entry, run in loaded:
        if entry["phase"] != "tune":
            continue
        value = run.final_val_loss if run is not None else math.nan
        table.setdefault(entry["arm"], {}).setdefault(float(entry["lr"]), []).append(value)
    means = {arm: {lr: (float(np.mean(v)) if all(math.isfinite(x) for x in v) else math.inf) for lr, v in row.items()}
             for arm, row in table.items()}
    best = {arm: min(finite, key=finite.get) for arm, row in means.items()
            if (finite := {lr: m for lr, m in row.items() if math.isfinite(m)})}
    return means, best


def choose_lrs(out: Path, record: dict[str, Any]) -> dict[str, float]:
    """Each arm's chosen lr from the tuning runs a compare folder lists (arms without one are left out)."""
    return tuning_table(load_listed_runs(out, record))[1]


def lr_edges(best: dict[str, float], grid: list[float]) -> dict[str, float]:
    """The arms whose chosen lr is an end of the tuning grid (the optimum may lie beyond it)."""
    ends = (min(grid), max(grid))
    return {arm: lr for arm, lr in best.items() if len(grid) > 1 and lr in ends}


def edge_text(arm: str, lr: float, grid: list[float]) -> str:
    """The warning line of :func:`lr_edges`."""
    return (f"warning: {arm}'s best lr {lr:g} is at the edge of the grid [{min(grid):g}, {max(grid):g}]: extend "
            "the grid to be sure it is the optimum")


def tuned_lr_edges(out: Path) -> dict[str, float]:
    """:func:`lr_edges` of a compare folder's lr tuning (empty when it tuned none)."""
    record = read_experiment(out)
    grid = record["spec"].get("tune_lr")
    return lr_edges(choose_lrs(out, record), sorted(grid)) if grid else {}
