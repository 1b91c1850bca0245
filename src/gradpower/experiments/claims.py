"""``gradpower claims``: the papers' claims as pre-declared, seeded comparisons with a verdict each.

Every claim in ``claims.toml`` (shipped beside this module) is a
:func:`~gradpower.experiments.compare.run_compare` in its own folder (``OUT/C1`` ...; resumable, finished runs
reused, ``gradpower report OUT/C1`` rebuilds it) plus a
*contrast*: per seed, the sum of weight x metric over the claim's terms (e.g. AdamPower - AdamW, or the
interaction of two changes). Its 95% Student-t interval over seeds decides the verdict (see the file's header).
``full`` starts from the quick design's seeds and adds seeds up to ``seeds_needed`` for its effect, capped so
every claim's share of the time budget holds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..invocation import program
from ..train.config import TrainConfig
from . import plots
from .compare import finished_final_runs, run_compare
from .execute import Outcome, RunsFailedError
from .folder import load_listed_runs, write_csv
from .job import PlannedRun
from .kinds import SavedSpec, read_experiment, register, write_experiment
from .launcher import LauncherConfig
from .lr_tuning import tuned_lr_edges
from .runs import Run
from .spec import Arm, CompareSpec, with_run_defaults
from .stage import stage_of
from .stats import Interval, mde_80, sd, seeds_needed, t_interval

CLAIMS_FILE = Path(__file__).with_name("claims.toml")
BUDGETS = ("quick", "full", "micro", "paper", "sizes")
DIRECTIONS = ("lower", "higher", "additive")
#: Seconds a run costs beyond its training loop's wall time (process start, data, final evaluation, report),
#: measured on 2 cores; the time cap of a ``full`` claim adds it to every run.
RUN_OVERHEAD_S = 3.0
#: The verdict of a contrast whose terms' runs cancel (:func:`same_runs_cancel`).
DEGENERATE = "degenerate: the arms are the same runs, so the contrast is 0 by construction (no verdict)"
CLAIM_COLUMNS = ["claim", "source", "statement", "setting", "metric", "arm", "baseline", "diff_mean", "ci_low",
                 "ci_high", "n_seeds", "verdict", "mde_80", "horizon_steps", "tokens_per_param", "epochs", "tokens",
                 "baseline_drop", "lr_at_edge"]


@dataclass
class Term:
    arm: str
    weight: float
    metric: str = "final_val_loss"
    part: str = ""  # the claim's sub-comparison this arm's runs belong to ("" when it has one)


@dataclass
class Selection:
    """A term's arm chosen before the claim's reported runs, by a rule fixed in the claims file: of ``among``, the
    arm with the lower mean final val loss at the claim's headline horizon over the pilot seeds ``first_seed`` ..
    ``first_seed + seeds - 1``, which the claim never reports (e.g. the better of two fixed p, so a contender is
    compared with the stronger one, chosen on other seeds than those that judge it)."""

    name: str
    among: list[str]
    first_seed: int
    seeds: int

    @property
    def seed_text(self) -> str:
        return f"pilot seeds {self.first_seed}-{self.first_seed + self.seeds - 1}"


@dataclass
class Claim:
    """One pre-declared claim: its compare (shared settings, arms, lr grid) and the contrast that decides it."""

    id: str
    source: str
    statement: str
    setting: str
    direction: str
    base: dict[str, Any]
    arms: list[Arm]
    terms: list[Term]
    tune_lr: list[float] | None = None
    also: list[list[Term]] = field(default_factory=list)
    #: Sub-comparisons of the same arms, each in its folder, by name -> its lr grid (None: the shared lr); e.g.
    #: ``{"tuned": [...], "preset": None}`` compares each arm at its own best lr with both at the preset's.
    parts: dict[str, list[float] | None] = field(default_factory=dict)
    #: The claim's horizon ladder as multiples of its budget's ``tokens``; the longest is its headline. ``[1]``:
    #: one horizon, the budget's tokens.
    ladder: list[float] = field(default_factory=lambda: [1])
    #: A term arm chosen on pilot seeds (None: every term names an arm).
    select: Selection | None = None
    #: Once :func:`select_arm` has run: the arm ``select`` chose.
    selected: str | None = None
    #: The budgets the claim runs under (None: every budget).
    budgets: list[str] | None = None
    #: A size axis (``sizes = [presets]`` in the file): the family's id, each member one preset, and the trend of
    #: the contrast against log parameters reported across them (:func:`size_trend`).
    family: str | None = None

    def horizons(self, budget: dict[str, Any]) -> list[int]:
        """The ladder in training tokens at ``budget``."""
        return sorted(int(round(float(budget["tokens"]) * m)) for m in self.ladder)

    def folders(self, root: Path) -> dict[str, tuple[Path, list[float] | None]]:
        """Each sub-comparison's folder and lr grid ("" for a claim with one comparison)."""
        if not self.parts:
            return {"": (root / self.id, self.tune_lr)}
        return {name: (root / self.id / name, grid) for name, grid in self.parts.items()}

    @property
    def contrast_text(self) -> str:
        """The contrast as written, e.g. ``adampower p=1.2 - adamw``."""
        parts = []
        for i, term in enumerate(self.terms):
            sign = "-" if term.weight < 0 else ("+" if i else "")
            scale = "" if abs(term.weight) == 1 else f"{abs(term.weight):g} x "
            what = "" if term.metric == "final_val_loss" else f" [{term.metric}]"
            what += f" ({term.part})" if term.part else ""
            if self.select and term.arm == self.selected:
                what += f" ({self.select.name}, chosen on {self.select.seed_text})"
            parts.append(f"{sign} {scale}{term.arm}{what}".strip())
        return " ".join(parts)


def _terms(raw: list[dict[str, Any]], arms: set[str], where: str, parts: dict[str, Any]) -> list[Term]:
    terms = [Term(**t) for t in raw]
    for term in terms:
        if (term.part or parts) and term.part not in parts:
            raise BadInput(f"{where}: term part {term.part!r} is not a part ({', '.join(parts) or 'none declared'})")
        if term.arm not in arms:
            raise BadInput(f"{where}: term arm {term.arm!r} is not an arm ({', '.join(sorted(arms))})")
        if term.metric not in ("final_val_loss", "spikes") and not term.metric.startswith("val_at:"):
            raise BadInput(f"{where}: unknown metric {term.metric!r} (final_val_loss, spikes, val_at:F)")
    return terms


def _selection(raw: dict[str, Any] | None, arms: set[str], where: str) -> Selection | None:
    if raw is None:
        return None
    select = Selection(raw["name"], list(raw["among"]), int(raw["first_seed"]), int(raw["seeds"]))
    unknown = [a for a in select.among if a not in arms]
    if unknown or len(select.among) < 2 or select.name in arms:
        raise BadInput(f"{where}: select chooses among at least two of its arms ({', '.join(sorted(arms))}) under "
                       f"a name that is not an arm; got among={select.among}, name={select.name!r}")
    if select.seeds < 1 or select.first_seed < 0:
        raise BadInput(f"{where}: select needs seeds >= 1 and first_seed >= 0")
    return select


def _ladder(raw: Any, where: str) -> list[float]:
    if (not isinstance(raw, list) or not raw or len(set(raw)) != len(raw)
            or any(isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in raw)):
        raise BadInput(f"{where}: ladder must be distinct positive multiples of the budget's tokens, e.g. [1, 2, 4]")
    return [float(m) for m in raw]


def _budget_names(raw: dict[str, Any], where: str) -> list[str] | None:
    names = raw.get("budgets")
    if names is not None and (not isinstance(names, list) or not set(names) <= set(BUDGETS)):
        raise BadInput(f"{where}: budgets must be a list of {', '.join(BUDGETS)}, got {names!r}")
    return names


def _sized(claim: Claim, sizes: Any, where: str) -> list[Claim]:
    """A claim with ``sizes``: one member per preset (``ID.PRESET``, its shared preset that one), all of one family;
    without: the claim itself."""
    if sizes is None:
        return [claim]
    from ..models import PRESETS

    if not isinstance(sizes, list) or len(sizes) < 3 or any(size not in PRESETS for size in sizes):
        raise BadInput(f"{where}: sizes must list three or more presets (a slope needs them), got {sizes!r}")
    if any("preset" in arm.overrides for arm in claim.arms):
        raise BadInput(f"{where}: a claim with sizes sets each member's preset: its arms may not set one")
    return [dataclasses.replace(claim, id=f"{claim.id}.{size}", base={**claim.base, "preset": size},
                                family=claim.id) for size in sizes]


def load_claims(path: Path = CLAIMS_FILE, text: str | None = None) -> tuple[list[Claim], dict[str, dict[str, Any]]]:
    """The claims and budgets of ``path`` (or of ``text``, the file's content as a claims folder recorded it); a
    malformed file is a one-line :class:`~gradpower.errors.BadInput` naming it."""
    try:
        data = tomllib.loads(Path(path).read_text() if text is None else text)
    except FileNotFoundError:
        raise BadInput(f"{path}: no claims file (without --file, gradpower claims reads the one shipped in the "
                       f"package, {CLAIMS_FILE})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from None
    claims = []
    try:
        for raw in data["claim"]:
            arms = [Arm(a["name"], {k: v for k, v in a.items() if k != "name"}) for a in raw["arms"]]
            names = {a.name for a in arms}
            where = f"{path}: claim {raw['id']}"
            if raw["direction"] not in DIRECTIONS:
                raise BadInput(f"{where}: direction must be one of {', '.join(DIRECTIONS)}")
            parts = {name: grid or None for name, grid in raw.get("parts", {}).items()}
            select = _selection(raw.get("select"), names, where)
            named = names | ({select.name} if select else set())
            claim = Claim(raw["id"], raw["source"], raw["statement"], raw["setting"], raw["direction"],
                          dict(raw.get("base", {})), arms, _terms(raw["terms"], named, where, parts),
                          raw.get("tune_lr"), [_terms(t, named, where, parts) for t in raw.get("also", [])],
                          parts, _ladder(raw.get("ladder", [1]), where), select, budgets=_budget_names(raw, where))
            claims += _sized(claim, raw.get("sizes"), where)
        budgets = {name: dict(table) for name, table in data["budget"].items()}
    except KeyError as exc:
        raise BadInput(f"{path}: missing key {exc}") from None
    unknown = sorted(set(budgets) - set(BUDGETS))
    if unknown:
        raise BadInput(f"{path}: unknown budget(s) {', '.join(unknown)} (known: {', '.join(BUDGETS)})")
    return claims, budgets


def budget_table(budgets: dict[str, dict[str, Any]], name: str, path: Path) -> dict[str, Any]:
    """The budget ``name`` of a claims file; one line naming the file's budgets when it declares no such one."""
    if name not in budgets:
        raise BadInput(f"{path}: declares no budget {name!r} (it has {', '.join(budgets)})")
    return budgets[name]


def _metric(run: Run, metric: str) -> float:
    if metric == "final_val_loss":
        return run.final_val_loss
    if metric == "spikes":
        return float(run.spikes)
    fraction = float(metric.split(":", 1)[1])
    if not run.val_step.size:
        return math.nan
    target = fraction * run.planned_steps
    index = min(range(run.val_step.size), key=lambda i: abs(run.val_step[i] - target))
    if abs(run.val_step[index] - target) > max(1, run.planned_steps // 10):
        raise BadInput(f"{run.path}: no evaluation near step {target:.0f} for {metric} (nearest: step "
                       f"{int(run.val_step[index])}); its runs need eval_every <= {max(1, run.planned_steps // 10)}")
    return float(run.val_loss[index])


def _term_runs(folders: dict[str, Path], terms: list[Term], horizon: int | None | str
               ) -> dict[int, list[tuple[Term, Run]]]:
    """Per seed where every term's run finished: each term with its run, at one horizon of the ladder."""
    runs = {(part, arm, seed): run for part, folder in folders.items()
            for (arm, seed), run in finished_final_runs(folder, read_experiment(folder), horizon).items()}
    seeds = sorted({s for _, _, s in runs})
    return {s: [(t, runs[(t.part, t.arm, s)]) for t in terms] for s in seeds
            if all((t.part, t.arm, s) in runs for t in terms)}


def contrast_by_seed(folders: dict[str, Path], terms: list[Term], horizon: int | None | str = "headline"
                     ) -> dict[int, float]:
    """Per seed where every term's run finished: the sum of weight x metric, at full precision, at one horizon of
    the claim's ladder (default: its headline).

    ``folders`` maps each part ("" for a single comparison) to its compare folder."""
    return {seed: sum(t.weight * _metric(run, t.metric) for t, run in pairs)
            for seed, pairs in _term_runs(folders, terms, horizon).items()}


def contrast_values(folders: dict[str, Path], terms: list[Term], horizon: int | None | str = "headline"
                    ) -> list[float]:
    """:func:`contrast_by_seed`'s values in seed order."""
    return list(contrast_by_seed(folders, terms, horizon).values())


@dataclass
class SizeTrend:
    """A size family's contrast against ln(parameters): per member its parameters and interval, and the slope's."""

    params: list[int]
    members: list[Interval]
    slope: Interval
    intercept: float


def size_trend(members: list[Claim], out: Path) -> SizeTrend | None:
    """Per seed that every member finished, the least-squares slope of the member's contrast against ln(its model's
    parameters); their mean with its 95% Student-t interval over seeds (None with fewer than 3 members)."""
    by_member, params = [], []
    for claim in members:
        folders = {part: folder for part, (folder, _) in claim.folders(out).items()}
        by_member.append(contrast_by_seed(folders, claim.terms))
        runs = finished_final_runs(next(iter(folders.values())), read_experiment(next(iter(folders.values()))))
        if not runs:
            return None
        params.append(next(iter(runs.values())).params)
    seeds = sorted(set.intersection(*(set(values) for values in by_member)))
    if len(members) < 3 or not seeds:
        return None
    x = np.log(np.array(params, dtype=float))
    fits = [np.polyfit(x, [values[seed] for values in by_member], 1) for seed in seeds]
    return SizeTrend(params, [t_interval([values[seed] for seed in seeds]) for values in by_member],
                     t_interval([fit[0] for fit in fits]), float(np.mean([fit[1] for fit in fits])))


def same_runs_cancel(folders: dict[str, Path], terms: list[Term], horizon: int | None | str = "headline") -> bool:
    """Whether the contrast is 0 by construction: at every seed its terms' runs cancel (runs of the same effective
    configuration and metric with weights summing to 0), e.g. C10 when both arms tune to the shared lr. Such a
    contrast is degenerate: it has no verdict and no detectable effect."""
    by_seed = _term_runs(folders, terms, horizon)
    for pairs in by_seed.values():
        weights: dict[tuple[str, str], float] = {}
        for term, run in pairs:  # one run whatever its folder: C10's tuned lr 3e-3 is named, the shared lr is not
            key = (json.dumps(TrainConfig.from_dict(run.config).effective(), sort_keys=True), term.metric)
            weights[key] = weights.get(key, 0.0) + term.weight
        if any(abs(w) > 1e-12 for w in weights.values()):
            return False
    return bool(by_seed)


def verdict(direction: str, interval: Interval, also: list[Interval] = ()) -> str:
    """supported / contradicted / not resolved, following the interval (see the claims file's header)."""
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "not resolved"
    below, above = interval.high < 0, interval.low > 0
    if direction == "additive":
        if below or above:
            return "contradicted"
        return "supported" if also and all(a.high < 0 for a in also) else "not resolved"
    if (direction == "lower" and below) or (direction == "higher" and above):
        return "supported"
    if below or above:
        return "contradicted"
    return "not resolved"


#: A budget sized by tokens per parameter trains whole blocks of this many tokens (2**16): every ladder rung down to
#: 1/8 of the headline then has a whole, even number of steps at any power-of-two batch x sequence up to 2**12, so
#: the rungs share an evaluation cadence (:func:`.ladder.eval_every`) instead of evaluating every step.
TOKEN_BLOCK = 2**16


def for_budget(claim: Claim, budget: dict[str, Any]) -> tuple[Claim, dict[str, Any]]:
    """The claim and budget as a budget scales them, before :func:`_spec` applies its ``shared`` settings.

    A budget may name the presets that stand for the claim's (``presets``: e.g. llama-nano -> llama-0.2b), multiply
    every batch size, the claim's and its arms' alike (``batch_scale``: a scale keeps arms that differ in batch
    apart), replace the lr grids the claim tunes on (``tune_lr``), set every run's warm-up steps (``warmup``,
    applied by :func:`_spec`), keep only each ladder's headline (``headline_only``), and size the tokens per claim as
    ``tokens_per_param`` x the parameters of the claim's first arm's model instead of a fixed ``tokens`` (the
    ladder's multiples then read in tokens per parameter: 0.25 is a quarter of ``tokens_per_param``), rounded down
    to whole :data:`TOKEN_BLOCK` blocks."""
    presets = budget.get("presets", {})
    scale = budget.get("batch_scale", 1)

    def scaled(settings: dict[str, Any]) -> dict[str, Any]:
        out = dict(settings)
        if "preset" in out:
            out["preset"] = presets.get(out["preset"], out["preset"])
        if "batch_size" in out:
            out["batch_size"] = int(out["batch_size"] * scale)
        return out

    grid = budget.get("tune_lr")
    ladder = [max(claim.ladder)] if budget.get("headline_only") else claim.ladder
    claim = dataclasses.replace(
        claim, base=scaled(claim.base), arms=[Arm(a.name, scaled(a.overrides)) for a in claim.arms], ladder=ladder,
        tune_lr=grid if grid and claim.tune_lr else claim.tune_lr,
        parts={name: (grid if grid and part else part) for name, part in claim.parts.items()})
    if "tokens_per_param" in budget:
        from ..models import count_params, preset

        name = {**claim.base, **claim.arms[0].overrides}.get("preset", "llama-tiny")
        tokens = int(budget["tokens_per_param"] * count_params(preset(name)).total)
        budget = {**budget, "tokens": max(TOKEN_BLOCK, tokens // TOKEN_BLOCK * TOKEN_BLOCK)}
    return claim, budget


def _spec(claim: Claim, budget: dict[str, Any], seeds: int, extra: dict[str, Any],
          tune_lr: list[float] | None, first_seed: int = 0) -> CompareSpec:
    """The claim's compare at ``budget``: each arm trains the budget's tokens (steps per its batch x seq), or each
    horizon of the claim's ladder.

    Precedence: the claim's shared settings < the budget's ``shared`` (it scales the setting: sequence length,
    batch, vocab, evaluation) < each arm's own settings (what the claim tests; a budget never overrides them)
    < ``extra`` (the command's own settings, e.g. ``data``). A claim whose arms still resolve to the same runs
    is refused with :class:`SameRunsError`."""
    base = {**claim.base, **budget.get("shared", {}), **extra}
    horizons = claim.horizons(budget)
    ladder = len(horizons) > 1
    arms = []
    # a budget's warm-up is each run's (set on the arms: it must be shorter than their steps, which the base lacks)
    warmup = {"warmup": int(budget["warmup"])} if "warmup" in budget else {}
    for arm in claim.arms:
        own = {**warmup, **arm.overrides, **extra}
        settings = {**base, **own}
        if "batch_size" not in settings or "seq_len" not in settings:
            raise BadInput(f"claim {claim.id}, arm {arm.name!r}: set batch_size and seq_len (its steps follow "
                           f"from the token budget)")
        if ladder:
            arms.append(Arm(arm.name, own))
            continue
        steps = max(2, horizons[-1] // (int(settings["batch_size"]) * int(settings["seq_len"])))
        # a claim read at a fraction of the steps (val_at:F) evaluates every tenth of this arm's steps
        evals = {"eval_every": max(1, steps // 10)} if any(t.metric.startswith("val_at:") for t in claim.terms) else {}
        arms.append(Arm(arm.name, {**evals, **own, "steps": steps}))
    spec = CompareSpec(base=base, arms=arms, seeds=seeds, tune_lr=tune_lr, first_seed=first_seed,
                          **({"horizons": horizons, "horizon_unit": "tokens"} if ladder else {}))
    same = with_run_defaults(spec).same_runs()
    if same:
        raise SameRunsError(f"its arms {' and '.join(repr(n) for n in same[0])} are the same runs at this budget "
                            f"(every setting they differ in is set for both by the budget or the command), so it "
                            f"tests nothing here")
    return spec


class SameRunsError(BadInput):
    """A claim whose arms resolve to the same runs at a budget: it is skipped with this reason, the others run."""


def _horizons(claim: Claim, folders: dict[str, Path]) -> list[int | None]:
    """The horizons the claim's comparison ran (``[None]`` without a ladder)."""
    spec = CompareSpec.from_dict(read_experiment(next(iter(folders.values())))["spec"])
    return sorted(spec.horizons) if spec.horizons else [None]


def _lr_at_edge(folders: dict[str, Path]) -> str:
    """``adamw 0.006; ...``: the arms whose tuned lr is an end of the claim's lr grid ("" for none)."""
    edges = {f"{arm}{f' ({part})' if part else ''}": lr for part, folder in folders.items()
             for arm, lr in tuned_lr_edges(folder).items()}
    return "; ".join(f"{arm} {lr:g}" for arm, lr in edges.items())


def _row(claim: Claim, folders: dict[str, Path], horizon: int | None | str = "headline",
         plumbing: str | None = None) -> dict[str, Any]:
    """One row of claims.csv; ``plumbing`` names a budget too small for a verdict (its rows get none)."""
    values = contrast_values(folders, claim.terms, horizon)
    interval = t_interval(values)
    also = [t_interval(contrast_values(folders, terms, horizon)) for terms in claim.also]
    also_text = [f"{dataclasses.replace(claim, terms=terms).contrast_text} = "
                 f"{_interval_text({'diff_mean': a.mean, 'ci_low': a.low, 'ci_high': a.high})} ({a.n} seeds)"
                 for terms, a in zip(claim.also, also)]
    spread = sd(values)
    metrics = sorted({t.metric for t in claim.terms})
    baseline = claim.terms[-1]
    part_folder = folders[baseline.part]
    runs = [run for (arm, _), run in finished_final_runs(part_folder, read_experiment(part_folder), horizon).items()
            if arm == baseline.arm]
    stage = stage_of(runs)
    degenerate = same_runs_cancel(folders, claim.terms, horizon)
    if degenerate:
        interval, spread = Interval(math.nan, math.nan, math.nan, interval.n), math.nan
    return {"claim": claim.id, "source": claim.source, "statement": claim.statement, "setting": claim.setting,
            "metric": "+".join(metrics), "arm": claim.contrast_text, "baseline": baseline.arm,
            "diff_mean": interval.mean, "ci_low": interval.low, "ci_high": interval.high, "n_seeds": interval.n,
            "verdict": (DEGENERATE if degenerate else f"{plumbing}: plumbing only, no verdict" if plumbing
                        else verdict(claim.direction, interval, also)),
            "mde_80": mde_80(spread, interval.n) if math.isfinite(spread) else math.nan,
            "horizon_steps": runs[0].steps if runs else None, **(stage.columns() if stage else {}),
            "stage": stage.text() if stage else "", "lr_at_edge": _lr_at_edge(folders), "also": also_text}


def select_arm(claim: Claim, out: Path, budget_name: str, budget: dict[str, Any], shared: dict[str, Any],
               jobs: int, echo: Callable[[str], None], launcher: LauncherConfig | None = None) -> Claim:
    """Run (or reuse) the claim's pilot in ``OUT/ID-pilot`` and return the claim with its selection made: the
    chosen arm stands in its terms, the others of ``among`` leave its arms. The choice is written to
    ``OUT/ID-pilot/selection.json``."""
    select = claim.select
    assert select is not None
    pilot = dataclasses.replace(claim, arms=[a for a in claim.arms if a.name in select.among])
    folder = out / f"{claim.id}-pilot"
    run_compare(_spec(pilot, budget, select.seeds, shared, None, select.first_seed), folder, jobs,
                command=f"{program()} claims --budget {budget_name} --only {claim.id}", echo=echo,
                runs_root=out / "runs", launcher=launcher)
    losses: dict[str, list[float]] = {}
    for (arm, _), run in finished_final_runs(folder, read_experiment(folder)).items():
        losses.setdefault(arm, []).append(run.final_val_loss)
    means = {arm: sum(losses[arm]) / len(losses[arm]) for arm in select.among if losses.get(arm)}
    if len(means) < len(select.among):
        raise BadInput(f"{folder}: the pilot of {claim.id} has no finished run of "
                       f"{', '.join(a for a in select.among if a not in means)}; rerun the command to finish it")
    chosen = min(select.among, key=lambda arm: means[arm])  # a tie keeps the first declared
    text = ", ".join(f"{arm} {means[arm]:.4f}" for arm in select.among)
    echo(f"   {claim.id}: {select.name} = {chosen} (mean final val loss over {select.seed_text}: {text})")
    (folder / "selection.json").write_text(json.dumps({"name": select.name, "chosen": chosen, "means": means,
                                                       "seeds": {a: len(v) for a, v in losses.items()},
                                                       "rule": "the lower mean final val loss"}, indent=1))
    return with_selection(claim, chosen)


def with_selection(claim: Claim, chosen: str) -> Claim:
    """The claim with its selection made: ``chosen`` stands in its terms, the others of ``among`` leave its arms."""
    select = claim.select
    assert select is not None

    def resolve(terms: list[Term]) -> list[Term]:
        return [dataclasses.replace(t, arm=chosen if t.arm == select.name else t.arm) for t in terms]

    return dataclasses.replace(claim, arms=[a for a in claim.arms if a.name not in select.among or a.name == chosen],
                               terms=resolve(claim.terms), also=[resolve(t) for t in claim.also], selected=chosen)


def _run_parts(claim: Claim, out: Path, budget_name: str, budget: dict[str, Any], seeds: int,
               shared: dict[str, Any], jobs: int, echo: Callable[[str], None],
               launcher: LauncherConfig | None = None) -> dict[str, Path]:
    """Run (or reuse) each of the claim's comparisons with ``seeds`` seeds; return their folders by part."""
    folders = {}
    for part, (folder, grid) in claim.folders(out).items():
        run_compare(_spec(claim, budget, seeds, shared, grid), folder, jobs,
                    command=f"{program()} claims --budget {budget_name} --only {claim.id}", echo=echo,
                    runs_root=out / "runs", launcher=launcher)
        folders[part] = folder
    return folders


#: The accelerator a ``--plan`` prices GPU-hours on: an H100 SXM's dense bf16 peak, at a utilisation typical of
#: small models (model FLOPs utilisation, MFU).
GPU_PEAK_FLOPS = 989e12
GPU_UTILISATION = 0.40


def flops_per_token(cfg: TrainConfig) -> float:
    """Training FLOPs per token (Kaplan et al. 2020): 6 x the parameters a token multiplies (the activated ones,
    less the input embedding, a lookup) + 6 x layers x sequence length x width (attention scores and values)."""
    from ..train.assemble import model_config_for

    model = model_config_for(cfg)
    return _model_flops(json.dumps(model.to_dict(), sort_keys=True))


@functools.cache
def _model_flops(model_json: str) -> float:
    """:func:`flops_per_token` of one model config (counted once: the count builds the model on the meta device)."""
    from ..models import config_from_dict, count_params

    model = config_from_dict(json.loads(model_json))
    matmul = count_params(model).activated - model.vocab_size * model.d_model
    return 6.0 * matmul + 6.0 * model.n_layers * model.max_seq_len * model.d_model


def _hours(hours: float) -> str:
    """GPU-hours as the plan prints them: whole hours, two decimals below 10."""
    return f"{hours:,.0f}" if hours >= 10 else f"{hours:.2f}"


def plan_claims(budget_name: str, only: list[str] | None = None, path: Path = CLAIMS_FILE) -> str:
    """``claims --budget NAME --plan``: each claim's runs, tokens, steps and GPU-hours at the budget, and the total,
    without running anything. A wsd ladder's shorter horizons cost only their decay (they branch from the longest);
    a pilot (``select``) and an lr grid (tuning on one seed at the headline) are counted."""
    from .ladder import decay_start

    claims, budgets = load_claims(path)
    table = budget_table(budgets, budget_name, path)
    lines = ["| claim | models | runs | tokens per run (headline) | steps (headline) | tokens trained | GPU-hours |",
             "|---|---|---|---|---|---|---|"]
    total, total_trained = 0.0, 0
    for declared in claims_for_budget(claims, only, budget_name, table):
        claim, budget = for_budget(declared, table)
        seeds = int(budget.get("max_seeds", budget["seeds"]))
        specs = [with_run_defaults(_spec(claim, budget, seeds, {}, grid)) for _, grid in claim.folders(Path()).values()]
        if claim.select:
            pilot = dataclasses.replace(claim, arms=[a for a in claim.arms if a.name in claim.select.among])
            specs.append(with_run_defaults(_spec(pilot, budget, claim.select.seeds, {}, None)))
        runs, flops, trained, models, headline = 0, 0.0, 0, set(), None
        for spec in specs:
            tuning = [(arm, spec.first_seed, spec.headline, lr) for arm in spec.arms for lr in spec.tune_lr or []]
            final = [(arm, seed, horizon, None) for arm in spec.arms for seed in spec.seed_list
                     for horizon, _ in spec.horizon_runs(arm.overrides)]
            for arm, seed, horizon, lr in tuning + final:
                cfg = spec.arm_config(arm, seed, horizon, lr if lr is not None else spec.tune_lr[0] if spec.tune_lr
                                      else None)
                branch = horizon is not None and horizon != spec.headline and cfg.schedule == "wsd"
                steps = cfg.steps - decay_start(cfg) if branch else cfg.steps
                per_step = cfg.tokens_per_step
                runs += 1
                trained += steps * per_step
                flops += steps * per_step * flops_per_token(cfg)
                models.add(cfg.preset)
                if horizon == spec.headline:
                    headline = (cfg.steps * per_step, cfg.steps)
        hours = flops / (GPU_PEAK_FLOPS * GPU_UTILISATION) / 3600
        total, total_trained = total + hours, total_trained + trained
        tokens, steps = headline or (0, 0)
        lines.append(f"| {claim.id} | {', '.join(sorted(models))} | {runs} | {tokens:,} | {steps:,} | {trained:,} | "
                     f"{_hours(hours)} |")
    lines.append(f"| total | | | | | {total_trained:,} | {_hours(total)} |")
    lines.append(f"\nGPU-hours: training FLOPs (6 x activated parameters + attention, per token) at "
                 f"{GPU_UTILISATION:.0%} of {GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s (an H100 SXM's dense bf16 peak); every "
                 f"claim at {table.get('max_seeds', table['seeds'])} seeds, its lr "
                 f"grid and pilot included, a wsd ladder's shorter horizons at the cost of their decay. Nothing ran.")
    return "\n".join(lines)


def select_claims(claims: list[Claim], only: list[str] | None) -> list[Claim]:
    """The claims ``--only`` names, in the file's order (all without it); ``C11`` names every ``C11.*``."""
    if not only:
        return claims
    known = [c.id for c in claims]
    families = {c.split(".")[0] for c in known}
    unknown = [c for c in only if c not in known and c not in families]
    if unknown:
        raise BadInput(f"--only: unknown claim(s) {', '.join(unknown)}; the file declares {', '.join(known)}")
    return [c for c in claims if c.id in only or c.id.split(".")[0] in only]


def claims_for_budget(claims: list[Claim], only: list[str] | None, budget_name: str,
                      budget: dict[str, Any]) -> list[Claim]:
    """:func:`select_claims`, less the claims declared for other budgets (a claim's ``budgets``) and, under a budget
    declared ``declared_only`` (``sizes``), every claim that does not name it; naming only such claims is an error."""
    chosen = select_claims(claims, only)
    kept = [c for c in chosen if (budget_name in (c.budgets or []) if budget.get("declared_only")
                                  else c.budgets is None or budget_name in c.budgets)]
    if chosen and not kept:
        runs_under = sorted({b for c in chosen for b in c.budgets or []}) or ["any but this one"]
        raise BadInput(f"--only {','.join(only or [])}: declared for --budget {' or '.join(runs_under)}, not "
                       f"--budget {budget_name}")
    return kept


@dataclass
class ClaimsSpec(SavedSpec):
    """``gradpower claims``: the claims file (its path and content, so a folder rebuilds from what it ran), the
    budget, ``--only`` and the settings every run gets; what each claim decided while running is recorded beside
    it (``experiment.json``'s ``claims``)."""

    budget_name: str = "quick"
    only: list[str] | None = None
    path: str = str(CLAIMS_FILE)
    text: str = ""
    shared: dict[str, Any] = field(default_factory=dict)

    def claims(self) -> tuple[list[Claim], dict[str, Any]]:
        """The claims the budget runs (``--only`` applied), and the budget's declared table."""
        claims, budgets = load_claims(Path(self.path), self.text or None)
        declared = budget_table(budgets, self.budget_name, Path(self.path))
        return claims_for_budget(claims, self.only, self.budget_name, declared), declared


@dataclass
class ClaimsResult:
    """What a claims folder says (:meth:`ClaimsExperiment.analyse`): one row per claim and horizon (and per size
    family's trend), the claims that gave a contrast, and each family's trend for its figure."""

    spec: ClaimsSpec
    command: str
    wall_s: float
    rows: list[dict[str, Any]]
    resolved: list[Claim]
    trends: list[tuple[list[Claim], SizeTrend]]

    @property
    def table(self) -> str:
        return _table(self.rows)


class ClaimsExperiment:
    """``claims`` as a kind of experiment (:mod:`.kinds`): every claim a compare folder (or a few) plus its
    contrast; ``gradpower report OUT`` rebuilds claims.csv and claims.md from them. Its runs are its compare
    folders' (each checked when read); its command decides seeds and selections as it goes
    (:func:`run_claims`), and records them."""

    kind = "claims"
    spec_type = ClaimsSpec

    def plan(self, spec: ClaimsSpec, runs_root: Path) -> list[PlannedRun]:
        """No runs of its own: each claim plans its compare when it runs (:func:`run_claims`)."""
        return []

    def planned_config(self, spec: ClaimsSpec, entry: dict[str, Any]) -> TrainConfig | None:
        return None  # its record lists no runs; each claim's compare folder checks its own

    def analyse(self, folder: Path) -> ClaimsResult:
        record = read_experiment(folder)
        spec = ClaimsSpec.from_dict(record["spec"])
        claims, declared = spec.claims()
        by_id = {claim.id: claim for claim in claims}
        plumbing = None if declared.get("verdict", True) else spec.budget_name
        rows, resolved = [], []
        for decided in record["claims"]:
            if decided["id"] not in by_id:
                raise BadInput(f"{folder}: claim {decided['id']} is not in the claims file it recorded; rerun the "
                               "command into a new --out")
            claim, budget = for_budget(by_id[decided["id"]], declared)
            if decided.get("selected"):
                claim = with_selection(claim, decided["selected"])
            if decided.get("skipped"):
                rows.append(_skipped_row(claim, decided["skipped"]))
                continue
            resolved.append(claim)
            rows += claim_rows(claim, {part: f for part, (f, _) in claim.folders(folder).items()}, plumbing)
        trends = []
        for family in dict.fromkeys(c.family for c in resolved if c.family):
            members = [c for c in resolved if c.family == family]
            trend = size_trend(members, folder)
            if trend is not None:
                trends.append((members, trend))
                rows.append(_trend_row(members, trend, plumbing))
        return ClaimsResult(spec, record.get("command", ""), float(record.get("wall_s", math.nan)), rows, resolved,
                            trends)

    def write(self, folder: Path, result: ClaimsResult) -> str:
        write_csv(folder / "claims.csv", CLAIM_COLUMNS, result.rows)
        figures = []
        for members, trend in result.trends:
            family = members[0].family
            figure = plots.size_trend(folder / f"{family}-sizes.png", trend.params, trend.members, trend.slope,
                                      trend.intercept, f"{family}: {members[0].contrast_text} at each size "
                                      f"({trend.slope.n} seeds), the fitted line per e-fold of parameters")
            figures.append(f"![{figure.stem}]({figure.name})\n\n")
        for claim in result.resolved:
            for part, (part_folder, _) in claim.folders(folder).items():
                name = "horizons.png" if (part_folder / "horizons.png").exists() else "difference.png"
                figures.append(f"![{claim.id} {part}]({part_folder.relative_to(folder)}/{name})\n\n")
        rows = result.rows
        stages = "".join(f"- {r['claim']}{_at(r)}: {r['stage']}\n" for r in rows if r["stage"])
        edges = "".join(f"- {r['claim']}: {_edge_warning(r)}\n" for r in {r["claim"]: r for r in rows}.values()
                        if r["lr_at_edge"])
        also = "".join(f"- {r['claim']}{_at(r)}: {line}\n" for r in rows for line in r["also"])
        (folder / "claims.md").write_text(
            f"# What the papers claim, checked\n\nCommand: `{result.command}`; wall time "
            f"{result.wall_s:.0f} s.\n\n{result.table}\n\n" + (f"Learning rates:\n\n{edges}\n" if edges else "")
            + (f"Secondary contrasts (reported beside a claim, no verdict of their own):\n\n{also}\n" if also else "")
            + f"Where in training each verdict stands (the contrast's baseline arm):\n\n{stages}\n"
            + "".join(figures))
        return result.table


CLAIMS = register(ClaimsExperiment())


def claim_rows(claim: Claim, folders: dict[str, Path], plumbing: str | None) -> list[dict[str, Any]]:
    """The claims.csv rows of a claim whose comparisons ran: one per horizon of its ladder."""
    return [_row(claim, folders, horizon, plumbing) for horizon in _horizons(claim, folders)]


def run_claims(out: Path, budget_name: str = "quick", only: list[str] | None = None, path: Path = CLAIMS_FILE,
               jobs: int = 1, shared: dict[str, Any] | None = None, echo: Callable[[str], None] = print,
               launcher: LauncherConfig | None = None, command: str | None = None) -> str:
    """Run (or reuse) every selected claim at ``budget_name``; write claims.csv and claims.md; return the table.

    ``shared`` sets TrainConfig fields of every run (e.g. ``data``, ``cache_dir``); ``command`` is the command
    line as typed, recorded in claims.md. A budget declared ``verdict = false`` (micro) checks the plumbing and
    gives no verdict. What each claim decided (its selection, or why it gave no contrast) is recorded in
    ``OUT/experiment.json``, from which ``gradpower report OUT`` rebuilds the tables."""
    if budget_name not in BUDGETS:
        raise BadInput(f"--budget must be one of {', '.join(BUDGETS)}, got {budget_name!r}")
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        text = ""  # load_claims names the missing file
    spec = ClaimsSpec(budget_name, only, str(path), text, dict(shared or {}))
    claims, declared_budget = spec.claims()
    started = time.time()
    share_s = 60.0 * declared_budget.get("minutes", math.inf) / max(1, len(claims))
    plumbing = None if declared_budget.get("verdict", True) else budget_name
    decided: list[dict[str, Any]] = []
    failed: list[Outcome] = []
    for declared in claims:
        echo(f"== {declared.id} ({declared.source}): {declared.statement}")
        claim, budget = for_budget(declared, declared_budget)
        decided.append({"id": claim.id})
        try:
            if claim.select:
                claim = select_arm(claim, out, budget_name, budget, spec.shared, jobs, echo, launcher)
                decided[-1]["selected"] = claim.selected
            folders = _run_parts(claim, out, budget_name, budget, int(budget["seeds"]), spec.shared, jobs, echo,
                                 launcher)
            if budget.get("effect"):
                seeds = _seeds_for(claim, folders, budget, share_s)
                if seeds > int(budget["seeds"]):
                    echo(f"   {claim.id}: {seeds} seeds for an effect of {budget['effect']:g} within its time share")
                    _run_parts(claim, out, budget_name, budget, seeds, spec.shared, jobs, echo, launcher)
        except SameRunsError as exc:
            decided[-1]["skipped"] = f"skipped: {exc}"
            echo(f"   {claim.id}: {decided[-1]['skipped']}")
            continue
        except RunsFailedError as exc:  # its report is written; the other claims still run, the command fails
            failed += exc.failed
            decided[-1]["skipped"] = f"runs failed: {exc}"
            echo(f"   {claim.id}: {decided[-1]['skipped']}")
            continue
        rows = claim_rows(claim, folders, plumbing)
        for row in rows:
            echo(f"   {claim.id}{_at(row)}: {row['verdict']} ({claim.contrast_text} = "
                 f"{_interval_text(row)}); {row['stage']}")
            for line in row["also"]:
                echo(f"   {claim.id}{_at(row)} also: {line}")
        if rows and rows[-1]["lr_at_edge"]:
            echo(f"   {claim.id}: {_edge_warning(rows[-1])}")
    out.mkdir(parents=True, exist_ok=True)
    write_experiment(out, {"kind": CLAIMS.kind, "command": command or f"{program()} claims --budget {budget_name}",
                           "spec": spec.to_dict(), "runs": [], "claims": decided, "wall_s": time.time() - started})
    result = CLAIMS.analyse(out)
    for members, _ in result.trends:
        row = next(r for r in result.rows if r["claim"] == members[0].family)
        echo(f"   {row['claim']}: {row['verdict']} ({row['arm']} = {_interval_text(row)})")
    table = CLAIMS.write(out, result)
    if failed:
        raise RunsFailedError(failed, table)
    return table


def _trend_row(members: list[Claim], trend: SizeTrend, plumbing: str | None) -> dict[str, Any]:
    """The claims.csv row of a size family's trend: the slope of its contrast per e-fold of parameters."""
    first = members[0]
    slope = trend.slope
    text = (f"{slope.mean:+.4f} [{slope.low:+.4f}, {slope.high:+.4f}]" if slope.has_interval
            else f"{slope.mean:+.4f} (one seed)")
    sizes = ", ".join(f"{p / 1e3:.0f}k" for p in trend.params)
    verdict_text = (f"{plumbing}: plumbing only, no verdict" if plumbing else
                    f"measured, no direction declared: {text} nats per e-fold of parameters over {sizes}")
    return {"claim": first.family, "source": first.source, "statement": "the trend of the contrast with model size",
            "setting": first.setting, "metric": "slope vs ln(params)", "arm": f"d({first.contrast_text})/d ln(params)",
            "baseline": first.terms[-1].arm, "diff_mean": slope.mean, "ci_low": slope.low, "ci_high": slope.high,
            "n_seeds": slope.n, "verdict": verdict_text, "mde_80": math.nan, "stage": "", "lr_at_edge": "",
            "also": []}


def _skipped_row(claim: Claim, why: str) -> dict[str, Any]:
    """The claims.csv row of a claim that gave no contrast here (skipped, or its runs failed): the reason only."""
    return {"claim": claim.id, "source": claim.source, "statement": claim.statement, "setting": claim.setting,
            "arm": claim.contrast_text, "baseline": claim.terms[-1].arm, "diff_mean": math.nan, "ci_low": math.nan,
            "ci_high": math.nan, "n_seeds": 0, "verdict": why, "mde_80": math.nan, "stage": "", "lr_at_edge": "",
            "also": []}


def _edge_warning(row: dict[str, Any]) -> str:
    return (f"warning: the lr chosen at the edge of its tuning grid ({row['lr_at_edge']}): the optimum may lie "
            "beyond it, so the grid is too narrow for this verdict to be sure")


def _at(row: dict[str, Any]) -> str:
    """`` @ 160 steps`` for a row of a ladder claim (its horizon in the baseline's steps)."""
    return f" @ {row['horizon_steps']} steps" if row.get("horizon_steps") else ""


def _seeds_for(claim: Claim, folders: dict[str, Path], budget: dict[str, Any], share_s: float) -> int:
    """``seeds_needed`` for the budget's effect from the quick seeds' spread, capped by the seeds that fit the
    claim's time share.

    The cost comes from the runs' recorded wall times (its lr tuning plus, per seed, every arm of every part),
    so a claim whose quick runs were reused from an earlier invocation is costed the same as a fresh one."""
    quick = int(budget["seeds"])
    spread = sd(contrast_values(folders, claim.terms))
    if not math.isfinite(spread):
        return quick
    tuning_s, per_seed = 0.0, {}
    for folder in folders.values():
        record = read_experiment(folder)
        tuned = [run for entry, run in load_listed_runs(folder, record)
                 if entry["phase"] == "tune" and run is not None]
        tuning_s += sum(run.wall_s + RUN_OVERHEAD_S for run in tuned)
        # every horizon of a ladder, each at its recorded wall time (a wsd branch's includes the stable phase it
        # shared with its trunk, so a ladder's seed is costed at most what it took)
        for horizon in _horizons(claim, {"": folder}):
            for (_, seed), run in finished_final_runs(folder, record, horizon).items():
                per_seed[seed] = per_seed.get(seed, 0.0) + run.wall_s + RUN_OVERHEAD_S
    seed_s = sum(per_seed.values()) / len(per_seed) if per_seed else math.inf
    fit = int((share_s - tuning_s) // seed_s) if math.isfinite(seed_s) and seed_s > 0 else quick
    cap = min(fit, int(budget.get("max_seeds", fit)))
    needed = seeds_needed(spread, float(budget["effect"]), max_seeds=max(2, cap))
    return max(quick, cap if needed is None else min(needed, cap))  # None: more than the cap would be needed


def _interval_text(row: dict[str, Any]) -> str:
    if not math.isfinite(row["diff_mean"]):
        return "none"
    if not math.isfinite(row["ci_low"]):
        return f"{row['diff_mean']:+.4f} (one seed)"
    return f"{row['diff_mean']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| claim | source | statement | steps | tokens/param | epochs | contrast [95% CI] | seeds | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = f" (mde_80 {r['mde_80']:.3f})" if r["verdict"] == "not resolved" and math.isfinite(r["mde_80"]) else ""
        per_param, epochs = r.get("tokens_per_param"), r.get("epochs")
        passes = f"{epochs:.2g}" if epochs and math.isfinite(epochs) else ""
        lines.append(f"| {r['claim']} | {r['source']} | {r['statement']} | {r.get('horizon_steps') or ''} | "
                     f"{f'{per_param:.3g}' if per_param else ''} | {passes} | {r['arm']} = {_interval_text(r)} | "
                     f"{r['n_seeds']} | {r['verdict']}{extra} |")
    return "\n".join(lines)
