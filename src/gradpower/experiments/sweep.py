"""``gradpower sweep``: a grid over TrainConfig fields, each point over seeds; best value per field.

Writes ``sweep.csv`` (one row per point and seed), ``summary.csv`` (per point:
mean, std, n of the final val loss), ``best.csv`` (for each varying field, its
best value for every combination of the other fields: e.g. the best ``p`` per
``batch_size``), a heat map when two fields vary (one per combination of the
rest when more do) and error-bar line plots.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .execute import PlannedRun, RunsFailedError, check_planned, execute, failures, place
from .folder import load_listed_runs, read_experiment, write_csv, write_experiment
from .spec import ExperimentSpec, with_run_defaults


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first field varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_label(point: dict[str, Any]) -> str:
    """``p=1.2 batch_size=8``, numbers written as in the CSV files."""
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def run_sweep(spec: ExperimentSpec, out: Path, jobs: int = 1, command: str = "gradpower sweep",
              echo: Callable[[str], None] = print) -> str:
    """Train (or reuse) every grid point over every seed, then write the sweep tables and figures."""
    if not spec.grid:
        raise ValueError("sweep needs at least one --grid FIELD=V1,V2,...")
    spec = with_run_defaults(spec)
    points = grid_points(spec.grid)
    planned = [PlannedRun(point_label(point), seed, place(spec.config(seed, **point), out / "runs"))
               for seed in spec.seed_list for point in points]
    check_planned(planned)  # every point is valid before the folder is written
    out.mkdir(parents=True, exist_ok=True)
    record = {"kind": "sweep", "command": command, "spec": spec.to_dict(),
              "runs": [{"point": {k: p.cfg.to_dict()[k] for k in spec.grid}, "seed": p.seed,
                        "dir": str(p.run_dir.relative_to(out))} for p in planned]}
    write_experiment(out, record)
    echo(f"== sweep: {len(points)} point(s) x {spec.seeds} seed(s) -> {out}")
    failed = failures(execute(planned, jobs, echo))
    text = sweep_report(out)
    if failed:
        raise RunsFailedError(failed, text)
    return text


def sweep_report(out: Path) -> str:
    """Write sweep.csv, summary.csv, best.csv and the figures of a sweep folder; return the summary text."""
    record = read_experiment(out)
    spec = ExperimentSpec.from_dict(record["spec"])
    fields = list(spec.grid)
    rows = []
    for entry, run in load_listed_runs(out, record["runs"]):
        done = run is not None and run.finished
        rows.append(
            {
                **entry["point"],
                "seed": entry["seed"],
                "final_val_loss": run.final_val_loss if done else math.nan,
                "best_val_loss": run.best_val_loss if run is not None else math.nan,
                "steps": run.steps if run is not None else 0,
                "wall_s": run.wall_s if run is not None else math.nan,
                "spikes": run.spikes if done else "",
                "run_dir": entry["dir"],
            }
        )
    write_csv(out / "sweep.csv", fields + ["seed", "final_val_loss", "best_val_loss", "steps", "wall_s", "spikes",
                                          "run_dir"], rows)
    summary = []
    for point in grid_points(spec.grid):
        values = [r["final_val_loss"] for r in rows if all(r[k] == point[k] for k in fields)
                  and math.isfinite(r["final_val_loss"])]
        summary.append({**point, "mean": float(np.mean(values)) if values else math.nan,
                        "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan, "n": len(values)})
    write_csv(out / "summary.csv", fields + ["mean", "std", "n"], summary)
    best = best_per_field(spec.grid, summary)
    write_csv(out / "best.csv", ["field", "given", "best_value", "mean", "std", "n"], best)
    _sweep_figures(out, spec.grid, summary)
    lines = ["| " + " | ".join(fields) + " | final val loss (mean ± std) | n |", "|" + "---|" * (len(fields) + 2)]
    for s in summary:
        value = f"{s['mean']:.4f} ± {s['std']:.4f}" if math.isfinite(s["std"]) else (
            f"{s['mean']:.4f}" if math.isfinite(s["mean"]) else "")
        lines.append("| " + " | ".join(str(s[k]) for k in fields) + f" | {value} | {s['n']} |")
    lines.append("")
    lines += [f"best {b['field']} given {b['given'] or 'nothing else'}: {b['best_value']} "
              f"({b['mean']:.4f} ± {b['std']:.4f}, n={b['n']})" if math.isfinite(b["std"]) else
              f"best {b['field']} given {b['given'] or 'nothing else'}: {b['best_value']} ({b['mean']:.4f}, n={b['n']})"
              for b in best]
    text = "\n".join(lines)
    (out / "report.md").write_text(f"# Sweep\n\nCommand: `{record.get('command', 'gradpower sweep')}`\n\n{text}\n\n"
                                   + "".join(f"![{f.name}]({f.name})\n\n" for f in sorted(out.glob("*.png"))))
    return text


def best_per_field(grid: dict[str, list[Any]], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each field, its value with the lowest mean loss for every combination of the other fields."""
    fields = list(grid)
    out = []
    for name in fields:
        others = [f for f in fields if f != name]
        for combo in itertools.product(*(grid[f] for f in others)):
            given = dict(zip(others, combo))
            candidates = [s for s in summary if all(s[k] == v for k, v in given.items()) and math.isfinite(s["mean"])]
            if not candidates:
                continue
            top = min(candidates, key=lambda s: s["mean"])
            out.append({"field": name, "given": point_label(given), "best_value": top[name], "mean": top["mean"],
                        "std": top["std"], "n": top["n"]})
    return out


def _sweep_figures(out: Path, grid: dict[str, list[Any]], summary: list[dict[str, Any]]) -> None:
    fields = list(grid)
    lookup = {tuple(s[k] for k in fields): s for s in summary}
    x_name = fields[-1]
    rest = fields[:-1]
    for combo in itertools.product(*(grid[f] for f in rest[1:])) if len(rest) >= 1 else [()]:
        fixed = dict(zip(rest[1:], combo))
        suffix = "".join(f"-{k}{v}" for k, v in fixed.items())
        series = {}
        y_values = grid[rest[0]] if rest else [None]
        matrix = np.full((len(y_values), len(grid[x_name])), math.nan)
        for i, y in enumerate(y_values):
            key_base = ({rest[0]: y} if rest else {}) | fixed
            cells = [lookup[tuple({**key_base, x_name: x}[k] for k in fields)] for x in grid[x_name]]
            matrix[i] = [c["mean"] for c in cells]
            series[f"{rest[0]}={y}" if rest else ""] = (list(grid[x_name]), matrix[i],
                                                          np.nan_to_num(np.array([c["std"] for c in cells])))
        title = f"final val loss vs {x_name}" + (f" ({point_label(fixed)})" if fixed else "")
        plots.error_bar_lines(out / f"lines{suffix}.png", x_name, series, title)
        if rest:
            plots.heatmap(out / f"heatmap{suffix}.png", x_name, grid[x_name], rest[0], y_values, matrix, title)
