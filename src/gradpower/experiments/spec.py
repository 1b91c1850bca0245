"""What an experiment runs: shared settings, arms or a grid, seeds, an lr grid to tune.

Arms and grid points differ in any :class:`~gradpower.train.TrainConfig`
fields. On the command line an arm is ``"optim=adampower p=1.2"`` (optionally
``"NAME: ..."``); a grid axis is ``"p=0.8,1.0,1.2"``. An experiment TOML file
holds shared ``TrainConfig`` keys at the top level, the experiment keys
(``seeds``, ``tune_lr``, ``tune_seeds``) and ``[[arm]]`` tables (each with an
optional ``name``) or a ``[grid]`` table of lists; a ``[launcher]`` table says where the runs execute
(:mod:`.launcher`).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..train.config import TrainConfig, check_type, config_fields, field_type, read_toml, typed_fields
from .kinds import SavedSpec
from .ladder import eval_every as ladder_eval_every
from .ladder import ladder_p_every, ladder_warmup
from .stats import DEFAULT_EFFECT

#: Keys of an experiment file that are not TrainConfig fields.
EXPERIMENT_KEYS = ("seeds", "first_seed", "tune_lr", "tune_seeds", "effect", "max_seeds", "reference", "tokens",
                   "horizons", "horizon_tokens", "arm", "grid", "launcher")
#: How a ladder's horizons are given: optimizer steps, or training tokens (steps = tokens / (batch x seq_len)).
HORIZON_UNITS = ("steps", "tokens")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
#: Settings every compare and sweep run gets unless the experiment sets them: a per-step loss for spike counts and
#: smoothed curves, evaluations for the curves, and checkpoints to resume from.
RUN_DEFAULTS: dict[str, Any] = {"log_every": 1, "keep_ckpts": 1}


@dataclass
class Arm:
    """One arm of a comparison: a name and the TrainConfig fields it sets."""

    name: str
    overrides: dict[str, Any]


@dataclass
class RunsSpec(SavedSpec):
    """What every kind of experiment of seeded runs shares: the runs' common settings, the seeds, an optional
    horizon ladder and where the runs execute. Each kind's spec adds its own fields (:class:`CompareSpec`,
    :class:`SweepSpec`)."""

    base: dict[str, Any] = field(default_factory=dict)
    seeds: int = 3
    first_seed: int = 0
    #: The file's ``[launcher]`` table (:class:`.launcher.LauncherConfig` keys): where the runs execute.
    launcher: dict[str, Any] = field(default_factory=dict)
    #: A horizon ladder: every arm (or grid point) and seed trains to each of these lengths (None: ``steps``).
    horizons: list[int] | None = None
    #: What ``horizons`` count: ``steps`` or ``tokens``.
    horizon_unit: str = "steps"

    @property
    def seed_list(self) -> list[int]:
        """The seeds run: ``first_seed`` .. ``first_seed + seeds - 1`` (a pilot can use seeds a demo does not)."""
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.first_seed < 0:
            raise BadInput(f"seeds must be >= 1 and first_seed >= 0, got {self.seeds} and {self.first_seed}")
        self.check()
        if self.horizons is not None:
            self._check_horizons()
        for overrides in self.run_overrides():
            self.config(**overrides)  # validates shared settings early

    def check(self) -> None:
        """A kind's own checks of its fields (before the ladder's, which need them)."""

    def run_overrides(self) -> list[dict[str, Any]]:
        """What each arm or grid point sets besides the shared settings (one ``{}`` where nothing varies)."""
        return [{}]

    @property
    def horizon_flag(self) -> str:
        """The flag that gives this ladder: ``--horizons`` (steps) or ``--horizon-tokens``."""
        return "--horizons" if self.horizon_unit == "steps" else "--horizon-tokens"

    def _check_horizons(self) -> None:
        flag = self.horizon_flag
        if self.horizon_unit not in HORIZON_UNITS:
            raise BadInput(f"horizon_unit must be one of {', '.join(HORIZON_UNITS)}, got {self.horizon_unit!r}")
        if (not self.horizons or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.horizons)
                or len(set(self.horizons)) != len(self.horizons)):
            raise BadInput(f"{flag} must be distinct positive whole numbers, got {self.horizons}")
        for overrides in self.run_overrides():
            for horizon, settings in self.horizon_runs(overrides):
                if settings["steps"] < 2 or settings["warmup"] >= settings["steps"]:
                    raise BadInput(f"{flag}: horizon {horizon} is {settings['steps']} step(s), not more than the "
                                   f"ladder's warm-up of {settings['warmup']} steps; drop it or set a shorter warmup")

    @property
    def headline(self) -> int | None:
        """The horizon the main table speaks of: the longest (None without a ladder)."""
        return max(self.horizons) if self.horizons else None

    def horizon_runs(self, overrides: dict[str, Any]) -> list[tuple[int | None, dict[str, Any]]]:
        """Each horizon (shortest first) and the fields a run of it sets besides ``overrides``: its steps, the
        ladder's one warm-up and evaluation cadence (:mod:`.ladder`; for a ``--p track`` arm its one ``p_every``
        too), and a checkpoint every quarter.
        ``[(None, {})]`` without a ladder."""
        if not self.horizons:
            return [(None, {})]
        cfg = self.config(**overrides)
        per_step = cfg.tokens_per_step
        horizons = sorted(self.horizons)
        steps = [h if self.horizon_unit == "steps" else h // per_step for h in horizons]
        given = {**self.base, **overrides}
        warmup = ladder_warmup(steps, given.get("warmup"))
        every = given.get("eval_every") or ladder_eval_every(steps)
        tracking = {"p_every": ladder_p_every(steps, given.get("p_every"))} if cfg.p_track else {}
        return [(h, {"steps": s, "warmup": warmup, "eval_every": every, **tracking,
                     "ckpt_every": given.get("ckpt_every") or max(1, s // 4)}) for h, s in zip(horizons, steps)]

    def tokens_per_step(self, overrides: dict[str, Any]) -> int:
        """Training tokens of one optimizer step of a run with ``overrides`` (batch x sequence length)."""
        return self.config(**overrides).tokens_per_step

    def _config_at(self, overrides: dict[str, Any], seed: int, horizon: int | None, extra: dict[str, Any]
                   ) -> TrainConfig:
        settings = dict(self.horizon_runs(overrides))
        if horizon not in settings:
            raise BadInput(f"horizon {horizon} is not one of this experiment's ({sorted(self.horizons or [])})")
        return self.config(seed, **{**overrides, **settings[horizon], **extra})

    def horizon_text(self, horizon: int | None) -> str:
        """``640 steps`` or ``655,360 tokens``; "" without a ladder."""
        return "" if horizon is None else f"{horizon:,} {self.horizon_unit}"

    def config(self, seed: int = 0, **overrides: Any) -> TrainConfig:
        """The TrainConfig of this experiment's shared settings plus ``overrides`` for ``seed``. Under a ladder a
        run's steps come from its horizon, so a config for its shape alone (batch, sequence length, p tracking)
        takes the shared steps or any length the warm-up allows."""
        values = {**self.base, **overrides, "seed": seed}
        if self.horizons and "steps" not in overrides:
            warmup = values.get("warmup") or 0
            values["steps"] = max(values.get("steps") or 0, warmup + 1, values.get("p_every") or 0,
                                  values.get("p_auto_steps", 0) + 1, 2)
        return TrainConfig(**values)


@dataclass
class CompareSpec(RunsSpec):
    """``compare``: arms over seeds, with an lr grid to tune per arm and the design's target effect."""

    arms: list[Arm] = field(default_factory=list)
    tune_lr: list[float] | None = None
    tune_seeds: bool = False
    #: The difference (nats) the report sizes the design for: ``seeds_needed`` is the seeds that resolve it.
    effect: float = DEFAULT_EFFECT
    #: ``--seeds auto``: add seeds in rounds up to this many, stopping by the sequential rule (None: ``seeds``).
    max_seeds: int | None = None

    def check(self) -> None:
        self.arms = [Arm(**a) if isinstance(a, dict) else a for a in self.arms]
        if not (isinstance(self.effect, (int, float)) and 0 < self.effect < float("inf")):
            raise BadInput(f"effect must be a number of nats > 0, got {self.effect!r}")
        if self.max_seeds is not None and self.max_seeds < 2:
            raise BadInput(f"--max-seeds must be at least 2 (a paired interval needs two seeds), got "
                           f"{self.max_seeds}")
        if self.max_seeds is not None and self.tune_seeds:
            raise BadInput("--seeds auto tunes lr on the first seed only: drop --tune-seeds")
        names = [arm.name for arm in self.arms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise BadInput(f"arm names must be unique; repeated: {', '.join(duplicates)} (name them 'NAME: ...')")
        if self.tune_lr is not None:
            if not self.tune_lr or any(not lr > 0 for lr in self.tune_lr):
                raise BadInput(f"tune_lr must be a non-empty list of positive lrs, got {self.tune_lr}")
            for arm in self.arms:
                if "lr" in arm.overrides:
                    raise BadInput(f"arm {arm.name!r} sets lr, which --tune-lr chooses; drop one of them")
        for arm in self.arms if self.horizons is not None else []:
            if "steps" in arm.overrides:
                raise BadInput(f"arm {arm.name!r} sets steps, which {self.horizon_flag} sets: drop one of them")

    def run_overrides(self) -> list[dict[str, Any]]:
        return [arm.overrides for arm in self.arms] or [{}]

    def arm_config(self, arm: Arm, seed: int, horizon: int | None = None, lr: float | None = None) -> TrainConfig:
        """The config of ``arm``'s run for ``seed`` at ``horizon`` of the ladder (None without one), at a tuned
        ``lr`` (None: the arm's own): what ``compare`` plans, and what a reader of its folder checks a run against."""
        return self._config_at(arm.overrides, seed, horizon, {"lr": lr} if lr is not None else {})

    def same_runs(self) -> list[tuple[str, str]]:
        """Pairs of arms whose runs would be the same runs (every defining field equal at every horizon, at the
        first lr of a tuning grid): no design, since their difference is 0 by construction."""
        lr = self.tune_lr[0] if self.tune_lr else None

        def runs_of(arm: Arm) -> list[dict[str, Any]]:
            return [self.arm_config(arm, self.first_seed, horizon, lr).effective()
                    for horizon, _ in self.horizon_runs(arm.overrides)]

        planned = [(arm.name, runs_of(arm)) for arm in self.arms]
        return [(a, b) for i, (a, runs_a) in enumerate(planned) for b, runs_b in planned[i + 1:] if runs_a == runs_b]


@dataclass
class SweepSpec(RunsSpec):
    """``sweep``: a grid over TrainConfig fields, each point over seeds, paired against a reference point."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    #: The point the others are paired against, e.g. ``{"p": 1.0}`` (None: the first grid value).
    reference: dict[str, Any] | None = None
    #: A fixed token budget; each point trains tokens / (batch_size x seq_len) steps (None: ``steps``).
    tokens: int | None = None

    def check(self) -> None:
        if self.reference is not None:
            for key, value in self.reference.items():
                if key not in self.grid or value not in self.grid[key]:
                    raise BadInput(f"--reference {key}={value} is not a grid value; the grid: "
                                   + "; ".join(f"{k}={','.join(map(str, v))}" for k, v in self.grid.items()))
        if self.tokens is not None and self.tokens < 1:
            raise BadInput(f"--tokens must be a positive token budget, got {self.tokens}")
        if self.tokens is not None and self.horizons is not None:
            raise BadInput(f"{self.horizon_flag} sets each run's length: drop --tokens")
        if "steps" in self.grid and self.horizons is not None:
            raise BadInput(f"{self.horizon_flag} sets each run's length: drop steps from the grid")

    def run_overrides(self) -> list[dict[str, Any]]:
        return [{k: v[0] for k, v in self.grid.items()}]

    def budget_steps(self, point: dict[str, Any]) -> dict[str, Any]:
        """``--tokens``: the steps that give a grid point the sweep's token budget (equal compute across batch
        sizes); ``{}`` without one."""
        if self.tokens is None:
            return {}
        per_step = self.tokens_per_step(point)
        if self.tokens // per_step < 1:
            raise BadInput(f"--tokens {self.tokens} is less than one step of {point_label(point)} "
                           f"({per_step} tokens)")
        return {"steps": self.tokens // per_step}

    def point_config(self, point: dict[str, Any], seed: int, horizon: int | None = None) -> TrainConfig:
        """The config of a grid point's run for ``seed`` at ``horizon``: what ``sweep`` plans."""
        return self._config_at(point, seed, horizon, self.budget_steps(point))


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first field varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_label(point: dict[str, Any]) -> str:
    """``p=1.2 batch_size=8``, numbers written as in the CSV files."""
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def with_run_defaults(spec: RunsSpec) -> Any:
    """Fill the settings a comparison needs (per-step loss, ~10 evaluations, ~4 checkpoints) if unset (a ladder
    sets its evaluations and checkpoints per horizon: :meth:`RunsSpec.horizon_runs`)."""
    base = {**RUN_DEFAULTS, **spec.base}
    if spec.horizons:
        return dataclasses.replace(spec, base=base)
    steps = TrainConfig(**base).steps
    base.setdefault("eval_every", max(1, steps // 10))
    base.setdefault("ckpt_every", max(1, steps // 4))
    return dataclasses.replace(spec, base=base)


def parse_value(key: str, raw: str) -> Any:
    """A command-line value typed by the TrainConfig field ``key`` ("none" for unset optional fields)."""
    names = {f.name for f in config_fields()}
    if key not in names:
        raise BadInput(f"unknown field {key!r} (any TrainConfig field: see 'gradpower train --help')")
    kind = field_type(key)
    text = raw.strip()
    if text.lower() == "none":
        return check_type(key, None)
    if kind is not bool and not isinstance(kind, type):  # a parser, e.g. p: a number or "auto"
        try:
            parsed = kind(text)
        except ValueError as exc:  # the parser says what it accepts
            raise BadInput(f"{key}={raw!r}: {exc}") from None
        return check_type(key, parsed)
    try:
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            value: Any = text.lower() in _TRUE
        else:
            value = kind(text)
    except ValueError:
        raise BadInput(f"{key}={raw!r}: expected {getattr(kind, '__name__', 'a value')}") from None
    return check_type(key, value)


def parse_assignments(text: str) -> dict[str, Any]:
    """``"optim=adampower p=1.2"`` -> ``{"optim": "adampower", "p": 1.2}``."""
    out: dict[str, Any] = {}
    for item in text.split():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BadInput(f"expected KEY=VALUE, got {item!r} in {text!r}")
        key = key.replace("-", "_")
        if key in out:  # never keep one of two values silently
            raise BadInput(f"{key} is given twice in {text!r}: give each field once")
        out[key] = parse_value(key, raw)
    return out


def arm_label(overrides: dict[str, Any]) -> str:
    """A readable default arm name: the optimizer first, then the other fields (``adampower p=1.2``)."""
    parts = [str(overrides["optim"])] if "optim" in overrides else []
    parts += [f"{k}={v}" for k, v in overrides.items() if k != "optim"]
    return " ".join(parts) or "base"


def parse_arm(text: str) -> Arm:
    """``"NAME: k=v k=v"`` or ``"k=v k=v"`` -> :class:`Arm`."""
    name, sep, rest = text.partition(":")
    if sep and "=" not in name:
        overrides = parse_assignments(rest)
        return Arm(name.strip() or arm_label(overrides), overrides)
    overrides = parse_assignments(text)
    return Arm(arm_label(overrides), overrides)


def parse_grid_axis(text: str) -> tuple[str, list[Any]]:
    """``"p=0.8,1.0,1.2"`` -> ``("p", [0.8, 1.0, 1.2])``."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not raw.strip():
        raise BadInput(f"expected FIELD=V1,V2,..., got {text!r}")
    values = [parse_value(key, v) for v in raw.split(",")]
    if len(set(map(repr, values))) != len(values):
        raise BadInput(f"grid {key!r} repeats a value: {raw}")
    return key, values


def parse_numbers(text: str, flag: str) -> list[float]:
    """``"1e-3,2e-3"`` -> ``[0.001, 0.002]``; a bad entry is refused naming ``flag``."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"{flag} expects comma-separated numbers, got {text!r}") from None


def _launcher_table(table: Any, file: Path) -> dict[str, Any]:
    """The ``[launcher]`` table, checked now (unknown keys, wrong types) so a typo fails before anything runs."""
    from .launcher import launcher_config

    if not isinstance(table, dict):
        raise BadInput("[launcher] must be a table of launcher keys (launcher = \"submitit\", gpus_per_run, ...)")
    launcher_config(table, {"launcher": "submitit"}, f"{file} [launcher]")  # keys and types; flags may add more
    return dict(table)


def _horizons_of(raw: dict[str, Any]) -> dict[str, Any]:
    """An experiment file's ``horizons = [steps, ...]`` or ``horizon_tokens = [tokens, ...]`` (not both)."""
    if raw.get("horizons") is not None and raw.get("horizon_tokens") is not None:
        raise BadInput("set horizons (steps) or horizon_tokens (tokens), not both")
    for key, unit in (("horizons", "steps"), ("horizon_tokens", "tokens")):
        if raw.get(key) is not None:
            if not isinstance(raw[key], list):
                raise BadInput(f"{key} must be a list of whole numbers, e.g. {key} = [320, 640]")
            return {"horizons": list(raw[key]), "horizon_unit": unit}
    return {}


#: Each kind's keys of an experiment file, besides the shared ones.
_KIND_KEYS = {"CompareSpec": ("arm", "tune_lr", "tune_seeds", "effect", "max_seeds"),
              "SweepSpec": ("grid", "reference", "tokens")}


def load_experiment(path: str | Path, kind: type[RunsSpec] = CompareSpec) -> Any:
    """Read an experiment TOML file into ``kind``'s spec: shared TrainConfig keys, seeds, a ladder and a
    [launcher] table, with [[arm]] tables and tune keys (:class:`CompareSpec`) or a [grid] table
    (:class:`SweepSpec`)."""
    file = Path(path)
    raw = read_toml(file, "experiment file")
    base = typed_fields(raw, str(file), also=EXPERIMENT_KEYS)
    names = {f.name for f in config_fields()}
    other = next(k for k in _KIND_KEYS if k != kind.__name__)
    foreign = sorted(set(_KIND_KEYS[other]) & set(raw))
    if foreign:
        command = "compare" if other == "CompareSpec" else "sweep"
        raise BadInput(f"{file}: {', '.join(foreign)} belong to a 'gradpower {command}' file")
    try:
        shared = dict(seeds=int(raw.get("seeds", 3)), first_seed=int(raw.get("first_seed", 0)),
                      launcher=_launcher_table(raw.get("launcher", {}), file), **_horizons_of(raw))
        if kind is SweepSpec:
            grid = {}
            for key, values in raw.get("grid", {}).items():
                key = key.replace("-", "_")
                if key not in names or not isinstance(values, list) or not values:
                    raise BadInput(f"[grid] {key} must be a TrainConfig field with a list of values")
                grid[key] = [check_type(key, v) for v in values]
            return SweepSpec(base=base, grid=grid, **shared,
                             reference=dict(raw["reference"]) if raw.get("reference") is not None else None,
                             tokens=int(raw["tokens"]) if raw.get("tokens") is not None else None)
        arms = []
        for table in raw.get("arm", []):
            name = table.get("name")
            overrides = typed_fields({k: v for k, v in table.items() if k != "name"}, f"[[arm]] {name or ''}".strip())
            arms.append(Arm(str(name) if name else arm_label(overrides), overrides))
        return kind(
            base=base, arms=arms, tune_lr=raw.get("tune_lr"), tune_seeds=bool(raw.get("tune_seeds", False)),
            effect=float(raw.get("effect", DEFAULT_EFFECT)),
            max_seeds=int(raw["max_seeds"]) if raw.get("max_seeds") is not None else None, **shared)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{file}: {exc}") from None
