"""The sections of a training run's configuration, in torchtitan's shape: model, optimizer, power, schedule, data
and run. Each is a dataclass of its knobs (one field each, with the help ``gradpower train --help`` shows) and
owns the checks of its own values (``check``, given the whole :class:`gradpower.train.TrainConfig` for the few
rules that span sections). The configuration holds one of each (``cfg.model``, ``cfg.optimizer``, ``cfg.power``,
``cfg.lr_schedule``, ``cfg.dataset``, ``cfg.run``) and reads every knob by its own name too, so the flags, TOML
keys and ``config.json`` files keep the flat names.

A new knob is one field in the section it belongs to: its flag, TOML key, type check, run-folder name and help
follow from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput
from ..models import NORM_SCHEMES, PRESETS
from ..models.config import INIT_SCHEMES
from ..optim import OPTIMIZERS, is_power_optimizer
from ..optim.muonpower import NS_DTYPES
from ..optim.power_controller import PowerController, check_noise_model
from ..transform import check_p
from .distributed import PARALLEL_MODES
from .schedules import SCHEDULES

#: ``--p auto``: choose p from the measured gradient noise.
AUTO = "auto"
#: ``--p track``: re-choose p from the measured gradient noise as training goes.
TRACK = "track"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def knob(default: Any, help: str) -> Any:
    """A configuration field: its default and the help its flag shows."""
    return field(default=default, metadata={"help": help})


def _one_of(value: Any, valid: Any, label: str) -> None:
    if value is not None and value not in valid:
        raise BadInput(f"unknown {label} {value!r}; valid: {', '.join(valid)}")


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise BadInput(f"{name} must be > 0, got {value}")


def _not_negative(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise BadInput(f"{name} must be >= 0, got {getattr(cfg, name)}")


def _fraction(cfg: Any, *names: str, closed: bool = True) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (0 <= value <= 1 if closed else 0 <= value < 1):
            raise BadInput(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")


@dataclass
class ModelSection:
    """Which model: the preset, its normalisation scheme and initialisation."""

    preset: str = knob("llama-tiny", "model preset: " + ", ".join(PRESETS))
    norm: str | None = knob(None, "normalisation scheme (default: the preset's, pre): " + ", ".join(NORM_SCHEMES))
    init: str = knob("normal", "weight init: normal (N(0, 0.02)) or gpas (the GPAS authors': embeddings "
                     "N(0, sqrt(2/5)), Xavier for plain DeepNorm)")
    mix_post_layers: int | None = knob(None, "Mix-LN: number of leading Post-LN layers (default: layers // 4)")

    def check(self, cfg: Any) -> None:
        """The names are known ones."""
        _one_of(self.preset, PRESETS, "preset")
        _one_of(self.norm, NORM_SCHEMES, "norm")
        _one_of(self.init, INIT_SCHEMES, "init")


@dataclass
class OptimizerSection:
    """The optimizer and its hyper-parameters (``p`` and its choice are :class:`PowerSection`'s), and clipping."""

    optim: str = knob("adampower", "optimizer: " + ", ".join(OPTIMIZERS))
    lr: float | None = knob(None, "peak learning rate (default: the preset's tuned lr_max)")
    weight_decay: float = knob(0.1, "decoupled weight decay on matrices")
    beta1: float = knob(0.9, "Adam beta1")
    beta2: float = knob(0.95, "Adam beta2")
    eps: float = knob(1e-8, "Adam eps")
    blockwise_lr: bool = knob(False, "per-block lr multipliers (embedding 10x, q/k 8x, MLP 6x, v/o 4x)")
    decay_all: bool = knob(False, "weight decay on every parameter (default: matrices only)")
    momentum: float = knob(0.95, "momentum of Muon's half of muon/muonpower and of sgd/sgdpower")
    nesterov: bool = knob(True, "Nesterov momentum (muon/muonpower, sgd/sgdpower)")
    ns_dtype: str | None = knob(None, "MuonPower's Newton-Schulz dtype, bfloat16 or float32 (default: bfloat16 on "
                                "CUDA; on a CPU the faster of the two, measured once per machine)")
    fused: bool | None = knob(None, "torch's fused AdamW kernel for adamw/adampower and MuonPower's AdamW half "
                              "(default: the route rule of gradpower.optim.routes)")
    foreach: bool | None = knob(None, "torch's foreach kernels (default: the route rule of gradpower.optim.routes)")
    clip: float = knob(1.0, "global-norm clip of the raw gradient (0 disables)")
    gate_clip: float | None = knob(None, "GPAS gates: after the global clip (which includes them), clip the gates "
                                   "alone again to this norm (the GPAS authors' clip_gate_grad; default: off)")

    def check(self, cfg: Any) -> None:
        """Names known, rates positive, betas and momentum in [0, 1)."""
        _one_of(self.optim, OPTIMIZERS, "optimizer")
        _positive(self, "lr", "eps", "gate_clip")
        _not_negative(self, "weight_decay", "clip")
        _fraction(self, "momentum", "beta1", "beta2", closed=False)
        if self.ns_dtype is not None and self.ns_dtype not in NS_DTYPES:
            raise BadInput(f"unknown ns_dtype {self.ns_dtype!r}; valid: {', '.join(sorted(NS_DTYPES))}")


#: The controller's argument names as the configuration spells them, so its messages name the flags.
_CONTROLLER_NAMES = {"every": "p_every", "start": "p_start", "max_change": "p_step", "smoothing": "p_smooth",
                     "noise": "p_auto_noise"}


@dataclass
class PowerSection:
    """GradPower's exponent: fixed (``p`` a number), ``auto`` (chosen once from the measured gradient noise) or
    ``track`` (re-chosen as training goes by a :class:`~gradpower.optim.PowerController`, which this section
    builds and whose checks are the rule), and the gradient-noise measurements."""

    p: float = knob(1.2, "GradPower exponent for the *power optimizers; auto: measure the gradient noise for "
                    "--p-auto-steps steps (training with p = 1), then train with the predicted best p; track: start at "
                    "--p-start and re-choose p from the measured noise every --p-every steps")
    p_auto: bool = knob(False, "choose p from the measured gradient noise (what --p auto sets; p is then 1 until "
                        "it is chosen)")
    p_auto_steps: int = knob(20, "--p auto: warm-up steps whose gradients are measured before p is chosen")
    p_auto_noise: str = knob("gaussian", "--p auto and --p track: noise model of the prediction, gaussian or uniform")
    p_track: bool = knob(False, "re-choose p from the measured gradient noise as training goes (what --p track sets)")
    p_start: float = knob(1.0, "--p track: the p of the first steps (1: the base optimizer, before any noise is "
                          "measured)")
    p_every: int | None = knob(None, "--p track: steps between updates of p (default: 10% of --steps)")
    p_min: float = knob(0.5, "--p track: the smallest p it may choose")
    p_max: float = knob(2.0, "--p track: the largest p it may choose")
    p_step: float = knob(0.1, "--p track: the most p changes at one update")
    p_smooth: float = knob(0.5, "--p track: weight of the newest estimate in the smoothed p* (1: no smoothing)")
    noise_every: int = knob(0, "measure gradient noise every N steps and log it in metrics.jsonl (0: off, no cost)")

    def resolve_mode(self) -> None:
        """``p = "auto"`` / ``"track"`` (flags, arms, grids, older config.json files) -> the mode's flag and the p
        the run starts with."""
        if self.p == AUTO:
            self.p, self.p_auto = 1.0, True
        elif self.p == TRACK:
            self.p, self.p_track = self.p_start, True

    @property
    def mode(self) -> str:
        """``fixed``, ``auto`` or ``track``."""
        return AUTO if self.p_auto else TRACK if self.p_track else "fixed"

    def every_steps(self, steps: int) -> int:
        """``p_every``, or by default 10% of ``steps`` (at least 1): ten updates of p per run."""
        return self.p_every or max(1, steps // 10)

    def check(self, cfg: Any) -> None:
        """p valid; auto and track need a power optimizer and exclude each other; track's values are the ones its
        controller accepts."""
        check_p(self.p)
        if self.p_track and self.p_auto:
            raise BadInput("p is either auto (chosen once) or track (re-chosen as training goes), not both")
        if self.mode != "fixed" and not is_power_optimizer(cfg.optim):
            raise BadInput(f"p={self.mode} chooses GradPower's exponent: it needs a *power optimizer, not "
                           f"{cfg.optim!r}")
        check_noise_model(self.p_auto_noise, "p_auto_noise")
        if self.p_auto_steps < 1 or (self.p_auto and self.p_auto_steps >= cfg.steps):
            raise BadInput(f"p_auto_steps must be in [1, steps), got {self.p_auto_steps}")
        if self.p_every is not None and not 1 <= self.p_every <= cfg.steps:
            raise BadInput(f"p_every must be in [1, steps] (steps = {cfg.steps}), got {self.p_every}")
        _not_negative(self, "noise_every")
        try:
            self.controller(cfg.steps, cfg.eps)
        except BadInput as exc:
            words = re.sub(r"\b(" + "|".join(_CONTROLLER_NAMES) + r")\b", lambda m: _CONTROLLER_NAMES[m.group(0)],
                           str(exc).removeprefix("PowerController: "))
            raise BadInput(f"--p track: {words}") from None

    def controller(self, steps: int, eps: float, **runtime: Any) -> PowerController | None:
        """``--p track``'s controller for a run of ``steps`` (None in the other modes); ``runtime``: its
        ``sample``, ``read`` and ``broadcast``."""
        if not self.p_track:
            return None
        return PowerController(self.every_steps(steps), self.p_start, self.p_min, self.p_max, self.p_step,
                               self.p_smooth, eps=eps, noise=self.p_auto_noise, **runtime)


@dataclass
class ScheduleSection:
    """How long and at which learning rates: the schedule, the steps, the warm-up and the decay."""

    schedule: str = knob("cos", "lr schedule: " + ", ".join(SCHEDULES))
    steps: int = knob(1000, "optimizer steps")
    warmup: int | None = knob(None, "linear warm-up steps (default: min(100, steps // 10))")
    min_lr_ratio: float = knob(0.1, "final lr as a fraction of the peak")
    stable_frac: float = knob(0.8, "wsd: fraction of steps before the decay starts")

    @property
    def warmup_steps(self) -> int:
        """``warmup``, or by default min(100, steps // 10): short runs keep a proportionate warm-up."""
        return min(100, self.steps // 10) if self.warmup is None else self.warmup

    def check(self, cfg: Any) -> None:
        """A known schedule, steps > 0, fractions in [0, 1], the warm-up shorter than the run."""
        _one_of(self.schedule, SCHEDULES, "schedule")
        _positive(self, "steps")
        _fraction(self, "min_lr_ratio", "stable_frac")
        if self.warmup is not None and (self.warmup < 0 or (self.warmup >= self.steps and self.schedule != "constant")):
            raise BadInput(f"warmup must be in [0, steps), got warmup={self.warmup}, steps={self.steps}")


@dataclass
class DataSection:
    """What is read and in which shape: the corpus, its tokenizer, the batch and the held-out evaluations."""

    data: str = knob("shakespeare", "shakespeare (bundled), c4, openwebtext, a local file/folder, or stream:FILE.jsonl")
    tokenizer: str | None = knob(
        None, "bpe (train one) or a pretrained name/folder (default: t5-base for c4, gpt2 for openwebtext, else bpe)"
    )
    bpe_vocab_size: int | None = knob(None, "vocab size of a trained BPE (default: the model's)")
    batch_size: int = knob(32, "global batch size in sequences")
    micro_batch_size: int | None = knob(None, "at most this many sequences per forward/backward on each process "
                                        "(default: the batch size over the processes; the largest divisor of that "
                                        "which fits is used, the rest accumulated)")
    seq_len: int | None = knob(None, "tokens per sequence (default: the preset's max_seq_len)")
    val_fraction: float = knob(0.1, "fraction of documents held out for validation (the bundled corpus: about 113,000 "
                              "tokens, more than the final evaluation's --eval-tokens)")
    eval_batches: int = knob(8, "validation micro-batches per evaluation (the same ones every time)")
    eval_tokens: int = knob(65536, "tokens of the fixed held-out set of the final evaluation, the loss every verdict "
                            "uses (the same tokens for every arm and seed; at most the held-out split; 0: none)")
    cache_dir: str | None = knob(
        None, "where tokenizers and token shards are kept (default: $GRADPOWER_CACHE or ~/.cache/gradpower)"
    )
    verify_cache: bool = knob(False, "check the full sha256 of every cached token shard before training (default: "
                              "sizes and a checksum of each file's ends)")

    def check(self, cfg: Any) -> None:
        """Sizes positive, the held-out fraction in (0, 1)."""
        _positive(self, "batch_size", "eval_batches", "micro_batch_size", "seq_len", "bpe_vocab_size")
        _not_negative(self, "eval_tokens")
        if not 0 < self.val_fraction < 1:
            raise BadInput(f"val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class RunSection:
    """The seeds, and where and how the run executes, evaluates, logs and checkpoints (all but the seeds and
    ``eval_every`` leave its result unchanged: :data:`gradpower.train.config.RUN_CONTROL`)."""

    seed: int = knob(0, "random seed: model init and data order (each overridable below)")
    init_seed: int | None = knob(None, "seed of the model initialisation (default: --seed)")
    data_seed: int | None = knob(None, "seed of the data order (default: --seed)")
    eval_every: int = knob(100, "evaluate every N steps (0: only at the end)")
    log_every: int = knob(10, "log metrics every N steps")
    ckpt_every: int = knob(0, "checkpoint every N steps (0: only at the end)")
    keep_ckpts: int = knob(2, "checkpoints to keep")
    out: str | None = knob(None, "run folder (default: runs/ plus the preset, the optimizer, every result-defining "
                           "field that differs from its default and the seed, e.g. runs/llama-tiny-adampower-s0 or "
                           "runs/llama-tiny-adampower-p1.4-steps200-s1)")
    resume: bool = knob(False, "continue from the latest checkpoint in the run folder, with the configuration "
                        "saved there (flags given change only what they name, e.g. --steps to train further)")
    overwrite: bool = knob(False, "start over in a --out folder that already holds a run or other files (deletes "
                           "the run's files there)")
    stop_after: int | None = knob(None, "stop after this many steps as if interrupted (time-boxed jobs); resume later")
    device: str = knob("auto", "cpu, cuda, cuda:N or auto (under torchrun: this rank's GPU)")
    parallel: str = knob("none", "none (one process), ddp or fsdp (FSDP2); ddp/fsdp run under torchrun, e.g. "
                         "'torchrun --nproc_per_node=8 -m gradpower train ... --parallel fsdp'")
    compile: bool = knob(False, "torch.compile the model (the first step pays the compile, logged)")
    dist_timeout: float = knob(600.0, "seconds a collective may wait for another process before this one gives up")
    tensorboard: bool = knob(False, "also log to TensorBoard (needs the tensorboard package)")
    wandb: bool = knob(False, "also log to Weights & Biases (needs the wandb package)")

    def check(self, cfg: Any) -> None:
        """Cadences not negative, a known device and parallel mode."""
        _not_negative(self, "eval_every", "log_every", "ckpt_every", "keep_ckpts")
        _positive(self, "dist_timeout")
        _one_of(self.parallel, PARALLEL_MODES, "parallel mode")
        if not _DEVICE.fullmatch(self.device):
            raise BadInput(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N, mps")


#: Each section's name in :class:`~gradpower.train.TrainConfig` and its class, in the order of ``--help``.
#: (``lr_schedule`` and ``dataset``: ``schedule`` and ``data`` are knobs' names.)
SECTIONS: dict[str, type] = {"model": ModelSection, "optimizer": OptimizerSection, "power": PowerSection,
                             "lr_schedule": ScheduleSection, "dataset": DataSection, "run": RunSection}
