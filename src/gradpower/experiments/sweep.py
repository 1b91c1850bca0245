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
from scipy import stats as scipy_stats

from ..errors import BadInput
from . import plots
from .execute import PlannedRun, RunsFailedError, check_planned, execute, failures, place
from .folder import load_listed_runs, read_experiment, write_csv, write_experiment
from .launcher import LauncherConfig
from .spec import ExperimentSpec, grid_points, point_label, with_run_defaults
from .stage import stage_of
from .stats import Interval, t_interval

#: The column of a ladder's horizon in a sweep's tables.
HORIZON = "horizon"


def run_sweep(spec: ExperimentSpec, out: Path, jobs: int = 1, command: str = "gradpower sweep",
              echo: Callable[[str], None] = print, launcher: LauncherConfig | None = None) -> str:
    """Train (or reuse) every grid point over every seed, then write the sweep tables and figures."""
    if not spec.grid:
        raise BadInput("sweep needs at least one --grid FIELD=V1,V2,...")
    if spec.tokens is not None and "steps" in spec.grid:
        raise BadInput("--tokens fixes each point's steps: drop steps from the grid")
    spec = with_run_defaults(spec)
    points = grid_points(spec.grid)
    planned, horizons = [], []
    for seed in spec.seed_list:
        for point in points:
            for horizon, _ in spec.horizon_runs(point):
                label = point_label(point) + (f" @ {spec.horizon_text(horizon)}" if horizon is not None else "")
                planned.append(PlannedRun(label, seed, place(spec.point_config(point, seed, horizon), out / "runs")))
                horizons.append(horizon)
    check_planned(planned)  # every point is valid before the folder is written
    out.mkdir(parents=True, exist_ok=True)
    record = {"kind": "sweep", "command": command, "spec": spec.to_dict(),
              "runs": [{"point": {k: p.cfg.to_dict()[k] for k in spec.grid}, "seed": p.seed,
                        "dir": str(p.run_dir.relative_to(out)), **({"horizon": h} if h is not None else {})}
                       for p, h in zip(planned, horizons)]}
    write_experiment(out, record)
    ladder = f" x {len(spec.horizons)} horizon(s)" if spec.horizons else ""
    echo(f"== sweep: {len(points)} point(s) x {spec.seeds} seed(s){ladder} -> {out}")
    failed = failures(execute(planned, jobs, echo, launcher))
    text = sweep_report(out)
    if failed:
        raise RunsFailedError(failed, text)
    return text


def sweep_report(out: Path) -> str:
    """Write sweep.csv, summary.csv, best.csv and the figures of a sweep folder; return the summary text."""
    record = read_experiment(out)
    spec = ExperimentSpec.from_dict(record["spec"])
    # a ladder's horizon is one more axis of the tables and figures (never a "best" of its own)
    grid = {**spec.grid, **({HORIZON: sorted(spec.horizons)} if spec.horizons else {})}
    fields = list(grid)
    rows = []
    loaded = load_listed_runs(out, record)
    for entry, run in loaded:
        done = run is not None and run.finished
        rows.append(
            {
                **entry["point"], **({HORIZON: entry.get("horizon")} if spec.horizons else {}),
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
    by_seed = {(tuple(r[k] for k in fields), r["seed"]): r["final_val_loss"] for r in rows
               if math.isfinite(r["final_val_loss"])}
    reference = spec.reference or {fields[0]: spec.grid[fields[0]][0]}
    summary = []
    for point in grid_points(grid):
        values = [r["final_val_loss"] for r in rows if all(r[k] == point[k] for k in fields)
                  and math.isfinite(r["final_val_loss"])]
        diff = _paired(by_seed, fields, {**point, **reference}, point)
        summary.append({**point, "mean": float(np.mean(values)) if values else math.nan,
                        "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan, "n": len(values),
                        "diff_mean": diff.mean, "diff_ci_low": diff.low, "diff_ci_high": diff.high})
    write_csv(out / "summary.csv", fields + ["mean", "std", "n", "diff_mean", "diff_ci_low", "diff_ci_high"], summary)
    best = [b for b in best_per_field(grid, summary, by_seed) if b["field"] != HORIZON]
    write_csv(out / "best.csv", ["field", "given", "best_value", "mean", "std", "n", "resolved"], best)
    _sweep_figures(out, grid, summary)
    lines = ["| " + " | ".join(fields) + " | final val loss (mean ± std) | n |", "|" + "---|" * (len(fields) + 2)]
    for s in summary:
        value = f"{s['mean']:.4f} ± {s['std']:.4f}" if math.isfinite(s["std"]) else (
            f"{s['mean']:.4f}" if math.isfinite(s["mean"]) else "")
        lines.append("| " + " | ".join(str(s[k]) for k in fields) + f" | {value} | {s['n']} |")
    lines.append("")
    ref = point_label(reference)
    lines += [_best_line(b, ref) for b in best]
    text = "\n".join(lines)
    shared = spec.config(**{k: v[0] for k, v in spec.grid.items()})
    budget = (f"tokens held fixed at {spec.tokens} per run (steps = tokens / (batch_size x seq_len))"
              if spec.tokens is not None else f"steps held fixed at {shared.steps}" if "steps" not in fields
              else "steps from the grid")
    if spec.horizons:
        budget = f"horizons {', '.join(f'{h:,}' for h in grid[HORIZON])} {spec.horizon_unit} (the `{HORIZON}` column)"
    settings = (f"Shared settings: optimizer `{shared.optim}`, lr `{shared.lr or 'the preset default'}`, schedule "
                f"`{shared.schedule}`, {budget}; differences are paired by seed against {ref} (95% Student-t)"
                + (", within each horizon." if spec.horizons else "."))
    stages = _stages(loaded, spec, reference)
    text += "\n" + "\n".join(stages)
    settings += "\n\nWhere in training (the reference point's runs):\n\n" + "\n".join(f"- {line}" for line in stages)
    (out / "report.md").write_text(f"# Sweep\n\nCommand: `{record.get('command', 'gradpower sweep')}`\n\n{settings}\n\n"
                                   f"{text}\n\n"
                                   + "".join(f"![{f.name}]({f.name})\n\n" for f in sorted(out.glob("*.png"))))
    return text


def _stages(loaded, spec: ExperimentSpec, reference: dict[str, Any]) -> list[str]:
    """Where in training the reference point's runs ended, per horizon (:mod:`.stage`)."""
    lines = []
    for horizon in sorted(spec.horizons) if spec.horizons else [None]:
        runs = [run for entry, run in loaded if run is not None and entry.get("horizon") == horizon
                and all(entry["point"].get(k) == v for k, v in reference.items() if k in entry["point"])]
        stage = stage_of(runs)
        if stage is not None:
            where = f"{HORIZON} {spec.horizon_text(horizon)}: " if horizon is not None else ""
            lines.append(f"{where}{stage.text()}".replace("the baseline's", "the reference's"))
    return lines


def _best_line(b: dict[str, Any], reference: str) -> str:
    given = b["given"] or "nothing else"
    if b["best_value"] is None:
        return f"best {b['field']} given {given}: none named from {b['n']} seed(s) (a best needs two or more)"
    spread = f"{b['mean']:.4f} ± {b['std']:.4f}" if math.isfinite(b["std"]) else f"{b['mean']:.4f}"
    status = ("resolved: its paired 95% interval against every other value excludes 0" if b["resolved"]
              else "not resolved: some paired 95% interval against another value includes 0")
    return f"best {b['field']} given {given}: {b['best_value']} ({spread}, n={b['n']}; {status})"


def _paired(by_seed: dict[tuple, float], fields: list[str], reference: dict[str, Any],
            point: dict[str, Any]) -> Interval:
    """``point`` minus ``reference``, paired by seed, with its 95% interval (nan bounds below two pairs)."""
    ref_key, key = tuple(reference[k] for k in fields), tuple(point[k] for k in fields)
    seeds = sorted({s for (k, s) in by_seed if k == key} & {s for (k, s) in by_seed if k == ref_key})
    return t_interval([by_seed[(key, s)] - by_seed[(ref_key, s)] for s in seeds])


def best_per_field(grid: dict[str, list[Any]], summary: list[dict[str, Any]],
                   by_seed: dict[tuple, float] | None = None) -> list[dict[str, Any]]:
    """For each field and every combination of the others, the value with the lowest mean loss.

    ``resolved`` is true only when that value's paired 95% interval against every other value of the field
    excludes 0. No best is named from a single seed: with fewer than two, ``best_value`` stays blank.
    """
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
            named = top["n"] >= 2
            resolved = named and by_seed is not None and all(
                _paired(by_seed, fields, {**given, name: top[name]}, {**given, name: other[name]}).low > 0
                for other in candidates if other is not top)
            out.append({"field": name, "given": point_label(given), "best_value": top[name] if named else None,
                        "mean": top["mean"], "std": top["std"], "n": top["n"], "resolved": resolved})
    return out


def _halfwidth(cell: dict[str, Any]) -> float:
    """Half-width of the 95% Student-t interval of a point's mean over seeds (0 with one seed: no bar)."""
    n = cell["n"]
    return float(scipy_stats.t.ppf(0.975, n - 1) * cell["std"] / math.sqrt(n)) if n >= 2 else 0.0


def _sweep_figures(out: Path, grid: dict[str, list[Any]], summary: list[dict[str, Any]]) -> None:
    fields = list(grid)
    lookup = {tuple(s[k] for k in fields): s for s in summary}
    x_name = fields[0]  # the first grid field (usually p) on the x axis, one line per combination of the others
    rest = fields[1:]
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
                                                          np.array([_halfwidth(c) for c in cells]))
        title = f"final val loss vs {x_name}" + (f" ({point_label(fixed)})" if fixed else "")
        plots.error_bar_lines(out / f"lines{suffix}.png", x_name, series, title)
        if rest:
            plots.heatmap(out / f"heatmap{suffix}.png", x_name, grid[x_name], rest[0], y_values, matrix, title)
