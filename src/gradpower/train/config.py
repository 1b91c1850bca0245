"""``TrainConfig``: every knob of a training run, one dataclass field each.

The ``help`` metadata of each field is what ``gradpower train --help`` shows,
and TOML config files use the field names as keys, so the dataclass is the
single source of truth for the command line, config files and run folders.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import shlex
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..invocation import program
from ..models import preset, preset_lr
from .sections import (
    AUTO,
    SECTIONS,
    TRACK,
    DataSection,
    ModelSection,
    OptimizerSection,
    PowerSection,
    RunSection,
    ScheduleSection,
)


@dataclass(init=False)
class TrainConfig:
    """A training run: one section of each kind (:mod:`gradpower.train.sections`), every knob readable and
    writable by its own name too (``cfg.lr`` is ``cfg.optimizer.lr``). ``None`` means "derive it" (see each
    field's help).

    Built from knobs by name (``TrainConfig(preset="llama-nano", lr=3e-3)``), from sections
    (``TrainConfig(power=PowerSection(p="track"))``, or a section's dict) or both, the names on top; each section
    checks its own values.
    """

    model: ModelSection
    optimizer: OptimizerSection
    power: PowerSection
    lr_schedule: ScheduleSection
    dataset: DataSection
    run: RunSection

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(SECTIONS) - set(_SECTION_OF))
        if unknown:
            raise TypeError(f"TrainConfig got unexpected keyword argument(s) {', '.join(unknown)}")
        for name, kind in SECTIONS.items():
            given = values.get(name)
            knobs = dataclasses.asdict(given) if isinstance(given, kind) else dict(given or {})
            knobs.update({k: v for k, v in values.items() if _SECTION_OF.get(k) == name})
            object.__setattr__(self, name, kind(**knobs))
        self.__post_init__()

    def __post_init__(self) -> None:
        self.power.resolve_mode()  # p = "auto" / "track" first: the type checks below see a number
        for f in config_fields():
            setattr(self, f.name, check_type(f.name, getattr(self, f.name)))
        for name, value in self.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise BadInput(f"{name} must be a finite number, got {value}")
        for name in SECTIONS:
            getattr(self, name).check(self)

    @property
    def p_every_steps(self) -> int:
        """``p_every``, or by default 10% of the steps (at least 1): ten updates of p per run."""
        return self.power.every_steps(self.steps)

    @property
    def warmup_steps(self) -> int:
        """``warmup``, or by default min(100, steps // 10): short runs keep a proportionate warm-up."""
        return self.lr_schedule.warmup_steps

    @property
    def tokens_per_step(self) -> int:
        """Training tokens of one optimizer step: the global batch x the sequence length (the preset's by default)."""
        return self.batch_size * (self.seq_len or preset(self.preset).max_seq_len)

    @property
    def resolved_lr(self) -> float:
        """``lr``, or by default the preset's: the peak lr the run trains with."""
        return self.lr or preset_lr(self.preset)

    def optimizer_options(self) -> dict[str, Any]:
        """This config's optimizer section as :func:`gradpower.optim.build_optimizer`'s keywords (the fields of
        :class:`gradpower.optim.OptimizerConfig`): the one place the two are joined."""
        return {"lr": self.resolved_lr, "betas": (self.beta1, self.beta2),
                **{name: getattr(self, name) for name in OPTIMIZER_FIELDS}}

    def micro_batch(self, world_size: int = 1) -> int:
        """Sequences per forward/backward on each of ``world_size`` processes (see :func:`micro_batch_for`)."""
        return micro_batch_for(self.batch_size, self.micro_batch_size, world_size)

    def accumulation_steps(self, world_size: int = 1) -> int:
        """Micro-batches each process accumulates per optimizer step."""
        return self.batch_size // world_size // self.micro_batch(world_size)

    @property
    def effective_init_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{run_name(self)}")

    def to_dict(self) -> dict[str, Any]:
        """Every knob by its flat name, in the sections' order: what ``config.json`` holds."""
        return {f.name: getattr(self, f.name) for f in config_fields()}

    def defining(self) -> dict[str, Any]:
        """The fields that decide the run's result (everything but where and how it is run and logged)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_CONTROL}

    def effective(self) -> dict[str, Any]:
        """:meth:`defining` with every default that resolves from other fields resolved (lr from the preset,
        the warm-up, the seeds of initialisation and data, ``--p track``'s cadence): two configs whose
        ``effective()`` agree train the same run, even where one states a default the other leaves unset."""
        values = self.defining()
        values.update(lr=self.resolved_lr, warmup=self.warmup_steps, init_seed=self.effective_init_seed,
                      data_seed=self.effective_data_seed, p_every=self.p_every_steps if self.p_track else None)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a saved ``to_dict()``; keys of other versions are ignored, missing ones default."""
        names = set(_SECTION_OF)
        # runs of versions without a final evaluation had none: say so, so they are not taken for new ones
        return cls(**{"eval_tokens": 0, **{k: v for k, v in values.items() if k in names}})


#: ``TrainConfig`` fields that are :class:`gradpower.optim.OptimizerConfig` fields of the same name (``lr`` and
#: ``betas`` are joined in :meth:`TrainConfig.optimizer_options`).
OPTIMIZER_FIELDS = ("p", "weight_decay", "eps", "momentum", "nesterov", "blockwise_lr", "decay_all", "fused",
                    "foreach", "ns_dtype")
#: Fields that say where and how a run is executed and logged; they never change its result.
RUN_CONTROL = ("out", "resume", "overwrite", "stop_after", "device", "parallel", "compile", "dist_timeout", "cache_dir",
               "verify_cache", "tensorboard", "wandb", "log_every", "ckpt_every", "keep_ckpts")
#: Fields a resumed run may change (besides RUN_CONTROL): extending a run and evaluating more often.
RESUMABLE = RUN_CONTROL + ("steps", "eval_every")


def config_differences(before: dict[str, Any], after: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: before -> after`` for every key whose value differs (a key missing on one side counts as None)."""
    keys = sorted((set(before) | set(after)) - set(ignore))
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys if before.get(k) != after.get(k)]


def resume_differences(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """``field: saved -> current`` for every field a resumed run may not change.

    The warm-up is compared as resolved (``warmup_steps``): its default depends
    on ``steps``, which a resumed run may change, so an extended run keeps the
    warm-up it had by stating it. The lr is compared as resolved too, so the
    message shows the lr the run trained with, not an unset default.
    """
    old = TrainConfig.from_dict(saved)
    before, after = old.to_dict(), current.to_dict()
    before["warmup"], after["warmup"] = old.warmup_steps, current.warmup_steps
    before["lr"], after["lr"] = old.resolved_lr, current.resolved_lr
    return config_differences(before, after, ignore=RESUMABLE)


def micro_batch_for(batch_size: int, micro_batch_size: int | None, world_size: int) -> int:
    """The micro-batch each process runs: ``batch_size`` is the global batch whatever the process count.

    Each process takes ``batch_size / world_size`` sequences per step, in
    micro-batches of the largest divisor of that number which is at most
    ``micro_batch_size`` (a memory cap; default: no cap, no accumulation). A
    global batch that does not divide over the processes is refused.
    """
    if batch_size % world_size:
        lower, upper = batch_size // world_size * world_size, (batch_size // world_size + 1) * world_size
        raise BadInput(f"batch_size {batch_size} does not divide over {world_size} processes: the global batch "
                       f"stays exactly --batch-size, so choose a multiple of {world_size} (e.g. {lower or upper} "
                       f"or {upper})")
    per_process = batch_size // world_size
    cap = min(per_process, micro_batch_size or per_process)
    return max(d for d in range(1, cap + 1) if per_process % d == 0)


def resume_command(folder: Path) -> str:
    """The command that continues the run in ``folder`` (``--resume`` takes the configuration saved there)."""
    return f"{program()} train --out {shlex.quote(str(folder))} --resume"


def run_name(cfg: TrainConfig) -> str:
    """A folder name that encodes every result-defining field that differs from the defaults.

    ``llama-tiny-adampower-s0`` for the defaults; ``llama-tiny-adampower-lr0.002-p1.4-s1`` for a
    sweep point. Names longer than 120 characters keep the preset and optimizer and hash the rest.
    """
    defaults = TrainConfig().defining()
    parts = []
    for key, value in sorted(cfg.defining().items()):
        chosen = {AUTO: cfg.p_auto, TRACK: cfg.p_track}
        adaptive = next((name for name, on in chosen.items() if on), None)  # p=auto or p=track
        if key in ("preset", "optim", "seed", "p_auto", "p_track") or (value == defaults[key]
                                                                     and not (key == "p" and adaptive)):
            continue
        text = Path(value).name if key == "data" else adaptive if key == "p" and adaptive else value
        parts.append(f"{key}{text}")
    body = re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts))
    if len(body) > 100:
        body = hashlib.sha256(body.encode()).hexdigest()[:12]
    return "-".join(x for x in (cfg.preset, cfg.optim, body, f"s{cfg.seed}") if x)


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def p_value(text: str) -> float | str:
    """A command-line p: a number, ``auto`` or ``track``."""
    if text.strip().lower() in (AUTO, TRACK):
        return text.strip().lower()
    try:
        return float(text)
    except ValueError:
        raise BadInput(f"p must be a number > 0, 'auto' or 'track', got {text!r}") from None


def field_type(name: str) -> Any:
    """The scalar type of a ``TrainConfig`` field (``int`` for ``int | None``; p is a number, ``auto`` or
    ``track``)."""
    if name == "p":
        return p_value
    return _scalar_types()[name]


@functools.cache
def _scalar_types() -> dict[str, Any]:
    """Each field's scalar type, resolved once: ``typing.get_type_hints`` evaluates every annotation of the
    class on each call, and a config checks each of its fields when it is built."""
    types_of = {}
    hints = {name: hint for kind in SECTIONS.values() for name, hint in typing.get_type_hints(kind).items()}
    for name, hint in hints.items():
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        types_of[name] = hint
    return types_of


def check_type(name: str, value: Any) -> Any:
    """Return ``value`` if it fits field ``name`` (ints are accepted for floats), else raise naming both.

    Config files are checked like flags: ``steps = "6"``, ``steps = 6.5`` or
    ``resume = "no"`` are refused instead of compared as strings or read as true.
    """
    if name == "p" and value in (AUTO, TRACK):
        return value  # TrainConfig turns it into p_auto or p_track
    kind = float if name == "p" else field_type(name)
    default = _FIELDS[name].default
    if value is None and default is None:
        return value
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise BadInput(f"{name} must be {_TYPE_NAMES[kind]}, got {value!r} ({type(value).__name__})")
    return value


def config_fields() -> list[dataclasses.Field]:
    """Every knob of a run, section by section (the flags and TOML keys)."""
    return list(_FIELDS.values())


#: Each knob's field, in the sections' order, and the section that holds it.
_FIELDS = {f.name: f for kind in SECTIONS.values() for f in dataclasses.fields(kind)}
_SECTION_OF = {f.name: name for name, kind in SECTIONS.items() for f in dataclasses.fields(kind)}


def _knob(section: str, name: str) -> property:
    """``cfg.NAME``: the knob of that name in ``cfg``'s ``section``."""
    return property(lambda self: getattr(getattr(self, section), name),
                    lambda self, value: setattr(getattr(self, section), name, value),
                    doc=_FIELDS[name].metadata["help"])


for _name, _section in _SECTION_OF.items():
    setattr(TrainConfig, _name, _knob(_section, _name))


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A TOML file's top-level table, its keys with underscores for dashes; one-line errors naming the file."""
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"{file}: {what} not found")
    try:
        raw = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{file}: invalid TOML ({exc})") from None
    return {k.replace("-", "_"): v for k, v in raw.items()}


def typed_fields(table: dict[str, Any], where: str, also: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``TrainConfig`` fields of ``table``, type-checked like flags; keys that are neither a field nor in
    ``also`` are refused, naming ``where``."""
    names = {f.name for f in config_fields()}
    table = {k.replace("-", "_"): v for k, v in table.items()}
    unknown = sorted(set(table) - names - set(also))
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return {key: check_type(key, value) for key, value in table.items() if key in names}
    except ValueError as exc:
        raise BadInput(f"{where}: key {exc}") from None


#: The paper setups and CPU runs shipped with the package, which ``--config configs/NAME.toml`` (the docs' spelling)
#: or ``--config NAME`` finds wherever gradpower is installed.
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_path(path: str | Path) -> Path:
    """``path`` itself when it is a file; else, when it names a shipped config (``configs/NAME.toml``,
    ``NAME.toml`` or ``NAME``), the shipped one."""
    file = Path(path)
    if file.is_file() or file.parent not in (Path("."), Path("configs")):
        return file
    shipped = SHIPPED_CONFIGS / (file.name if file.suffix == ".toml" else f"{file.name}.toml")
    return shipped if shipped.is_file() else file


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of ``TrainConfig`` keys (dashes or underscores; a shipped config by name, see
    :func:`config_path`); unknown keys are refused."""
    file = config_path(path)
    if not file.is_file():
        names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.toml")))
        raise BadInput(f"{file}: config file not found (shipped configs, by name: {names})")
    return typed_fields(read_toml(file), str(path))
