"""``train(config)``: the training loop, readable top to bottom.

Per optimizer step: forward/backward over micro-batches (gradient
accumulation), then clip the raw gradient, then ``optimizer.step()`` (which
applies phi_p to the final gradient for the *power optimizers), then the lr
schedule. Evaluation (:mod:`.evaluate`), metrics and checkpoints happen between steps. The loop
keeps no global state; rank and world size live in :class:`Runtime` so data
parallelism can be added around it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__, interrupts
from ..data.pipeline import Data, build_data
from ..diagnostics.predict import FLAT_FRACTION, edge_warning, flat_text
from ..fileio import atomic_write_text, warn
from ..models import build_model, count_params
from ..models.proxy import MAX_PASSES
from ..optim import build_optimizer, is_power_optimizer
from .assemble import check_before_start, data_config, hardware_choices, model_config_for
from .checkpoint import (
    CheckpointError,
    check_model_config,
    load_latest,
    restore_model_and_optimizer,
    save_training_checkpoint,
    step_of,
    training_state,
)
from .config import TrainConfig, resume_command, resume_differences
from .distributed import PeerLostError, Runtime, full_value, micro_batch_sync, parallelize, peer_lost, unwrap
from .distributed import runtime as runtime_for
from .evaluate import Evaluations, FinalEval
from .metrics import MetricsLogger, truncate_metrics
from .noise_monitor import NoiseMonitor
from .run_folder import open_run_folder
from .schedules import build_scheduler, restore_scheduler


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the run stopped before updating."""


@dataclass
class TrainResult:
    """A run's folder, steps done, last regular val loss, last checkpoint, and its final evaluation (when it
    reached its last step with ``eval_tokens`` > 0)."""

    run_dir: Path
    steps: int
    final_val_loss: float | None
    last_checkpoint: Path | None
    final_eval: FinalEval | None = None


def accumulate_gradients(
    model: nn.Module, micro_batches: list[torch.Tensor], runtime: Runtime, aux_coef: float = 0.0,
    probe: Any = None,
) -> torch.Tensor:
    """Backward over micro-batches so ``.grad`` holds the mean-loss gradient of their union.

    Each micro-batch's loss is divided by the number of micro-batches (all
    have the same number of predicted tokens: sequences are packed, never
    padded). Under DDP/FSDP2 gradients are reduced on the last micro-batch
    only. Returns the mean LM loss over micro-batches and ranks (without the
    MoE aux term), detached, on the device: no host sync here.
    """
    total = torch.zeros((), device=runtime.device)
    n = len(micro_batches)
    if probe is not None:  # observes each micro-batch's gradient; never writes .grad
        probe.start_step(n, micro_batches[0].shape[0])
    for i, batch in enumerate(micro_batches):
        x = batch.to(runtime.device, non_blocking=True)
        with micro_batch_sync(model, runtime, last=i == n - 1), runtime.autocast():
            out = model(x, labels=x)
            loss = out.loss
            if out.aux_loss is not None and aux_coef:
                loss = loss + aux_coef * out.aux_loss
            (loss / n).backward()
        total += out.loss.detach().float()
        if probe is not None:
            probe.after_backward()
    if probe is not None:
        probe.end_step()
    return runtime.mean(total / n)


def clip_gradients(model: nn.Module, clip: float, gate_clip: float | None) -> torch.Tensor:
    """Global-norm clip of the raw gradient, then (``gate_clip``) the GPAS gates alone again.

    As in the GPAS authors' code: every parameter, gates included, is clipped
    to the global norm ``clip`` first; then the gates alone are clipped to
    ``gate_clip``. Returns the pre-clip global norm of every gradient (of the
    full gradient under FSDP2, not of this rank's shard), as a device tensor.
    """
    norm = full_value(torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip if clip > 0 else math.inf))
    if gate_clip is not None:
        gates = [param for name, param in model.named_parameters() if name.endswith("gpas.gate")]
        if gates:
            torch.nn.utils.clip_grad_norm_(gates, gate_clip)
    return norm


def environment(runtime: Runtime, cfg: TrainConfig) -> dict[str, Any]:
    env: dict[str, Any] = {
        "gradpower": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(runtime.device), "seed": cfg.seed,
        "threads": torch.get_num_threads(), "world_size": runtime.world_size,
    }
    if runtime.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(runtime.device)
        env["cuda"] = torch.version.cuda
    with contextlib.suppress(ImportError):
        import transformers

        env["transformers"] = transformers.__version__
    return env


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def parameters_finite(model: torch.nn.Module, rt: Runtime) -> bool:
    """True when every parameter (every rank's shard) is finite: one reduction and one sync per checkpoint."""
    local = [p.detach().to_local() if hasattr(p, "to_local") else p.detach() for p in model.parameters()]
    finite = bool(torch.stack([t.isfinite().all() for t in local]).all())
    return not rt.agree(not finite)


@dataclass
class StepResult:
    """What one training step returns: the mean LM loss and the pre-clip global gradient norm, on the device."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    host: tuple[float, float] | None = None  # both as floats, once :meth:`to_host` has synced

    def to_host(self) -> tuple[float, float]:
        """Both values as floats, in one host sync (the first call only)."""
        if self.host is None:
            loss, grad_norm = torch.stack([self.loss.float(), self.grad_norm.float().to(self.loss.device)]).tolist()
            self.host = (loss, grad_norm)
        return self.host


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[torch.Tensor], runtime: Runtime, *,
    clip: float = 1.0, gate_clip: float | None = None, aux_coef: float = 0.0, scheduler: Any = None,
    probe: Any = None, before_update: Callable[[StepResult], None] | None = None,
) -> StepResult:
    """One optimizer step: forward and backward over ``micro_batches`` (their gradients accumulated), the
    global-norm clip of the raw gradient, ``before_update`` (e.g. the NaN/inf stop), the update (phi_p inside
    the power optimizers' step), the lr schedule, and ``zero_grad``. No host sync of its own."""
    loss = accumulate_gradients(model, micro_batches, runtime, aux_coef, probe)
    result = StepResult(loss, clip_gradients(model, clip, gate_clip))
    if before_update is not None:
        before_update(result)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return result


@dataclass
class _Session:
    """One invocation's bookkeeping of a run: where it stops, its clock, its logger."""

    logger: MetricsLogger
    stop_at: int
    tokens_per_step: int
    start_step: int
    elapsed_before: float
    compiling: str
    start_time: float = dataclasses.field(default_factory=time.perf_counter)
    first_step_end: float = 0.0

    def __post_init__(self) -> None:
        self.first_step_end = self.start_time


class InterruptedRun(RuntimeError):
    """SIGINT/SIGTERM stopped the run at a step boundary.

    ``what`` says where it stopped and which checkpoint was written; the
    message adds the command that continues the run in ``run_dir``.
    """

    def __init__(self, what: str, run_dir: Path | None = None) -> None:
        self.what = what
        super().__init__(what + (f"; continue with: {resume_command(run_dir)}" if run_dir is not None else ""))


class Trainer:
    """Holds one run's objects; :func:`train` is the entry point."""

    def __init__(self, cfg: TrainConfig, runtime: Runtime) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.micro_batch = cfg.micro_batch(runtime.world_size)
        base_cfg = model_config_for(cfg)
        self.data: Data = build_data(
            data_config(cfg),
            seq_len=base_cfg.max_seq_len, micro_batch_size=self.micro_batch, seed=cfg.effective_data_seed,
            vocab_size=base_cfg.vocab_size, rank=runtime.rank, world_size=runtime.world_size,
        )
        self.model_config = model_config_for(cfg, self.data.tokenizer.vocab_size)
        # Arms of one seed start from identical weights, whatever the process count.
        self.model = parallelize(
            lambda device: build_model(self.model_config, device), runtime, cfg.effective_init_seed
        )
        if cfg.compile:
            self.model.compile()  # in place: parameter names and state dicts stay the model's own
        self.evaluations = Evaluations(self.model, self.data.val, self.data.final_val, runtime, cfg.eval_every,
                                       cfg.steps)
        self.lr = cfg.resolved_lr
        self.noise = NoiseMonitor(cfg, unwrap(self.model), runtime)
        options = cfg.optimizer_options()
        if self.noise.controller is not None:  # --p track: the optimizer's p is the controller
            options["p"] = self.noise.controller
        self.optimizer = build_optimizer(cfg.optim, unwrap(self.model).named_parameters(), **options)
        schedule = dict(
            warmup=cfg.warmup_steps, total=cfg.steps, min_ratio=cfg.min_lr_ratio, stable_frac=cfg.stable_frac
        )
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, **schedule)
        self.aux_coef = float(getattr(self.model_config, "aux_loss_coef", 0.0))
        self.step = 0
        self.last_checkpoint: Path | None = None

    # -- checkpoints -------------------------------------------------------
    def save(self) -> None:
        """Checkpoint the current step, unless the parameters are not finite (never write a poisoned one)."""
        if not parameters_finite(self.model, self.runtime):
            raise NonFiniteLossError(
                f"parameters are not finite after step {self.step} (the update overflowed; lower the lr?); no "
                f"checkpoint was written for it. Last good checkpoint: {self.last_checkpoint or 'none written yet'}"
            )
        state = training_state(self.step, self.scheduler, self.data.train, self.model_config.to_dict(),
                               self.cfg.to_dict(), self.data.tokenizer.fingerprint, self.runtime.device)
        state["noise"] = self.noise.state_dict()
        self.last_checkpoint = save_training_checkpoint(self.ckpt_dir, self.model, self.optimizer, state,
                                                        self.cfg.keep_ckpts, self.runtime)

    def resume(self) -> None:
        found = load_latest(self.ckpt_dir)
        if found is None:
            raise CheckpointError(f"--resume: no checkpoint in {self.ckpt_dir}: nothing to resume (the run stopped "
                                  "before its first checkpoint); start again with --overwrite")
        path, ckpt = found
        changed = resume_differences(json.loads(ckpt["train_config"]), self.cfg)
        if changed:
            raise CheckpointError(
                f"{path} was trained with another configuration ({'; '.join(changed)}); a resumed run keeps the "
                "configuration it was started with: drop those flags (--resume takes the saved values) or choose "
                "another --out"
            )
        check_model_config(ckpt, self.model_config.to_dict(), path)
        if ckpt["tokenizer"] != self.data.tokenizer.fingerprint:
            raise CheckpointError(f"{path} was trained with another tokenizer ({ckpt['tokenizer']})")
        restore_model_and_optimizer(path, ckpt, self.model, self.optimizer, self.runtime)
        restore_scheduler(self.scheduler, ckpt["scheduler"])
        self.data.train.load_state_dict(ckpt["data"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.runtime.device)
        self.step = int(ckpt["step"])
        self.noise.load_state_dict(ckpt.get("noise"), self.optimizer)
        self.last_checkpoint = path

    # -- the loop ------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train from the current step to ``steps`` (or ``stop_after`` more): a train step, then the after-step
        sequence, until done."""
        cfg, runtime = self.cfg, self.runtime
        if cfg.resume:
            self.resume()
        session = self._start_session()
        accum = cfg.accumulation_steps(runtime.world_size)
        with contextlib.closing(session.logger):
            while self.step < session.stop_at:
                started, lr, upcoming = time.perf_counter(), self.applied_lr(), self.step + 1
                checked = self._checks(upcoming, session.stop_at)
                result = self.train_step([self.data.train.next() for _ in range(accum)], upcoming,
                                         self._stop_if_not_finite if checked else None)
                self.step += 1
                self._after_step(session, time.perf_counter() - started, lr, result.host)
        return self._end_session(session)

    def train_step(self, micro_batches: list[torch.Tensor], step: int,
                   before_update: Callable[[StepResult], None] | None = None) -> StepResult:
        """Step ``step`` of this run on ``micro_batches`` (see :func:`train_step`), noise probes included."""
        return train_step(self.model, self.optimizer, micro_batches, self.runtime, clip=self.cfg.clip,
                          gate_clip=self.cfg.gate_clip, aux_coef=self.aux_coef, scheduler=self.scheduler,
                          probe=self.noise.probe(step), before_update=before_update)

    def _checks(self, step: int, stop_at: int) -> bool:
        """Whether ``step`` syncs with the host: it is logged, evaluated, checkpointed or reports noise."""
        return (step % self.cfg.log_every == 0 or step == stop_at or self.evaluations.due(step)
                or self._checkpoints(step, stop_at) or self.noise.reports(step))

    def _stop_if_not_finite(self, result: StepResult) -> None:
        """The only host sync of a step, on checked steps only (every step with --log-every 1): the NaN/inf
        stop needs both values before the update. Between checked steps a NaN goes unseen for at most
        log_every - 1 steps; checkpoints check the parameters first, so a poisoned one is never written."""
        loss, grad_norm = result.to_host()
        for what, value in (("loss", loss), ("gradient norm", grad_norm)):
            if not math.isfinite(value):
                raise NonFiniteLossError(self._stop_message(what, value))

    def _start_session(self) -> _Session:
        """Files of this session (metrics truncated on resume, config, environment), the logger, the first line."""
        cfg, runtime = self.cfg, self.runtime
        elapsed_before = 0.0  # wall time of earlier sessions of this run, so elapsed_s is cumulative
        if runtime.is_main:
            if cfg.resume:
                elapsed_before = truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
            else:
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            self._write_config()
            _write_json(self.run_dir / "env.json", environment(runtime, cfg))
        logger = MetricsLogger(
            self.run_dir, cfg.steps, self.step, enabled=runtime.is_main, tensorboard=cfg.tensorboard, wandb=cfg.wandb,
            wandb_config=cfg.to_dict(),
        )
        counts = count_params(self.model_config)
        session = _Session(logger=logger, stop_at=cfg.steps if cfg.stop_after is None else min(
            cfg.steps, self.step + cfg.stop_after), tokens_per_step=cfg.batch_size * self.model_config.max_seq_len,
            start_step=self.step, elapsed_before=elapsed_before, compiling=self._compiling())
        power = (f" p=track (from {cfg.p_start:g}, every {cfg.p_every_steps} steps)" if cfg.p_track
                 else f" p={cfg.p}") if is_power_optimizer(cfg.optim) else ""
        logger.message(
            f"{cfg.preset} ({counts.total / 1e6:.1f}M params, norm={self.model_config.norm}) | {cfg.optim} "
            f"lr={self.lr:g}{power} {cfg.schedule} | {cfg.steps} steps x {session.tokens_per_step} tokens | "
            f"data={cfg.data} tokenizer={self.data.tokenizer.label} | {runtime.device}"
            + (f" | resumed at step {self.step}" if cfg.resume else "")
        )
        passes = cfg.steps * session.tokens_per_step / self.data.train_tokens if self.data.train_tokens else 0.0
        if passes > MAX_PASSES and runtime.is_main:
            warn(f"this run passes {passes:.1f} times over its training split ({self.data.train_tokens:,} tokens of "
                 f"{cfg.data}): more than {MAX_PASSES}, past which repeated data is no longer nearly as good as new "
                 "(Muennighoff et al. 2023); a smaller model or fewer steps stays within them")
        if session.compiling and self.step < session.stop_at:
            logger.message(f"first step: compiling {session.compiling}; this takes a while once per process "
                           "(later runs reuse TorchInductor's on-disk cache)")
        return session

    def _after_step(self, session: _Session, step_time: float, lr: float, synced: tuple[float, float] | None) -> None:
        """After each step, one job each: time the first, report p, evaluate, log, checkpoint, stop if asked."""
        first = self.step == session.start_step + 1
        if first:
            self._time_first_step(session, step_time)
        record: dict[str, Any] = self.noise.after_step(self.step, self.optimizer)
        self._report_power(session.logger, record)
        record.update(self.evaluations.after_step(self.step))
        if synced:
            self._log_step(session, record, step_time, lr, synced, first)
        if self._checkpoints(self.step, session.stop_at):
            self.save()
        self._stop_if_interrupted(session, synced is not None)

    def _time_first_step(self, session: _Session, step_time: float) -> None:
        """The first step of a session pays compiles and warm-up: the done line's throughput starts after it."""
        session.first_step_end = time.perf_counter()
        if session.compiling:
            session.logger.message(f"first step took {step_time:.1f} s (compiling {session.compiling} included)")

    def _report_power(self, logger: MetricsLogger, record: dict[str, Any]) -> None:
        """``--p auto``'s choice (recorded in config.json) and ``--p track``'s updates, in words."""
        if "p_auto" in record:
            median = record["noise_ratio_median"]
            flat = flat_text(record["p_flat_low"], record["p_flat_high"])
            text = (f"--p auto: p = {record['p_auto']:g} (flat range {flat}: within {FLAT_FRACTION:.0%} of the best "
                    f"predicted decrease) from {self.cfg.p_auto_steps} measured steps")
            if median is not None:  # None when no coordinate had a resolvable mean
                text += f" (median noise/signal {median:.3g}; {record['frac_no_mean']:.1%} of coordinates without a " \
                        "resolvable mean)"
            logger.message(text)
            edge = edge_warning("--p auto:", record["p_auto"])
            if edge and self.runtime.is_main:
                warn(edge)
            self._write_config()
        if "p_track" in record:
            median = record["noise_ratio_median"]
            logger.message(f"--p track: step {self.step}: p {record['p_before']:.4g} -> {record['p_track']:.4g} (p* "
                           f"{record['p_star']:g} {flat_text(record['p_flat_low'], record['p_flat_high'])}, smoothed "
                           f"{record['p_smoothed']:.3g}"
                           + (f", median noise/signal {median:.3g})" if median is not None else ")"))

    def _log_step(self, session: _Session, record: dict[str, Any], step_time: float, lr: float,
                  synced: tuple[float, float], first: bool) -> None:
        """The step's metrics record (a synced step: its loss and gradient norm are on the host)."""
        loss, grad_norm = synced
        session.logger.log({
            "step": self.step, "tokens": self.step * session.tokens_per_step, "loss": loss, "lr": lr,
            # the first step of a session pays compiles and warm-up: it has no throughput figure
            "grad_norm": grad_norm, "tokens_per_s": None if first else session.tokens_per_step / step_time,
            "elapsed_s": session.elapsed_before + time.perf_counter() - session.start_time, **record,
        })

    def _stop_if_interrupted(self, session: _Session, synced: bool) -> None:
        """Stop at this step when a signal asked any rank to: every rank agrees (a collective, at synced steps;
        one process checks every step), saves a checkpoint of this step and raises :class:`InterruptedRun`."""
        signal_name = interrupts.requested()
        stopping = self.runtime.agree(signal_name is not None) if (synced or not self.runtime.distributed) else False
        if stopping and self.step < session.stop_at:  # every rank stops together
            signal_name = signal_name or "a signal to another rank"
            if self.last_checkpoint is None or step_of(self.last_checkpoint) != self.step:
                self.save()
            raise InterruptedRun(f"{signal_name} at step {self.step}/{self.cfg.steps}: checkpoint "
                                 f"{self.last_checkpoint} written", self.run_dir)

    def _end_session(self, session: _Session) -> TrainResult:
        steps_done = self.step - session.start_step
        if self.runtime.is_main and steps_done:
            # after the first step (compiles and warm-up excluded), unless that was the only one; evaluation
            # time is not training time
            timed, since = (steps_done - 1, session.first_step_end) if steps_done > 1 else (1, session.start_time)
            evaluations = self.evaluations
            seconds = time.perf_counter() - since - (evaluations.seconds if steps_done > 1 else 0.0)
            parts = [f"done: step {self.step}/{self.cfg.steps}",
                     f"{timed * session.tokens_per_step / seconds:,.0f} training tokens/s (evaluation excluded)"]
            if evaluations.last is not None:
                parts.append(f"regular-evaluation val loss {evaluations.last:.4f} "
                             f"({len(self.data.val)} batch(es), the curves' last point)")
            final = evaluations.final
            if final is not None:
                parts.append(f"final val loss {final.loss:.4f} ± {final.se:.4f} (standard error over its "
                             f"{final.tokens:,} held-out tokens; it took {evaluations.final_seconds:.1f} s)")
            session.logger.message(", ".join(parts) + f", checkpoint {self.last_checkpoint}")
        return TrainResult(self.run_dir, self.step, self.evaluations.last, self.last_checkpoint,
                           self.evaluations.final)

    def _compiling(self) -> str:
        """What the next step compiles ("" for nothing): the model (``--compile``), AdamPower's kernels."""
        kernels = self.optimizer.kernels_to_compile() if hasattr(self.optimizer, "kernels_to_compile") else 0
        parts = (["the model (--compile)"] if self.cfg.compile else []) + (
            [f"AdamPower's one-pass kernel for {kernels} tensor size(s)"] if kernels else [])
        return " and ".join(parts)

    def _write_config(self) -> None:
        if self.runtime.is_main:
            resolved = {"lr": self.lr, "warmup": self.cfg.warmup_steps}
            if self.noise.chosen_p is not None:
                resolved["p"] = self.noise.chosen_p
                resolved["p_flat_range"] = self.noise.chosen_flat
            if self.cfg.p_track:
                resolved["p_every"] = self.cfg.p_every_steps
            if self.data.train_tokens:  # what the run's epochs divide by (passes over its training split)
                resolved["train_split_tokens"] = self.data.train_tokens
            resolved.update(hardware_choices(self.cfg, self.runtime.device))
            _write_json(self.run_dir / "config.json", {
                "train": self.cfg.to_dict(), "model": self.model_config.to_dict(), "resolved": resolved})

    def _checkpoints(self, step: int, stop_at: int) -> bool:
        return bool(self.cfg.ckpt_every and step % self.cfg.ckpt_every == 0) or step == stop_at

    def applied_lr(self) -> float:
        """The base lr the scheduler set for this step (the first group's lr over its blockwise scale)."""
        group = self.optimizer.param_groups[0]
        return float(group["lr"]) / float(group.get("lr_scale", 1.0))

    def _stop_message(self, what: str, value: float) -> str:
        good = self.last_checkpoint or "none written yet"
        return f"{what} is {value} at step {self.step + 1}; stopping before the update. Last good checkpoint: {good}"


def train(cfg: TrainConfig, runtime: Runtime | None = None) -> TrainResult:
    """Train per ``cfg``; returns the run folder, steps done, final val loss and checkpoint.

    The run folder is checked and locked before any work (see :mod:`.run_folder`).

    Args:
        cfg: the run's configuration.
        runtime: the process's device and process group (default: from ``cfg.device`` and ``cfg.parallel``).

    Returns:
        :class:`TrainResult`: the run folder, the steps done, the final evaluation and the last checkpoint.
    """
    with interrupts.deferred(), contextlib.ExitStack() as stack:
        rt = runtime if runtime is not None else stack.enter_context(
            runtime_for(cfg.device, cfg.parallel, cfg.dist_timeout))
        check_before_start(cfg, rt.world_size)
        stack.enter_context(open_run_folder(cfg, rt.is_main))
        rt.barrier()  # the others start once rank 0 has checked and locked the folder
        trainer = Trainer(cfg, rt)
        interrupts.raise_if_requested()  # Ctrl-C while the data and model were built: nothing to save yet
        try:
            return trainer.run()
        except Exception as exc:
            if not (rt.distributed and peer_lost(exc)):
                raise
            raise PeerLostError(
                f"rank {rt.rank}: another process of the run stopped or stopped answering "
                f"({str(exc).splitlines()[0][:160]}); continue with --resume from the last complete checkpoint "
                f"({trainer.last_checkpoint or 'none was written'}): launch the same torchrun command with "
                f"'{resume_command(cfg.run_dir)}'") from None
        finally:
            # Sharded tensors hold the process group: free them before it is destroyed (else gloo may abort at exit);
            # on a GPU, free its memory for the next run of this process. (A full collection costs ~0.25 s.)
            del trainer
            if rt.distributed or rt.device.type != "cpu":
                gc.collect()
