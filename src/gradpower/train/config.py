"""``TrainConfig``: every knob of a training run, one dataclass field each.

The ``help`` metadata of each field is what ``gradpower train --help`` shows,
and TOML config files use the field names as keys, so the dataclass is the
single source of truth for the command line, config files and run folders.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import NORM_SCHEMES, PRESETS
from ..optim import OPTIMIZERS
from ..transform import check_p
from .schedules import SCHEDULES


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """A training run. ``None`` means "derive it" (see each field's help)."""

    # model
    preset: str = _f("llama-tiny", "model preset: " + ", ".join(PRESETS))
    norm: str | None = _f(None, "normalisation scheme (default: the preset's, pre): " + ", ".join(NORM_SCHEMES))
    # optimizer
    optim: str = _f("adampower", "optimizer: " + ", ".join(OPTIMIZERS))
    p: float = _f(1.2, "GradPower exponent for the *power optimizers")
    lr: float | None = _f(None, "peak learning rate (default: the preset's tuned lr_max)")
    weight_decay: float = _f(0.1, "decoupled weight decay on matrices")
    beta1: float = _f(0.9, "Adam beta1")
    beta2: float = _f(0.95, "Adam beta2")
    eps: float = _f(1e-8, "Adam eps")
    blockwise_lr: bool = _f(False, "per-block lr multipliers (embedding 10x, q/k 8x, MLP 6x, v/o 4x)")
    clip: float = _f(1.0, "global-norm clip of the raw gradient (0 disables)")
    gate_clip: float | None = _f(None, "separate global-norm clip for GPAS gates (default: clipped with the rest)")
    # schedule
    schedule: str = _f("cos", "lr schedule: " + ", ".join(SCHEDULES))
    warmup: int = _f(100, "linear warm-up steps")
    min_lr_ratio: float = _f(0.1, "final lr as a fraction of the peak")
    stable_frac: float = _f(0.8, "wsd: fraction of steps before the decay starts")
    # batch
    steps: int = _f(1000, "optimizer steps")
    batch_size: int = _f(32, "global batch size in sequences")
    micro_batch_size: int | None = _f(None, "sequences per forward/backward (default: batch size; accumulates the rest)")
    seq_len: int | None = _f(None, "tokens per sequence (default: the preset's max_seq_len)")
    # data
    data: str = _f("shakespeare", "shakespeare (bundled), c4, openwebtext, a local file/folder, or stream:FILE.jsonl")
    tokenizer: str | None = _f(None, "bpe (train one) or a pretrained name/folder (default: t5-base for c4, gpt2 for openwebtext, else bpe)")
    bpe_vocab_size: int | None = _f(None, "vocab size of a trained BPE (default: the model's)")
    val_fraction: float = _f(0.02, "fraction of documents held out for validation")
    eval_batches: int = _f(8, "validation micro-batches per evaluation (the same ones every time)")
    cache_dir: str | None = _f(None, "where tokenizers and token shards are kept (default: $GRADPOWER_CACHE or ~/.cache/gradpower)")
    # run
    eval_every: int = _f(100, "evaluate every N steps (0: only at the end)")
    log_every: int = _f(10, "log metrics every N steps")
    ckpt_every: int = _f(0, "checkpoint every N steps (0: only at the end)")
    keep_ckpts: int = _f(2, "checkpoints to keep")
    out: str | None = _f(None, "run folder (default: runs/PRESET-OPTIM-sSEED)")
    resume: bool = _f(False, "continue from the latest checkpoint in the run folder")
    stop_after: int | None = _f(None, "stop after this many steps as if interrupted (time-boxed jobs); resume later")
    seed: int = _f(0, "random seed (model init and data order)")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    tensorboard: bool = _f(False, "also log to TensorBoard (needs the tensorboard package)")
    wandb: bool = _f(False, "also log to Weights & Biases (needs the wandb package)")

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}")
        if self.norm is not None and self.norm not in NORM_SCHEMES:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {', '.join(NORM_SCHEMES)}")
        if self.optim not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optim!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        check_p(self.p)
        for name in ("steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("micro_batch_size", "seq_len", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.batch_size % self.micro:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro}")
        if self.warmup < 0 or (self.warmup >= self.steps and self.schedule != "constant"):
            raise ValueError(f"warmup must be in [0, steps), got warmup={self.warmup}, steps={self.steps}")
        for name in ("eval_every", "log_every", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.preset}-{self.optim}-s{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of ``TrainConfig`` keys (dashes or underscores); unknown keys are refused."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{file}: config file not found")
    try:
        raw = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{file}: invalid TOML ({exc})") from exc
    names = {f.name for f in config_fields()}
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{file}: unknown key(s) {', '.join(unknown)}")
    return values
