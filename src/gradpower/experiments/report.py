"""Tables, figures and ``report.md`` of a compare folder, rebuilt from its runs alone.

The compare kind (:mod:`.compare`) analyses a folder with :func:`analyse_compare` (pure) and writes the result
with :func:`write_compare`, after training and for ``gradpower report DIR``: every number comes from the run
folders listed in ``experiment.json``, read through :func:`load_run`.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..train.config import TrainConfig
from . import plots
from .folder import write_csv
from .ladder import decay_start, shared_seconds
from .lr_tuning import edge_text, lr_edges, tuning_table
from .pairing import cpu_threads
from .runs import Run
from .spec import CompareSpec
from .stage import regular_gap, stage_of
from .stats import (
    CONFIDENCE,
    SEQUENTIAL_RULE,
    mde_80,
    paired_difference,
    sd,
    seeds_needed,
    sequential_confidence,
    sequential_looks,
    speedup,
    t_interval,
    verdict,
)

RUNS_COLUMNS = ["arm", "seed", "lr", "final_val_loss", "best_val_loss", "steps", "tokens", "tokens_per_s", "wall_s",
                "spikes", "run_dir", "val_tokens", "val_loss_se", "horizon", "tokens_per_param", "final_eval_s",
                "epochs"]
RESULTS_COLUMNS = ["arm", "n_seeds", "lr", "val_loss_mean", "val_loss_std", "diff_mean", "diff_ci_low",
                   "diff_ci_high", "steps_to_target", "speedup", "speedup_ci_low", "speedup_ci_high", "tokens_per_s",
                   "wall_s", "diff_sd", "diff_halfwidth", "mde_80", "seeds_needed", "speedup_note",
                   "tokens_per_s_vs_baseline"]
#: Columns of ``horizons.csv``: one row per (arm, horizon) of a ladder, paired with the baseline at that horizon.
HORIZONS_COLUMNS = ["arm", "horizon_steps", "tokens", "tokens_per_param", "epochs", "n_seeds", "diff_mean",
                    "diff_ci_low", "diff_ci_high", "diff_sd", "mde_80", "baseline_val_loss", "horizon", "baseline_drop"]


@dataclass
class ArmRuns:
    """The finished final-phase runs of one arm, by seed."""

    name: str
    runs: dict[int, Run]

    def lr(self) -> float:
        lrs = {run.peak_lr for run in self.runs.values()}
        return lrs.pop() if len(lrs) == 1 else math.nan


def _common_val_steps(arms: list[ArmRuns]) -> np.ndarray:
    sets = [set(run.val_step.tolist()) for arm in arms for run in arm.runs.values()]
    return np.array(sorted(set.intersection(*sets)) if sets else [], dtype=int)


def _val_at(run: Run, steps: np.ndarray) -> np.ndarray:
    index = {int(s): float(v) for s, v in zip(run.val_step, run.val_loss)}
    return np.array([index[int(s)] for s in steps], dtype=float)


def _arms_at(loaded: list[tuple[dict[str, Any], Run | None]], names: list[str], horizon: int | None
             ) -> tuple[dict[str, ArmRuns], list[str]]:
    """The finished final runs of each arm at one horizon, and the listed ones not finished."""
    arms = {name: ArmRuns(name, {}) for name in names}
    missing = []
    for entry, run in loaded:
        if entry["phase"] != "final" or entry.get("horizon") != horizon:
            continue
        if run is None or not run.finished:
            missing.append(f"{entry['arm']} seed {entry['seed']}" + (f" @ {horizon}" if horizon is not None else ""))
        else:
            arms[entry["arm"]].runs[int(entry["seed"])] = run
    return arms, missing


def _throughput_vs(arm: ArmRuns, base: ArmRuns, seeds: list[int]) -> str:
    """``within noise``, ``faster`` or ``slower``: the arm's training tokens/s against the baseline's, by the
    paired 95% interval of the per-seed differences (``one seed`` when there is no interval)."""
    diff = t_interval([arm.runs[s].mean_tokens_per_s - base.runs[s].mean_tokens_per_s for s in seeds])
    if not math.isfinite(diff.low):
        return "one seed"
    return "faster" if diff.low > 0 else "slower" if diff.high < 0 else "within noise"


def _paired_final(arm: ArmRuns, base: ArmRuns) -> list[float]:
    """The arm's per-seed final val loss minus the baseline's, over the seeds both finished."""
    return [arm.runs[s].final_val_loss - base.runs[s].final_val_loss for s in sorted(set(arm.runs) & set(base.runs))]


@dataclass
class LadderResult:
    """A ladder's analysis: one row and verdict per (arm, horizon), the baseline's loss against tokens, and the
    minutes the wsd branches saved."""

    rows: list[dict[str, Any]]
    verdicts: list[str]
    missing: list[str]
    series: dict[str, dict[str, list[float]]]
    baseline_curve: tuple[list[float], list[float]]
    saved_s: float
    title: str
    unit: str = "steps"

    @property
    def table(self) -> str:
        return horizons_table(self.rows, self.unit)


@dataclass
class CompareResult:
    """What a compare folder's runs say (:func:`analyse_compare`): each file's rows, the verdicts and the curves
    of the figures, with the spec and record they come from."""

    spec: CompareSpec
    record: dict[str, Any]
    baseline: str
    names: list[str]
    runs_rows: list[dict[str, Any]]
    results_rows: list[dict[str, Any]]
    verdicts: list[str]
    confidence: float
    missing: list[str]
    arms: dict[str, ArmRuns]
    steps: np.ndarray
    diff_curves: dict[str, dict[str, np.ndarray]]
    ladder: LadderResult | None
    tuning: dict[str, list[str]]
    threads: str

    @property
    def table(self) -> str:
        """The results table (the difference's interval at the verdicts' level)."""
        return results_table(self.results_rows, f"{self.confidence * 100:.4g}%")

    def text(self) -> str:
        """What the command prints: the table, its note, the verdicts, the ladder's, warnings, what is missing."""
        text = self.table + "\n" + textwrap.fill(TABLE_NOTE, 118) + "\n" + "\n".join(self.verdicts)
        if self.ladder is not None:
            text += "\n\n" + self.ladder.table + "\n" + "\n".join(self.ladder.verdicts)
        if self.tuning["warnings"]:
            text += "\n" + "\n".join(self.tuning["warnings"])
        if self.missing:
            text += f"\nnot finished (left out): {', '.join(self.missing)}"
        return text


def analyse_compare(record: dict[str, Any], loaded: list[tuple[dict[str, Any], Run | None]],
                    baseline: str | None = None) -> CompareResult:
    """A compare folder's record and listed runs (:func:`.folder.load_listed_runs`) analysed: every table's rows,
    the verdicts and the figures' curves, paired against ``baseline`` (default: the first arm). Pure: it reads
    and writes no file.

    Args:
        record: the folder's ``experiment.json`` content.
        loaded: each listed run's entry and :class:`~gradpower.experiments.Run` (None where missing).
        baseline: the arm the others are paired against.

    Returns:
        A :class:`CompareResult`.
    """
    spec = CompareSpec.from_dict(record["spec"])
    names = [arm.name for arm in spec.arms]
    baseline = baseline or names[0]
    if baseline not in names:
        raise BadInput(f"--baseline {baseline!r} is not an arm of this comparison; arms: {', '.join(names)}")
    names = [baseline] + [n for n in names if n != baseline]

    runs_rows = []
    for entry, run in loaded:
        if entry["phase"] != "final" or run is None:
            continue
        runs_rows.append({
            "arm": entry["arm"], "seed": entry["seed"], "lr": run.peak_lr, "final_val_loss": run.final_val_loss,
            "best_val_loss": run.best_val_loss, "steps": run.steps, "tokens": run.tokens,
            "tokens_per_s": run.mean_tokens_per_s, "wall_s": run.wall_s, "spikes": run.spikes,
            "run_dir": str(run.path), "val_tokens": run.val_tokens, "val_loss_se": run.val_loss_se,
            "horizon": entry.get("horizon"), "tokens_per_param": run.tokens_per_param, "epochs": run.epochs,
            "final_eval_s": run.final_eval_s,
        })

    arms, missing = _arms_at(loaded, names, spec.headline)
    base = arms[baseline]
    stage = stage_of(list(base.runs.values()))
    # --seeds auto: the intervals of the sequential rule (each look's level), else the plain 95% interval
    confidence = sequential_confidence(sequential_looks(spec.max_seeds)) if spec.max_seeds else CONFIDENCE
    steps = _common_val_steps([a for a in arms.values() if a.runs])
    results_rows, verdicts, diff_curves = [], [], {}
    for name in names:
        arm = arms[name]
        finals = [run.final_val_loss for run in arm.runs.values()]
        paired_seeds = sorted(set(arm.runs) & set(base.runs))
        row: dict[str, Any] = {
            "arm": name, "n_seeds": len(arm.runs), "lr": arm.lr(),
            "val_loss_mean": float(np.mean(finals)) if finals else math.nan,
            "val_loss_std": float(np.std(finals, ddof=1)) if len(finals) > 1 else math.nan,
            "tokens_per_s": float(np.mean([r.mean_tokens_per_s for r in arm.runs.values()])) if arm.runs else math.nan,
            "wall_s": float(np.mean([r.wall_s for r in arm.runs.values()])) if arm.runs else math.nan,
        }
        if name != baseline and paired_seeds:
            row.update(tokens_per_s_vs_baseline=_throughput_vs(arm, base, paired_seeds))
        if paired_seeds and not steps.size:
            row.update(speedup_note="no evaluation step common to every run: no target to reach")
        if paired_seeds and steps.size:
            arm_curves = [_val_at(arm.runs[s], steps) for s in paired_seeds]
            base_curves = [_val_at(base.runs[s], steps) for s in paired_seeds]
            sp = speedup(steps, arm_curves, base_curves)
            row.update(steps_to_target=sp.steps_to_target, speedup=sp.speedup)
            if not math.isfinite(sp.speedup):
                row.update(speedup_note="not reached: the arm never got to the baseline's final loss")
            elif name != baseline and not math.isfinite(sp.interval.low):
                row.update(speedup_note="no interval: a seed never reached its baseline's final loss"
                           if len(paired_seeds) > 1 else "no interval: one seed")
            if name != baseline:
                row.update(speedup_ci_low=sp.interval.low, speedup_ci_high=sp.interval.high)
                per_seed = _paired_final(arm, base)
                diff = t_interval(per_seed, confidence)
                diff_sd = sd(per_seed)
                row.update(diff_mean=diff.mean, diff_ci_low=diff.low, diff_ci_high=diff.high, diff_sd=diff_sd,
                           diff_halfwidth=(diff.high - diff.low) / 2, mde_80=mde_80(diff_sd, diff.n),
                           seeds_needed=seeds_needed(diff_sd, spec.effect))
                verdicts.append(verdict(name, baseline, diff, diff_sd=diff_sd, effect=spec.effect,
                                        confidence=confidence))
                per_step = [paired_difference(list(np.array(arm_curves)[:, k]), list(np.array(base_curves)[:, k]))
                            for k in range(steps.size)]
                diff_curves[name] = {key: np.array([getattr(i, attr) for i in per_step])
                                     for key, attr in (("mean", "mean"), ("low", "low"), ("high", "high"))}
                diff_curves[name]["per_seed"] = np.array(arm_curves) - np.array(base_curves)
        results_rows.append(row)
    if stage is not None and verdicts:
        where = f"at {spec.horizon_text(spec.headline)}, " if spec.horizons else ""
        verdicts = [f"{v}\n   {where}{stage.text()}" for v in verdicts]
    ladder = _analyse_ladder(spec, loaded, names, baseline, confidence) if spec.horizons else None
    if ladder is not None:
        missing = ladder.missing
    threads = threads_line([run for _, run in loaded if run is not None])
    return CompareResult(spec, record, baseline, names, runs_rows, results_rows, verdicts, confidence, missing, arms,
                         steps, diff_curves, ladder, _tuning_section(loaded, spec), threads)


def write_compare(out: Path, result: CompareResult) -> str:
    """A :class:`CompareResult` as files in ``out``: runs.csv, results.csv, the figures, horizons.csv and
    horizons.png for a ladder, and report.md; returns :meth:`CompareResult.text`."""
    write_csv(out / "runs.csv", RUNS_COLUMNS, result.runs_rows)
    write_csv(out / "results.csv", RESULTS_COLUMNS, result.results_rows)
    figures = _compare_figures(out, result)
    if result.ladder is not None:
        write_csv(out / "horizons.csv", HORIZONS_COLUMNS, result.ladder.rows)
        ladder = result.ladder
        figure = plots.horizon_differences(
            out / "horizons.png", {k: {a: np.array(b, dtype=float) for a, b in v.items()} for k, v in
                                   ladder.series.items()},
            result.baseline, tuple(np.array(c) for c in ladder.baseline_curve), ladder.title)
        figures.insert(0, figure.name)
    _write_compare_markdown(out, result, figures)
    return result.text()


def _analyse_ladder(spec: CompareSpec, loaded, names: list[str], baseline: str, confidence: float) -> LadderResult:
    """The per-horizon rows and verdicts, the baseline's loss per horizon, and the branches' savings."""
    rows, verdicts, missing, series = [], [], [], {}
    base_tokens, base_loss = [], []
    for horizon in sorted(spec.horizons or []):
        arms, left_out = _arms_at(loaded, names, horizon)
        missing += left_out
        base = arms[baseline]
        stage = stage_of(list(base.runs.values()))
        if stage is None:
            continue
        base_val = float(np.mean([r.final_val_loss for r in base.runs.values()]))
        base_tokens.append(stage.tokens)
        base_loss.append(base_val)
        for name in names[1:]:
            arm = arms[name]
            per_seed = _paired_final(arm, base)
            diff = t_interval(per_seed, confidence)
            diff_sd = sd(per_seed)
            arm_runs = list(arm.runs.values())
            row = {"arm": name, "horizon": horizon,
                   "horizon_steps": arm_runs[0].steps if arm_runs else base.runs[min(base.runs)].steps,
                   "tokens": arm_runs[0].tokens if arm_runs else stage.tokens,
                   "tokens_per_param": arm_runs[0].tokens_per_param if arm_runs else stage.tokens_per_param,
                   "epochs": arm_runs[0].epochs if arm_runs else stage.epochs,
                   "n_seeds": diff.n, "diff_mean": diff.mean, "diff_ci_low": diff.low, "diff_ci_high": diff.high,
                   "diff_sd": diff_sd, "mde_80": mde_80(diff_sd, diff.n), "baseline_val_loss": base_val,
                   "baseline_drop": stage.drop}
            rows.append(row)
            line = verdict(name, baseline, diff, diff_sd=diff_sd, effect=spec.effect, confidence=confidence)
            passes = f", {stage.epochs:.2g} epochs" if math.isfinite(stage.epochs) else ""
            verdicts.append(f"at {spec.horizon_text(horizon)} ({stage.tokens_per_param:.3g} tokens per parameter"
                            f"{passes}; "
                            f"baseline val loss fell {stage.drop:.3f} nats over its last doubling): {line}")
            entry = series.setdefault(name, {"tokens": [], "mean": [], "low": [], "high": []})
            for key, value in (("tokens", row["tokens"]), ("mean", diff.mean), ("low", diff.low),
                               ("high", diff.high)):
                entry[key].append(value)
    shared = spec.config()
    seeds = max((r["n_seeds"] for r in rows), default=0)
    title = (f"{shared.preset} | {shared.schedule} | batch {shared.batch_size} | n = {seeds} seeds | warm-up "
             f"{spec.horizon_runs(spec.arms[0].overrides)[0][1]['warmup']} steps at every horizon")
    return LadderResult(rows, verdicts, missing, series, (base_tokens, base_loss),
                        _branch_savings(loaded, names, spec), title, spec.horizon_unit)


def _branch_savings(loaded, names: list[str], spec: CompareSpec) -> float:
    """Seconds the ladder did not spend: each shorter wsd run that branched from its headline run (same arm and
    seed) inherited that run's stable phase, the wall time recorded at its decay start in both."""
    trunks, _ = _arms_at(loaded, names, spec.headline)
    saved = 0.0
    for horizon in sorted(spec.horizons or [])[:-1]:
        arms, _ = _arms_at(loaded, names, horizon)
        for name, arm in arms.items():
            for seed, run in arm.runs.items():
                trunk = trunks[name].runs.get(seed)
                if trunk is None or run.config.get("schedule") != "wsd":
                    continue
                step = decay_start(TrainConfig.from_dict(run.config))
                inherited = shared_seconds(run.records, step)
                if inherited and inherited == shared_seconds(trunk.records, step):
                    saved += inherited
    return saved


def horizons_table(rows: list[dict[str, Any]], unit: str) -> str:
    """The per-horizon table of horizons.csv."""
    header = [f"horizon ({unit})", "steps", "tokens/param", "epochs", "arm", "diff vs baseline [95% CI]", "seeds",
              "mde_80", "baseline final val loss", "baseline drop over last doubling"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        diff = f"{r['diff_mean']:+.4f}" if math.isfinite(r["diff_mean"]) else ""
        if diff and math.isfinite(r["diff_ci_low"]):
            diff += f" [{r['diff_ci_low']:+.4f}, {r['diff_ci_high']:+.4f}]"
        lines.append(f"| {r['horizon']:,} | {r['horizon_steps']} | {r['tokens_per_param']:.3g} | "
                     f"{_fmt(r['epochs'], '.2g')} | {r['arm']} | {diff} | "
                     f"{r['n_seeds']} | {_fmt(r['mde_80'], '.3f')} | {r['baseline_val_loss']:.4f} | "
                     f"{_fmt(r['baseline_drop'], '.3f')} |")
    return "\n".join(lines)


def _compare_figures(out: Path, result: CompareResult) -> list[str]:
    """loss.png, difference.png (with a second arm) and lr.png; their names."""
    arms, names, steps, spec = result.arms, result.names, result.steps, result.spec
    curves, schedules = {}, {}
    for name in names:
        runs = list(arms[name].runs.values())
        if not runs:
            continue
        common = min(len(r.step) for r in runs)
        window = max(1, int(runs[0].planned_steps) // 50)
        curves[name] = {
            "val_step": steps, "val": np.array([_val_at(r, steps) for r in runs]) if steps.size else np.empty((0, 0)),
            "step": runs[0].step[:common],
            "train": np.array([plots.smooth(r.loss[:common], window) for r in runs]),
            "final": np.array([r.final_val_loss for r in runs]), "final_step": int(runs[0].steps),
            "p_track": [r.p_trajectory for r in runs if r.p_trajectory is not None],
        }
        schedules[name] = (runs[0].step, runs[0].lr)
    if not curves:
        return []
    shared = spec.config()
    steps_run = next(iter(curves.values()))["step"][-1] if curves else shared.steps
    runs = [run for name in names for run in arms[name].runs.values()]
    scored = sorted({run.val_tokens for run in runs if run.val_tokens})
    final = f"final: {scored[0]:,} tokens scored" if len(scored) == 1 else "final: none" if not scored else \
        f"final: {scored[0]:,}-{scored[-1]:,} tokens scored"
    title = (f"{shared.preset} | {shared.schedule} | batch {shared.batch_size} | {steps_run} steps | regular "
             f"evaluation: {shared.eval_batches} batch(es), {final}")
    gap = regular_gap(runs)
    note = (f"regular: {shared.eval_batches} batch(es) spread over the final set; it ended {gap:+.3f} nats from "
            "the final one (seed mean)" if math.isfinite(gap) else "")
    files = [plots.loss_curves(out / "loss.png", curves, title, note), plots.lr_schedules(out / "lr.png", schedules)]
    if result.diff_curves:
        files.insert(1, plots.difference_curves(out / "difference.png", steps, result.diff_curves, result.baseline))
    return [f.name for f in files]


def _tuning_section(loaded, spec: CompareSpec) -> dict[str, Any]:
    if not spec.tune_lr:
        return {"lines": [], "warnings": []}
    means, best = tuning_table(loaded)
    grid = sorted(spec.tune_lr)
    lines = ["| arm | " + " | ".join(f"lr {lr:g}" for lr in grid) + " | chosen |",
             "|---" * (len(grid) + 2) + "|"]
    for arm, row in means.items():
        cells = [("diverged or failed" if row.get(lr) == math.inf else f"{row[lr]:.4f}") if lr in row else ""
                 for lr in grid]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {f'{best[arm]:g}' if arm in best else 'none'} |")
    return {"lines": lines, "warnings": [edge_text(arm, lr, grid) for arm, lr in lr_edges(best, grid).items()]}


def threads_line(runs: list[Run]) -> str:
    """``torch threads per run: 2 (every CPU run)``, from each run's ``env.json`` ("" when none recorded one): the
    count is part of a CPU run's numbers, so reading the folder refused mixed counts (:mod:`.pairing`)."""
    counts = {count for count in map(cpu_threads, runs) if count is not None}
    return f"torch threads per run: {counts.pop()} (every CPU run)" if len(counts) == 1 else ""


def _fmt(value: Any, spec: str = ".4f") -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else format(value, spec)
    return "" if value is None else str(value)


def results_table(rows: list[dict[str, Any]], diff_level: str = "95%") -> str:
    """The terminal / markdown table of results.csv (the difference's interval at ``diff_level``)."""
    header = ["arm", "seeds", "lr", "val loss (mean ± sd over seeds)", f"diff vs baseline [{diff_level} CI]",
              "speed-up [95% CI]", "training tokens/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        val = f"{_fmt(r.get('val_loss_mean'))} ± {_fmt(r.get('val_loss_std'))}".strip(" ±")
        diff = ""
        if isinstance(r.get("diff_mean"), float) and math.isfinite(r["diff_mean"]):
            diff = f"{r['diff_mean']:+.4f}"
            if math.isfinite(r.get("diff_ci_low", math.nan)):
                diff += f" [{r['diff_ci_low']:+.4f}, {r['diff_ci_high']:+.4f}]"
        sp = _fmt(r.get("speedup"), ".3f")
        if sp and math.isfinite(r.get("speedup_ci_low", math.nan)):
            sp += f" [{r['speedup_ci_low']:.3f}, {r['speedup_ci_high']:.3f}]"
        if r.get("speedup_note"):
            sp = f"{sp} ({r['speedup_note']})".strip()
        speed = _fmt(r.get("tokens_per_s"), ",.0f")
        if speed and r.get("tokens_per_s_vs_baseline") == "within noise":
            speed += " ~"
        cells = [r["arm"], str(r["n_seeds"]), _fmt(r.get("lr"), "g"), val, diff, sp, speed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: What the numbers of the results table are, printed under it (console and report.md).
TABLE_NOTE = (
    "val loss: the final evaluation (a fixed held-out set, the same for every run); ± is the standard deviation "
    "over seeds here, and the standard error over the held-out tokens in each run's own `done:` line. "
    "training tokens/s: a throughput measurement of this machine while it ran (evaluation excluded), not a "
    "result of the method; ~ marks an arm whose throughput is within run-to-run noise of the baseline's (the "
    "paired 95% interval of the per-seed difference holds 0).")


def _write_compare_markdown(out: Path, result: CompareResult, figures: list[str]) -> None:
    spec, record, baseline, ladder, tuning = result.spec, result.record, result.baseline, result.ladder, result.tuning
    verdicts, missing, threads, runs_rows = result.verdicts, result.missing, result.threads, result.runs_rows
    shared = spec.config()
    by_arms = {k for arm in spec.arms for k in arm.overrides}
    settings = {k: v for k, v in shared.defining().items() if k != "seed" and k not in by_arms}
    lines = [
        "# Comparison", "",
        f"Command: `{record.get('command', 'gradpower compare')}`", "",
        f"Arms ({len(spec.arms)}), each over {spec.seeds} seed(s); baseline **{baseline}**. Within a seed every arm "
        "starts from the same initial weights and sees the same batches in the same order.", "",
    ]
    lines += [f"- **{arm.name}**: " + (", ".join(f"`{k}={v}`" for k, v in arm.overrides.items()) or "shared settings")
              for arm in spec.arms]
    lines += ["", "Shared settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()
                                                   if v is not None and k not in {"seed"}), ""]
    if spec.horizons:
        lines += [f"Horizons: {', '.join(f'{h:,}' for h in sorted(spec.horizons))} {spec.horizon_unit}; the "
                  f"table below is at the longest, {spec.horizon_text(spec.headline)}.", ""]
    lines += ["## Results", "", result.table, "", TABLE_NOTE, ""]
    lines += [threads, ""] if threads else []
    if spec.max_seeds:
        sequential = record.get("sequential", {})
        lines += [f"Seeds by `--seeds auto` (looks at {sequential.get('looks')} seeds, at most {spec.max_seeds}; "
                  f"stopped at {sequential.get('stopped_at')}: {sequential.get('decisions')}). Rule: "
                  f"{SEQUENTIAL_RULE}.", ""]
        level = f"{sequential_confidence(sequential_looks(spec.max_seeds)) * 100:.4g}%"
        lines += [f"Verdicts (paired by seed, {level} Student-t interval with n-1 degrees of freedom, the "
                  "sequential rule's level):", ""]
    else:
        lines += ["Verdicts (paired by seed, 95% Student-t interval with n-1 degrees of freedom):", ""]
    lines += [f"- {v}" for v in verdicts] or [
        "- (one arm: nothing to compare)" if len(spec.arms) < 2 else "- (no paired runs finished: no verdict)"]
    if ladder is not None:
        first = spec.horizon_runs(spec.arms[0].overrides)[0][1]
        lines += ["", "## Training length", "",
                  f"Every arm and seed trained to each horizon, paired by seed within each; one warm-up of "
                  f"{first['warmup']} steps and one evaluation every {first['eval_every']} steps at every horizon.",
                  ""]
        if spec.config().schedule == "wsd":
            lines += [f"wsd: each shorter run branched from the longest run of its arm and seed at its own decay "
                      f"start (the same run up to there), which saved {ladder.saved_s / 60:.1f} minutes of "
                      "training.", ""]
        lines += [ladder.table, "", *[f"- {v}" for v in ladder.verdicts], ""]
    lines += ["", "`speed-up`: baseline steps / arm steps to reach the baseline's final seed-mean val loss "
              "(linear interpolation between evaluations); interval from the per-seed ratios.", ""]
    if tuning["lines"]:
        lines += ["## Learning rate, tuned per arm", "",
                  f"Each arm ran its own grid ({'every seed' if spec.tune_seeds else 'seed 0'}); the table is the mean "
                  "final val loss; the lowest was chosen and then run on every seed.", "", *tuning["lines"], ""]
        lines += [f"- {w}" for w in tuning["warnings"]]
        lines += [""]
    spikes = {r["arm"]: 0 for r in runs_rows}
    for r in runs_rows:
        spikes[r["arm"]] += int(r["spikes"])
    lines += ["Loss spikes (train loss above the median of the previous 25 steps by more than 6 robust sigmas and "
              "0.1 nats), summed over seeds: " + ", ".join(f"{a} {n}" for a, n in spikes.items()), ""]
    if missing:
        lines += [f"Not finished, left out of the table: {', '.join(missing)}", ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    (out / "report.md").write_text("\n".join(lines))


