"""The body of one job, the same in this process, a spawned one and a cluster job: a run (or a wsd trunk with the
shorter runs that branch from it, :func:`run_job`), its start-up config and its done message.

Every executor (:mod:`.executors`: serial and process pool; :mod:`.slurm`: submitit) and :mod:`.execute` import
it, so none of them imports another's internals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..train.checkpoint import latest_checkpoint
from ..train.config import TrainConfig
from .ladder import chains, checkpoint_step, seed_branch
from .runs import load_run


@dataclass
class PlannedRun:
    """One run of an experiment: what it is (its arm or grid point, seed, horizon of a ladder and phase), and
    its full config."""

    label: str
    seed: int
    cfg: TrainConfig
    #: compare: the arm it belongs to.
    arm: str | None = None
    #: sweep: the grid point it trains (each grid field's value).
    point: dict[str, Any] | None = None
    #: The horizon of the ladder it trains to (None without a ladder).
    horizon: int | None = None
    #: ``final`` (a run the tables pair), or ``tune`` (a run of compare's lr grid).
    phase: str = "final"

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def entry(self, folder: Path) -> dict[str, Any]:
        """What ``experiment.json`` in ``folder`` lists for this run (its folder relative to the experiment's)."""
        what = {"arm": self.arm} if self.arm is not None else {"point": self.point} if self.point is not None else {}
        return {"phase": self.phase, **what, "seed": self.seed, "lr": self.cfg.lr,
                "dir": os.path.relpath(self.run_dir, folder),
                **({"horizon": self.horizon} if self.horizon is not None else {})}


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
    from ..logs import show_library_log
    from ..train import CheckpointError, NonFiniteLossError, train

    show_library_log()  # a spawned worker or cluster job starts without the command's logging
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


def run_job(trunk: dict[str, Any], branches: list[tuple[dict[str, Any], int]], logs: bool, threads: int | None,
            device: str | None, started: Callable[[int, str], None] | None = None) -> list[tuple[str, str, float]]:
    """Train a run, or a wsd trunk with the shorter runs that branch from it (:mod:`.ladder`), in this process.

    For each branch, by ascending step: the trunk trains to the branch's decay start (``stop_after``) and
    checkpoints there, the branch is seeded from that checkpoint and trains its decay. A branch that has a
    checkpoint of its own resumes from it, and one whose step the trunk is already past trains whole (the same
    result, at the full cost). Then the trunk trains to its end. ``started(i, action)`` is told before run ``i``
    (the branches in order, then the trunk) trains. Returns (status, message, seconds) for each run, in that
    order; a trunk that fails on the way fails the branches still waiting for it."""
    def train(cfg: TrainConfig, stop_after: int | None = None) -> tuple[str, str]:
        cfg = dataclasses.replace(start_config(cfg), stop_after=stop_after)
        return train_one(cfg.to_dict(), str(cfg.run_dir / "train.log") if logs else None, threads, device)

    trunk_cfg = TrainConfig(**trunk)
    results: list[tuple[str, str, float]] = []
    trunk_seconds, trunk_failure = 0.0, None
    for index, (branch, step) in enumerate(branches):
        cfg = TrainConfig(**branch)
        start = time.perf_counter()
        action = "resuming" if checkpoint_step(cfg.run_dir) is not None else "training"
        if trunk_failure is not None:
            results.append((*trunk_failure, 0.0))
            continue
        if action == "training":
            at = checkpoint_step(trunk_cfg.run_dir) or 0
            if at < step:
                if started:
                    started(len(branches), f"stable phase to step {step}")
                trunk_start = time.perf_counter()
                status, message = train(trunk_cfg, step - at)
                trunk_seconds += time.perf_counter() - trunk_start
                if status != "done":
                    trunk_failure = (status, f"its trunk {trunk_cfg.run_dir} stopped: {message}")
                    results.append((*trunk_failure, 0.0))
                    continue
                at = checkpoint_step(trunk_cfg.run_dir)
                start = time.perf_counter()
            if at == step:
                seed_branch(trunk_cfg.run_dir, cfg.run_dir, step)
                action = f"branching at step {step} from {trunk_cfg.run_dir.name}"
        if started:
            started(index, action)
        status, message = train(cfg)
        results.append((status, message, time.perf_counter() - start))
    if trunk_failure is not None:
        results.append((*trunk_failure, trunk_seconds))
        return results
    if started:
        started(len(branches), "resuming" if checkpoint_step(trunk_cfg.run_dir) is not None else "training")
    start = time.perf_counter()
    status, message = train(trunk_cfg)
    results.append((status, message, trunk_seconds + time.perf_counter() - start))
    return results


#: What one worker trains: a run and the (run, branch step) pairs that branch from it, by ascending step.
Job = tuple[PlannedRun, list[tuple[PlannedRun, int]]]


def plan_jobs(planned: list[PlannedRun], todo: list[PlannedRun]) -> list[Job]:
    """The runs of ``todo`` as jobs: a trunk with the branches it still owes (:func:`.ladder.chains` over every
    planned run), or a run alone. A branch whose trunk is finished already trains alone."""
    waiting = {id(run) for run in todo}
    jobs = []
    for trunk, branches in chains([run.cfg for run in planned]):
        owed = [(planned[i], step) for i, step in branches if id(planned[i]) in waiting]
        if id(planned[trunk]) in waiting:
            jobs.append((planned[trunk], owed))
        else:
            jobs += [(run, []) for run, _ in owed]
    return jobs


def job_args(trunk: PlannedRun, branches: list[tuple[PlannedRun, int]]) -> tuple[dict, list[tuple[dict, int]]]:
    """A job's configs as plain dicts, for :func:`run_job` here or in a spawned process."""
    return trunk.cfg.to_dict(), [(run.cfg.to_dict(), step) for run, step in branches]
