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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..invocation import program
from ..models import NORM_SCHEMES, PRESETS, preset, preset_lr
from ..models.config import INIT_SCHEMES
from ..optim import OPTIMIZERS, is_power_optimizer
from ..optim.muonpower import NS_DTYPES
from ..transform import check_p
from .distributed import PARALLEL_MODES
from .schedules import SCHEDULES


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """A training run. ``None`` means "derive it" (see each field's help)."""

    # model
    preset: str = _f("llama-tiny", "model preset: " + ", ".join(PRESETS))
    norm: str | None = _f(None, "normalisation scheme (default: the preset's, pre): " + ", ".join(NORM_SCHEMES))
    init: str = _f("normal", "weight init: normal (N(0, 0.02)) or gpas (the GPAS authors': embeddings N(0, sqrt(2/5)), "
                   "Xavier for plain DeepNorm)")
    mix_post_layers: int | None = _f(None, "Mix-LN: number of leading Post-LN layers (default: layers // 4)")
    # optimizer
    optim: str = _f("adampower", "optimizer: " + ", ".join(OPTIMIZERS))
    p: float = _f(1.2, "GradPower exponent for the *power optimizers; auto: measure the gradient noise for "
                  "--p-auto-steps steps (training with p = 1), then train with the predicted best p; track: start at "
                  "--p-start and re-choose p from the measured noise every --p-every steps")
    p_auto: bool = _f(False, "choose p from the measured gradient noise (what --p auto sets; p is then 1 until "
                      "it is chosen)")
    p_auto_steps: int = _f(20, "--p auto: warm-up steps whose gradients are measured before p is chosen")
    p_auto_noise: str = _f("gaussian", "--p auto and --p track: noise model of the prediction, gaussian or uniform")
    p_track: bool = _f(False, "re-choose p from the measured gradient noise as training goes (what --p track sets)")
    p_start: float = _f(1.0, "--p track: the p of the first steps (1: the base optimizer, before any noise is "
                        "measured)")
    p_every: int | None = _f(None, "--p track: steps between updates of p (default: 10% of --steps)")
    p_min: float = _f(0.5, "--p track: the smallest p it may choose")
    p_max: float = _f(2.0, "--p track: the largest p it may choose")
    p_step: float = _f(0.1, "--p track: the most p changes at one update")
    p_smooth: float = _f(0.5, "--p track: weight of the newest estimate in the smoothed p* (1: no smoothing)")
    noise_every: int = _f(0, "measure gradient noise every N steps and log it in metrics.jsonl (0: off, no cost)")
    lr: float | None = _f(None, "peak learning rate (default: the preset's tuned lr_max)")
    weight_decay: float = _f(0.1, "decoupled weight decay on matrices")
    beta1: float = _f(0.9, "Adam beta1")
    beta2: float = _f(0.95, "Adam beta2")
    eps: float = _f(1e-8, "Adam eps")
    blockwise_lr: bool = _f(False, "per-block lr multipliers (embedding 10x, q/k 8x, MLP 6x, v/o 4x)")
    decay_all: bool = _f(False, "weight decay on every parameter (default: matrices only)")
    momentum: float = _f(0.95, "momentum of Muon's half of muon/muonpower and of sgd/sgdpower")
    nesterov: bool = _f(True, "Nesterov momentum (muon/muonpower, sgd/sgdpower)")
    ns_dtype: str | None = _f(None, "MuonPower's Newton-Schulz dtype, bfloat16 or float32 (default: bfloat16 on CUDA "
                              "and on CPUs with native bf16 matrix instructions, float32 elsewhere)")
    fused: bool | None = _f(None, "torch's fused AdamW kernel for adamw/adampower and MuonPower's AdamW half "
                            "(default: the route rule of gradpower.optim.routes)")
    foreach: bool | None = _f(None, "torch's foreach kernels (default: the route rule of gradpower.optim.routes)")
    clip: float = _f(1.0, "global-norm clip of the raw gradient (0 disables)")
    gate_clip: float | None = _f(None, "GPAS gates: after the global clip (which includes them), clip the gates "
                                 "alone again to this norm (the GPAS authors' clip_gate_grad; default: off)")
    # schedule
    schedule: str = _f("cos", "lr schedule: " + ", ".join(SCHEDULES))
    warmup: int | None = _f(None, "linear warm-up steps (default: min(100, steps // 10))")
    min_lr_ratio: float = _f(0.1, "final lr as a fraction of the peak")
    stable_frac: float = _f(0.8, "wsd: fraction of steps before the decay starts")
    # batch
    steps: int = _f(1000, "optimizer steps")
    batch_size: int = _f(32, "global batch size in sequences")
    micro_batch_size: int | None = _f(None, "at most this many sequences per forward/backward on each process "
                                      "(default: the batch size over the processes; the largest divisor of that which "
                                      "fits is used, the rest accumulated)")
    seq_len: int | None = _f(None, "tokens per sequence (default: the preset's max_seq_len)")
    # data
    data: str = _f("shakespeare", "shakespeare (bundled), c4, openwebtext, a local file/folder, or stream:FILE.jsonl")
    tokenizer: str | None = _f(
        None, "bpe (train one) or a pretrained name/folder (default: t5-base for c4, gpt2 for openwebtext, else bpe)"
    )
    bpe_vocab_size: int | None = _f(None, "vocab size of a trained BPE (default: the model's)")
    val_fraction: float = _f(0.1, "fraction of documents held out for validation (the bundled corpus: about 113,000 "
                              "tokens, more than the final evaluation's --eval-tokens)")
    eval_batches: int = _f(8, "validation micro-batches per evaluation (the same ones every time)")
    eval_tokens: int = _f(65536, "tokens of the fixed held-out set of the final evaluation, the loss every verdict "
                          "uses (the same tokens for every arm and seed; at most the held-out split; 0: none)")
    cache_dir: str | None = _f(
        None, "where tokenizers and token shards are kept (default: $GRADPOWER_CACHE or ~/.cache/gradpower)"
    )
    verify_cache: bool = _f(False, "check the full sha256 of every cached token shard before training (default: "
                            "sizes and a checksum of each file's ends)")
    # run
    eval_every: int = _f(100, "evaluate every N steps (0: only at the end)")
    log_every: int = _f(10, "log metrics every N steps")
    ckpt_every: int = _f(0, "checkpoint every N steps (0: only at the end)")
    keep_ckpts: int = _f(2, "checkpoints to keep")
    out: str | None = _f(None, "run folder (default: runs/ plus the preset, the optimizer, every result-defining "
                         "field that differs from its default and the seed, e.g. runs/llama-tiny-adampower-s0 or "
                         "runs/llama-tiny-adampower-p1.4-steps200-s1)")
    resume: bool = _f(False, "continue from the latest checkpoint in the run folder, with the configuration "
                      "saved there (flags given change only what they name, e.g. --steps to train further)")
    overwrite: bool = _f(False, "start over in a --out folder that already holds a run or other files (deletes "
                         "the run's files there)")
    stop_after: int | None = _f(None, "stop after this many steps as if interrupted (time-boxed jobs); resume later")
    seed: int = _f(0, "random seed: model init and data order (each overridable below)")
    init_seed: int | None = _f(None, "seed of the model initialisation (default: --seed)")
    data_seed: int | None = _f(None, "seed of the data order (default: --seed)")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto (under torchrun: this rank's GPU)")
    parallel: str = _f("none", "none (one process), ddp or fsdp (FSDP2); ddp/fsdp run under torchrun, e.g. "
                       "'torchrun --nproc_per_node=8 -m gradpower train ... --parallel fsdp'")
    compile: bool = _f(False, "torch.compile the model (the first step pays the compile, logged)")
    dist_timeout: float = _f(600.0, "seconds a collective may wait for another process before this one gives up")
    tensorboard: bool = _f(False, "also log to TensorBoard (needs the tensorboard package)")
    wandb: bool = _f(False, "also log to Weights & Biases (needs the wandb package)")

    def __post_init__(self) -> None:
        if self.p == AUTO:  # --p auto, p=auto in arms and grids, and config.json files of earlier versions
            self.p, self.p_auto = 1.0, True
        elif self.p == TRACK:  # --p track, p=track in arms and grids
            self.p, self.p_track = self.p_start, True
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_type(f.name, getattr(self, f.name)))
        for name, label, valid in (("preset", "preset", PRESETS), ("norm", "norm", NORM_SCHEMES),
                                   ("init", "init", INIT_SCHEMES), ("optim", "optimizer", OPTIMIZERS),
                                   ("schedule", "schedule", SCHEDULES), ("parallel", "parallel mode", PARALLEL_MODES)):
            value = getattr(self, name)
            if value is not None and value not in valid:
                raise BadInput(f"unknown {label} {value!r}; valid: {', '.join(valid)}")
        check_p(self.p)
        if self.p_auto and not is_power_optimizer(self.optim):
            raise BadInput(f"p=auto chooses GradPower's exponent: it needs a *power optimizer, not {self.optim!r}")
        if self.p_auto_noise not in ("gaussian", "uniform"):
            raise BadInput(f"p_auto_noise must be gaussian or uniform, got {self.p_auto_noise!r}")
        if self.p_auto_steps < 1 or (self.p_auto and self.p_auto_steps >= self.steps):
            raise BadInput(f"p_auto_steps must be in [1, steps), got {self.p_auto_steps}")
        self._check_tracking()
        for name, value in self.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise BadInput(f"{name} must be a finite number, got {value}")
        for name in ("steps", "batch_size", "eval_batches"):
            if getattr(self, name) <= 0:
                raise BadInput(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("micro_batch_size", "seq_len", "lr", "gate_clip", "eps", "bpe_vocab_size", "dist_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BadInput(f"{name} must be > 0, got {value}")
        if self.ns_dtype is not None and self.ns_dtype not in NS_DTYPES:
            raise BadInput(f"unknown ns_dtype {self.ns_dtype!r}; valid: {', '.join(sorted(NS_DTYPES))}")
        if not 0 <= self.momentum < 1:
            raise BadInput(f"momentum must be in [0, 1), got {self.momentum}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise BadInput(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("min_lr_ratio", "stable_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise BadInput(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise BadInput(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("weight_decay", "clip", "eval_every", "log_every", "ckpt_every", "keep_ckpts", "noise_every",
                     "eval_tokens"):
            if getattr(self, name) < 0:
                raise BadInput(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup is not None and (self.warmup < 0 or (self.warmup >= self.steps and self.schedule != "constant")):
            raise BadInput(f"warmup must be in [0, steps), got warmup={self.warmup}, steps={self.steps}")
        if not _DEVICE.fullmatch(self.device):
            raise BadInput(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N, mps")

    def _check_tracking(self) -> None:
        if self.p_track and not is_power_optimizer(self.optim):
            raise BadInput(f"p=track chooses GradPower's exponent: it needs a *power optimizer, not {self.optim!r}")
        if self.p_track and self.p_auto:
            raise BadInput("p is either auto (chosen once) or track (re-chosen as training goes), not both")
        if not 0 < self.p_min <= self.p_start <= self.p_max:
            raise BadInput(f"--p track needs 0 < p_min <= p_start <= p_max, got p_min={self.p_min}, "
                           f"p_start={self.p_start}, p_max={self.p_max}")
        check_p(self.p_max)
        if not self.p_step > 0 or not 0 < self.p_smooth <= 1:
            raise BadInput(f"--p track needs p_step > 0 and p_smooth in (0, 1], got p_step={self.p_step}, "
                           f"p_smooth={self.p_smooth}")
        if self.p_every is not None and not 1 <= self.p_every <= self.steps:
            raise BadInput(f"p_every must be in [1, steps] (steps = {self.steps}), got {self.p_every}")

    @property
    def p_every_steps(self) -> int:
        """``p_every``, or by default 10% of the steps (at least 1): ten updates of p per run."""
        return self.p_every or max(1, self.steps // 10)

    @property
    def warmup_steps(self) -> int:
        """``warmup``, or by default min(100, steps // 10): short runs keep a proportionate warm-up."""
        return min(100, self.steps // 10) if self.warmup is None else self.warmup

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
        return dataclasses.asdict(self)

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
        names = {f.name for f in dataclasses.fields(cls)}
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


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
#: ``--p auto``: choose p from the measured gradient noise.
AUTO = "auto"
#: ``--p track``: re-choose p from the measured gradient noise as training goes.
TRACK = "track"
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
    for name, hint in typing.get_type_hints(TrainConfig).items():
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
    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
    if value is None and default is None:
        return value
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise BadInput(f"{name} must be {_TYPE_NAMES[kind]}, got {value!r} ({type(value).__name__})")
    return value


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


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
