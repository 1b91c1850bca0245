"""``gradpower compare``: arms over seeds, paired, with lr tuned per arm if asked.

Plan: (optional) each arm runs its own lr grid on seed 0 (or every seed with
``tune_seeds``) and keeps its best final val loss; then every arm runs every
seed at its lr. Seeds are the outer loop, so an interrupted compare already
holds complete pairs. With ``--seeds auto`` the seeds come in rounds fixed in
advance (:func:`.stats.sequential_looks`), and after each the sequential rule
(:data:`.stats.SEQUENTIAL_RULE`) decides whether to stop. Runs are reused or resumed by :mod:`.execute`; the
tables, figures and report come from the compare kind's ``analyse`` and ``write`` (:mod:`.report`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..train.config import TrainConfig
from .execute import (
    Outcome,
    PlannedRun,
    RunsFailedError,
    check_configs,
    execute,
    failures,
    format_duration,
    place,
)
from .folder import load_listed_runs, write_csv
from .kinds import read_experiment, record_of, register, write_experiment
from .launcher import LauncherConfig
from .lr_tuning import choose_lrs
from .report import CompareResult, analyse_compare, write_compare
from .runs import Run
from .spec import Arm, CompareSpec, with_run_defaults
from .stats import mde_80, sd, seeds_needed, seeds_range_text, sequential_decision, sequential_looks


def finished_final_runs(out: Path, record: dict[str, Any], horizon: int | None | str = "headline"
                        ) -> dict[tuple[str, int], Run]:
    """The finished final (not lr-tuning) runs a compare folder lists so far at one horizon of its ladder
    (default: the headline, the longest; a folder without a ladder has one), by (arm, seed)."""
    if horizon == "headline":
        horizon = CompareSpec.from_dict(record["spec"]).headline
    return {(entry["arm"], int(entry["seed"])): run for entry, run in load_listed_runs(out, record)
            if entry["phase"] == "final" and entry.get("horizon") == horizon and run is not None and run.finished}


def _final_results(out: Path, record: dict[str, Any], baseline: str) -> tuple[dict[str, list[float]], list[float]]:
    """From the finished final runs listed so far: each other arm's per-seed paired differences to the
    baseline (full precision, not the rounded CSV), and every run's wall time."""
    runs = finished_final_runs(out, record)
    finals = {key: run.final_val_loss for key, run in runs.items()}
    walls = [run.wall_s for run in runs.values()]
    arms = [a for a in dict.fromkeys(e["arm"] for e in record["runs"] if e["phase"] == "final") if a != baseline]
    seeds = sorted({s for _, s in finals})
    diffs = {arm: [finals[(arm, s)] - finals[(baseline, s)] for s in seeds
                   if (arm, s) in finals and (baseline, s) in finals] for arm in arms}
    return diffs, walls


def _sequential_decisions(out: Path, record: dict[str, Any], baseline: str, looks: tuple[int, ...],
                          effect: float) -> dict[str, str]:
    """Each arm's decision under the sequential rule from the finished final runs listed so far."""
    diffs, _ = _final_results(out, record, baseline)
    return {arm: sequential_decision(values, looks, effect)[0] for arm, values in diffs.items()}


def _planned(spec: CompareSpec, runs_root: Path, arm: Arm, seed: int, horizon: int | None, lr: float | None,
             phase: str) -> PlannedRun:
    label = arm.name + (f" @ {spec.horizon_text(horizon)}" if horizon is not None else "")
    return PlannedRun(label, seed, place(spec.arm_config(arm, seed, horizon, lr), runs_root), arm=arm.name,
                      horizon=horizon, phase=phase)


def tuning_runs(spec: CompareSpec, runs_root: Path) -> list[PlannedRun]:
    """The lr-tuning runs: each arm at each lr of its grid on the first seed (every seed with ``tune_seeds``), at
    the headline horizon (the longest, the one the verdict speaks of)."""
    seeds = spec.seed_list if spec.tune_seeds else spec.seed_list[:1]
    return [_planned(spec, runs_root, arm, seed, spec.headline, lr, "tune")
            for arm in spec.arms for lr in spec.tune_lr or [] for seed in seeds]


def final_runs(spec: CompareSpec, runs_root: Path, lrs: dict[str, float] | None = None) -> list[PlannedRun]:
    """The runs the tables pair: every seed (the outer loop, so an interrupted compare holds whole pairs), arm and
    horizon, at each arm's chosen lr (``lrs``; its own without one)."""
    lrs = lrs or {}
    return [_planned(spec, runs_root, arm, seed, horizon, lrs.get(arm.name), "final")
            for seed in spec.seed_list for arm in spec.arms for horizon, _ in spec.horizon_runs(arm.overrides)]


class CompareExperiment:
    """``compare`` as a kind of experiment (:mod:`.kinds`): arms over seeds, paired by seed against a baseline.
    Its command also tunes lr per arm and adds seeds by the sequential rule (:func:`run_compare`)."""

    kind = "compare"
    spec_type = CompareSpec

    def plan(self, spec: CompareSpec, runs_root: Path) -> list[PlannedRun]:
        return tuning_runs(spec, runs_root) + final_runs(spec, runs_root)

    def planned_config(self, spec: CompareSpec, entry: dict[str, Any]) -> TrainConfig | None:
        arm = {arm.name: arm for arm in spec.arms}.get(entry.get("arm"))
        if arm is None:
            return None
        return spec.arm_config(arm, int(entry["seed"]), entry.get("horizon"),
                               entry.get("lr") if spec.tune_lr else None)

    def analyse(self, folder: Path, baseline: str | None = None) -> CompareResult:
        record = read_experiment(folder)
        loaded = load_listed_runs(folder, record)
        try:
            return analyse_compare(record, loaded, baseline)
        except BadInput as exc:
            raise BadInput(f"{folder}: {exc}") from None

    def write(self, folder: Path, result: CompareResult) -> str:
        return write_compare(folder, result)


COMPARE = register(CompareExperiment())


def run_compare(spec: CompareSpec, out: Path, jobs: int = 1, baseline: str | None = None,
                command: str = "gradpower compare", echo: Callable[[str], None] = print,
                runs_root: Path | None = None, launcher: LauncherConfig | None = None) -> str:
    """Train (or reuse) every run of the comparison, then write its tables, figures and report.

    Runs live in ``runs_root`` (default ``OUT/runs``), trained here or as ``launcher``'s jobs; comparisons that
    share one (``gradpower claims``) train a configuration they have in common once, since a run's folder is
    named after its defining fields.

    Raises :class:`RunsFailedError` (after the report of the other runs is written) when a run failed.

    Args:
        spec: the arms, seeds, ladder and lr grid.
        out: the experiment's folder (tables, figures, report.md, experiment.json).
        jobs: runs trained at once by the local launcher.
        baseline: the arm the others are paired against (default: the first).
        command: the command line, recorded in report.md.
        echo: where progress lines go.
        runs_root: where the runs' folders are (default: ``out/runs``).
        launcher: where the runs execute (default: this machine).

    Returns:
        The results table and verdicts as text.
    """
    if len(spec.arms) < 1:
        raise BadInput("compare needs at least one arm (--arm 'optim=adamw' --arm 'optim=adampower p=1.2')")
    names = [arm.name for arm in spec.arms]
    if baseline is not None and baseline not in names:
        raise BadInput(f"--baseline {baseline!r} is not an arm; arms: {', '.join(names)}")
    spec = with_run_defaults(spec)
    same = spec.same_runs()
    if same:
        raise BadInput("; ".join(f"arms {a!r} and {b!r} are the same runs" for a, b in same)
                       + ": every field they set resolves to the same value (a preset's default included), so "
                       "their difference is 0 by construction; make the arms differ")
    # every arm's configuration and data are valid before the folder is written or the first run trains
    check_configs(spec.config(spec.first_seed, **arm.overrides, **settings,
                              **({"lr": spec.tune_lr[0]} if spec.tune_lr else {}))
                  for arm in spec.arms for _, settings in spec.horizon_runs(arm.overrides))
    out.mkdir(parents=True, exist_ok=True)
    runs_root = runs_root or out / "runs"
    record = record_of(COMPARE, spec, [], out, command)
    chosen: dict[str, float] = {}
    failed: list[Outcome] = []
    if spec.tune_lr:
        tuning = tuning_runs(spec, runs_root)
        tune_seeds = sorted({run.seed for run in tuning})
        record["runs"] = [run.entry(out) for run in tuning]
        write_experiment(out, record)
        echo(f"== tuning lr: {len(spec.arms)} arm(s) x {len(spec.tune_lr)} lr(s) x {len(tune_seeds)} seed(s)")
        tune_outcomes = execute(tuning, jobs, echo, launcher)
        failed = failures(tune_outcomes)
        chosen = choose_lrs(out, record)
        unchosen = [arm.name for arm in spec.arms if arm.name not in chosen]
        if unchosen:  # before any seed runs: an lr whose runs diverged or failed is never chosen
            def why(name: str) -> str:
                runs = [o for o in tune_outcomes if o.run.arm == name]
                return ", ".join(f"lr {o.run.cfg.lr:g} {o.status}" + (f" ({o.message.splitlines()[0][:80]})"
                                                                      if o.status == "failed" and o.message else "")
                                 for o in runs)
            raise BadInput("; ".join(f"arm {name!r} has no lr to run: every tuning run diverged or failed "
                                       f"({why(name)})" for name in unchosen)
                             + f"; widen the grid toward smaller lrs (--tune-lr) or see the runs under {runs_root}")
        echo("chosen lr: " + ", ".join(f"{name} {lr:g}" for name, lr in chosen.items()))
    tuning_entries = list(record["runs"])
    looks = sequential_looks(spec.max_seeds) if spec.max_seeds else (spec.seeds,)
    for look, seeds in enumerate(looks, 1):
        spec = dataclasses.replace(spec, seeds=seeds)
        final = final_runs(spec, runs_root, chosen)
        record["runs"] = tuning_entries + [run.entry(out) for run in final]
        record["spec"] = spec.to_dict()
        ladder = (f" x {len(spec.horizons)} horizon(s) ({', '.join(map(str, sorted(spec.horizons)))} "
                  f"{spec.horizon_unit})" if spec.horizons else "")
        if spec.max_seeds:
            echo(f"== compare, look {look}/{len(looks)} of --seeds auto: {len(spec.arms)} arm(s) x {seeds} seed(s)"
                 f"{ladder} -> {out}")
        else:
            echo(f"== compare: {len(spec.arms)} arm(s) x {spec.seeds} seed(s){ladder} -> {out}")
        write_experiment(out, record)
        failed += failures(execute(final, jobs, echo, launcher))
        if spec.max_seeds:
            decisions = _sequential_decisions(out, record, baseline or spec.arms[0].name, looks, spec.effect)
            record["sequential"] = {"looks": list(looks), "stopped_at": seeds, "decisions": decisions}
            write_experiment(out, record)
            echo("   " + "; ".join(f"{arm}: {d}" for arm, d in decisions.items()))
            if all(d != "continue" for d in decisions.values()):
                break
    text = COMPARE.write(out, COMPARE.analyse(out, baseline))
    if failed:
        raise RunsFailedError(failed, text)
    return text


#: Columns of ``plan.csv`` (one row per arm compared with the baseline).
PLAN_COLUMNS = ["arm", "n_seeds", "diff_sd", "mde_80", "seeds_needed", "est_wall_s"]


def plan_compare(spec: CompareSpec, out: Path, jobs: int = 1, baseline: str | None = None,
                 pilot_seeds: int = 3, command: str = "gradpower compare --plan",
                 echo: Callable[[str], None] = print, launcher: LauncherConfig | None = None) -> str:
    """``compare --plan``: a pilot of ``pilot_seeds`` seeds (runs already in ``out`` are reused), then for each
    arm the spread of its paired differences, what the pilot can detect, the seeds that resolve
    ``spec.effect``, and the wall time of a comparison with that many seeds, from the pilot's time per run.

    Writes ``plan.csv``; trains nothing beyond the pilot. A later ``compare --seeds N --out OUT`` reuses
    the pilot's runs.
    """
    if pilot_seeds < 2:
        raise BadInput(f"--pilot-seeds must be at least 2 (the spread needs two paired seeds), got {pilot_seeds}")
    if spec.max_seeds:
        raise BadInput("--plan sizes a fixed number of seeds: drop --seeds auto")
    run_compare(dataclasses.replace(spec, seeds=pilot_seeds), out, jobs, baseline, command, echo, launcher=launcher)
    baseline = baseline or spec.arms[0].name
    diffs, walls = _final_results(out, read_experiment(out), baseline)
    per_run = sum(walls) / len(walls) if walls else math.nan
    rows, lines = [], []
    for name, values in diffs.items():
        diff_sd = sd(values)
        if not math.isfinite(diff_sd):
            continue
        needed = seeds_needed(diff_sd, spec.effect)
        est = needed * len(spec.arms) * per_run / max(1, jobs) if needed is not None else math.nan
        rows.append({"arm": name, "n_seeds": len(values), "diff_sd": diff_sd, "mde_80": mde_80(diff_sd, len(values)),
                     "seeds_needed": needed, "est_wall_s": est})
        spread = seeds_range_text(diff_sd, len(values), spec.effect)
        resolve = (f"about {needed} seeds resolve {spec.effect:g} ({spread}): about {format_duration(est)} "
                   f"({needed * len(spec.arms)} runs of {per_run:.0f} s, {max(1, jobs)} at a time)"
                   if needed is not None else f"no practical number of seeds resolves {spec.effect:g}")
        lines.append(f"{name} vs {baseline}: diff_sd {diff_sd:.4f}, mde_80 {rows[-1]['mde_80']:.4f} with "
                     f"{len(values)} seeds; {resolve}")
    write_csv(out / "plan.csv", PLAN_COLUMNS, rows)
    return "\n".join(lines) or "one arm: nothing to plan"
