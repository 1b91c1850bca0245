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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from ..errors import BadInput
from ..train.config import TrainConfig
from . import plots
from .execute import PlannedRun, place
from .folder import load_listed_runs, write_csv
from .kinds import read_experiment, register, run_experiment
from .launcher import LauncherConfig
from .runs import Run
from .spec import SweepSpec, grid_points, point_label, with_run_defaults
from .stage import stage_of
from .stats import Interval, t_interval

#: The column of a ladder's horizon in a sweep's tables.
HORIZON = "horizon"


@dataclass
class SweepResult:
    """What a sweep folder's runs say (:func:`analyse_sweep`): each table's rows, the reference point and where
    in training its runs stand."""

    spec: SweepSpec
    record: dict[str, Any]
    grid: dict[str, list[Any]]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    best: list[dict[str, Any]]
    reference: dict[str, Any]
    stages: list[str]

    @property
    def fields(self) -> list[str]:
        return list(self.grid)

    def text(self) -> str:
        """The summary table, each field's best and the stages, as the command prints them."""
        lines = ["| " + " | ".join(self.fields) + " | final val loss (mean ± std) | n |",
                 "|" + "---|" * (len(self.fields) + 2)]
        for s in self.summary:
            value = f"{s['mean']:.4f} ± {s['std']:.4f}" if math.isfinite(s["std"]) else (
                f"{s['mean']:.4f}" if math.isfinite(s["mean"]) else "")
            lines.append("| " + " | ".join(str(s[k]) for k in self.fields) + f" | {value} | {s['n']} |")
        lines.append("")
        lines += [_best_line(b, point_label(self.reference)) for b in self.best]
        return "\n".join(lines) + "\n" + "\n".join(self.stages)


class SweepExperiment:
    """``sweep`` as a kind of experiment (:mod:`.kinds`): every grid point over seeds, paired by seed against a
    reference point."""

    kind = "sweep"
    spec_type = SweepSpec

    def plan(self, spec: SweepSpec, runs_root: Path) -> list[PlannedRun]:
        if not spec.grid:
            raise BadInput("sweep needs at least one --grid FIELD=V1,V2,...")
        if spec.tokens is not None and "steps" in spec.grid:
            raise BadInput("--tokens fixes each point's steps: drop steps from the grid")
        planned = []
        for seed in spec.seed_list:
            for point in grid_points(spec.grid):
                for horizon, _ in spec.horizon_runs(point):
                    label = point_label(point) + (f" @ {spec.horizon_text(horizon)}" if horizon is not None else "")
                    cfg = place(spec.point_config(point, seed, horizon), runs_root)
                    planned.append(PlannedRun(label, seed, cfg, point={k: cfg.to_dict()[k] for k in spec.grid},
                                              horizon=horizon))
        return planned

    def planned_config(self, spec: SweepSpec, entry: dict[str, Any]) -> TrainConfig | None:
        for point in grid_points(spec.grid):
            cfg = spec.point_config(point, int(entry["seed"]), entry.get("horizon"))
            if {k: cfg.to_dict()[k] for k in spec.grid} == entry.get("point"):
                return cfg
        return None

    def analyse(self, folder: Path) -> SweepResult:
        record = read_experiment(folder)
        return analyse_sweep(record, load_listed_runs(folder, record))

    def write(self, folder: Path, result: SweepResult) -> str:
        return write_sweep(folder, result)


SWEEP = register(SweepExperiment())


def run_sweep(spec: SweepSpec, out: Path, jobs: int = 1, command: str = "gradpower sweep",
              echo: Callable[[str], None] = print, launcher: LauncherConfig | None = None) -> str:
    """Train (or reuse) every grid point over every seed, then write the sweep tables and figures."""
    return run_experiment(SWEEP, with_run_defaults(spec), out, jobs, command, echo, launcher)


def analyse_sweep(record: dict[str, Any], loaded: list[tuple[dict[str, Any], Run | None]]) -> SweepResult:
    """A sweep folder's record and listed runs analysed: one row per run, per point its mean and its paired
    difference to the reference, each field's best. Pure: it reads and writes no file."""
    spec = SweepSpec.from_dict(record["spec"])
    # a ladder's horizon is one more axis of the tables and figures (never a "best" of its own)
    grid = {**spec.grid, **({HORIZON: sorted(spec.horizons)} if spec.horizons else {})}
    fields = list(grid)
    rows = []
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
    best = [b for b in best_per_field(grid, summary, by_seed) if b["field"] != HORIZON]
    return SweepResult(spec, record, grid, rows, summary, best, reference, _stages(loaded, spec, reference))


def write_sweep(out: Path, result: SweepResult) -> str:
    """A :class:`SweepResult` as files in ``out``: sweep.csv, summary.csv, best.csv, the figures and report.md;
    returns :meth:`SweepResult.text`."""
    spec, fields, grid = result.spec, result.fields, result.grid
    write_csv(out / "sweep.csv", fields + ["seed", "final_val_loss", "best_val_loss", "steps", "wall_s", "spikes",
                                          "run_dir"], result.rows)
    write_csv(out / "summary.csv", fields + ["mean", "std", "n", "diff_mean", "diff_ci_low", "diff_ci_high"],
              result.summary)
    write_csv(out / "best.csv", ["field", "given", "best_value", "mean", "std", "n", "resolved"], result.best)
    _sweep_figures(out, grid, result.summary)
    shared = spec.config(**{k: v[0] for k, v in spec.grid.items()})
    budget = (f"tokens held fixed at {spec.tokens} per run (steps = tokens / (batch_size x seq_len))"
              if spec.tokens is not None else f"steps held fixed at {shared.steps}" if "steps" not in fields
              else "steps from the grid")
    if spec.horizons:
        budget = f"horizons {', '.join(f'{h:,}' for h in grid[HORIZON])} {spec.horizon_unit} (the `{HORIZON}` column)"
    settings = (f"Shared settings: optimizer `{shared.optim}`, lr `{shared.lr or 'the preset default'}`, schedule "
                f"`{shared.schedule}`, {budget}; differences are paired by seed against "
                f"{point_label(result.reference)} (95% Student-t)" + (", within each horizon." if spec.horizons
                                                                      else "."))
    settings += "\n\nWhere in training (the reference point's runs):\n\n" + "\n".join(
        f"- {line}" for line in result.stages)
    text = result.text()
    (out / "report.md").write_text(f"# Sweep\n\nCommand: `{result.record.get('command', 'gradpower sweep')}`\n\n"
                                   f"{settings}\n\n{text}\n\n"
                                   + "".join(f"![{f.name}]({f.name})\n\n" for f in sorted(out.glob("*.png"))))
    return text


def _stages(loaded, spec: SweepSpec, reference: dict[str, Any]) -> list[str]:
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
