"""The body of one run's job, the same in this process, a spawned one and a cluster job.

:mod:`.execute` (serial and process-pool runs) and :mod:`.slurm` (submitit
jobs) both import it, so neither imports the other's internals.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..train.checkpoint import latest_checkpoint
from ..train.config import TrainConfig
from .runs import load_run


@dataclass
class PlannedRun:
    """One run of an experiment: which arm or grid point, which seed, and its full config."""

    label: str
    seed: int
    cfg: TrainConfig

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


def start_config(cfg: TrainConfig) -> TrainConfig:
    """The config that starts or continues a run that is not finished: resume from its newest checkpoint, else
    start over in its folder (one this experiment owns: :func:`state_of` checked it holds this configuration)."""
    resume = latest_checkpoint(cfg.run_dir / "checkpoints") is not None
    return dataclasses.replace(cfg, resume=resume, overwrite=not resume)


def train_one(
    cfg_dict: dict[str, Any], log_path: str | None, threads: int | None, device: str | None
) -> tuple[str, str]:
    """Train one run (in this process, a spawned one or a cluster job); returns (status, message)."""
    from ..data.corpus import DataError
    from ..train import CheckpointError, NonFiniteLossError, train

    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig(**cfg_dict)
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    redirect: contextlib.AbstractContextManager = contextlib.nullcontext()
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed below
        redirect = contextlib.ExitStack()
        redirect.enter_context(log)
        redirect.enter_context(contextlib.redirect_stdout(log))
        redirect.enter_context(contextlib.redirect_stderr(log))
    with redirect:
        try:
            result = train(cfg)
        except NonFiniteLossError as exc:
            return "diverged", str(exc)
        except (ValueError, CheckpointError, DataError, OSError) as exc:
            return "failed", str(exc)
    return "done", done_message(result.run_dir)


def done_message(run_dir: Path) -> str:
    """A finished run's final evaluation as its progress line shows it: ``final val loss 5.6655 ± 0.0109
    (standard error over 65,536 held-out tokens)``."""
    run = load_run(run_dir)
    if run.val_tokens:
        return (f"final val loss {run.final_val_loss:.4f} ± {run.val_loss_se:.4f} (standard error over "
                f"{run.val_tokens:,} held-out tokens)")
    return f"final val loss {run.final_val_loss:.4f}"
