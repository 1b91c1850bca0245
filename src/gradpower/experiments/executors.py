"""Where an experiment's jobs run, behind one interface in submitit's shape: ``submit`` a job, ask whether it is
``done``, take its ``result``; ``batch()`` groups submissions (a SLURM job array) and ``wait`` blocks until one of
the given jobs is done. :func:`drive` is the one loop over any of them:

- :class:`SerialExecutor`: each job in this process, when it is submitted (one at a time);
- :class:`PoolExecutor`: spawned processes, one job each, ``jobs`` at a time (one torch thread pool each on CPU,
  one GPU each round-robin on CUDA);
- :class:`gradpower.experiments.slurm.SubmititExecutor`: SLURM jobs (or submitit's local processes), every run
  at once, each trained whole.

A job is a run, or a wsd trunk with the runs that branch from it (:func:`.job.run_job`); its result is one
``(status, message, seconds)`` per run, branches first.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .. import interrupts
from ..train import InterruptedRun
from ..train.checkpoint import latest_checkpoint
from .job import Job, PlannedRun, job_args, run_job

#: What a job's result holds for each of its runs.
RunResult = tuple[str, str, float]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS reports one), which CPU jobs share."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s`` or ``6h30m``; ``--`` when unknown."""
    if not seconds or seconds != seconds:
        return "--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class Progress:
    """The experiment's run numbering and ETA, which every executor's start lines share."""

    total: int
    parallel: int
    echo: Callable[[str], None]
    counter: int = 0
    durations: list[float] = field(default_factory=list)

    def eta(self) -> str:
        if not self.durations:
            return "ETA --"
        remaining = self.total - self.counter + 1
        return f"ETA {format_duration(sum(self.durations) / len(self.durations) * remaining / max(1, self.parallel))}"

    def start(self, run: PlannedRun, action: str, where: str = "") -> None:
        """Number ``run`` and print its start line."""
        self.counter += 1
        self.line(self.counter, run, action, where)

    def line(self, number: int, run: PlannedRun, action: str, where: str = "") -> None:
        self.echo(f"[run {number}/{self.total}] {run.label} | seed {run.seed} | {action} -> {run.run_dir}{where} | "
                  f"{self.eta()}")


class Executor(Protocol):
    """What :func:`drive` needs of a place that runs jobs."""

    #: How many jobs may run at once.
    slots: float
    #: Whether a job may carry runs that branch from its trunk (else every job is one run, trained whole).
    shares_trunks: bool

    def batch(self) -> contextlib.AbstractContextManager[None]: ...
    def accepting(self) -> bool:
        """Whether another job may start now."""
    def submit(self, job: Job) -> Any: ...
    def done(self, handle: Any) -> bool: ...
    def result(self, handle: Any) -> list[RunResult]: ...
    def wait(self, handles: list[Any]) -> None: ...
    def close(self, completed: bool) -> None:
        """Release what the executor holds; ``completed``: every job ended (not an exception)."""


def stop_if_interrupted(done: int, total: int) -> None:
    """Between runs: stop the experiment if Ctrl-C/SIGTERM arrived (each run saved its own checkpoint)."""
    name = interrupts.requested()
    if name:
        raise InterruptedRun(f"{name} after {done} of {total} runs: finished runs are kept and interrupted ones "
                             "resume from their checkpoints")


def drive(executor: Executor, work: list[Job], finished: Callable[[PlannedRun, str, str, float], None]) -> None:
    """Run every job of ``work`` on ``executor``, at most ``slots`` at a time, and report each run through
    ``finished(run, status, message, seconds)`` as its job ends. After Ctrl-C/SIGTERM nothing new starts (the
    executor stops ``accepting``, or its next run refuses to start); the running jobs checkpoint and stop."""
    queue = list(work)
    pending: dict[int, tuple[Any, list[PlannedRun]]] = {}
    completed = False
    try:
        while queue or pending:
            with executor.batch():
                while queue and len(pending) < executor.slots and executor.accepting():
                    trunk, branches = queue.pop(0)
                    handle = executor.submit((trunk, branches))
                    pending[id(handle)] = (handle, [run for run, _ in branches] + [trunk])
            if not pending:
                break
            executor.wait([handle for handle, _ in pending.values()])
            for key, (handle, runs) in list(pending.items()):
                if executor.done(handle):
                    del pending[key]
                    for run, (status, message, seconds) in zip(runs, executor.result(handle)):
                        finished(run, status, message, seconds)
        completed = True
    finally:
        executor.close(completed)


def _action(run: PlannedRun) -> str:
    return "resuming" if latest_checkpoint(run.run_dir / "checkpoints") is not None else "training"


class SerialExecutor:
    """Each job in this process, trained as it is submitted; its runs' start lines print as each begins (a trunk's
    stable phase too), and Ctrl-C/SIGTERM stops the experiment before the next run."""

    slots = 1
    shares_trunks = True

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def accepting(self) -> bool:
        return True  # an interrupt stops the experiment before the next run begins (in ``started``)

    def submit(self, job: Job) -> list[RunResult]:
        trunk, branches = job
        runs = [run for run, _ in branches] + [trunk]
        numbers: dict[int, int] = {}  # each run keeps the number it was given when it began

        def started(index: int, action: str) -> None:
            if index not in numbers:
                stop_if_interrupted(self.progress.counter, self.progress.total)
                self.progress.counter += 1
                numbers[index] = self.progress.counter
            self.progress.line(numbers[index], runs[index], action)

        return run_job(*job_args(trunk, branches), False, None, None, started)

    def done(self, handle: list[RunResult]) -> bool:
        return True

    def result(self, handle: list[RunResult]) -> list[RunResult]:
        return handle

    def wait(self, handles: list[Any]) -> None:
        return None

    def close(self, completed: bool) -> None:
        return None


class PoolExecutor:
    """Jobs in spawned processes, ``jobs`` at a time, each writing its runs' output to their ``train.log``. On a
    CPU each process gets an equal share of the cores as its torch thread count; with GPUs each takes one,
    round-robin. A crashed worker fails its job's runs, not the experiment."""

    shares_trunks = True

    def __init__(self, jobs: int, progress: Progress) -> None:
        self.slots, self.progress = jobs, progress
        self.gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.threads = max(1, usable_cores() // jobs) if self.gpus == 0 else None
        self.free = list(range(jobs))
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def accepting(self) -> bool:
        return not interrupts.requested()  # let the running ones checkpoint and stop; start nothing new

    def submit(self, job: Job) -> tuple[Future, int, int]:
        trunk, branches = job
        slot = self.free.pop(0)
        device = f"cuda:{slot % self.gpus}" if self.gpus and trunk.cfg.device in ("auto", "cuda") else None
        for run in [run for run, _ in branches] + [trunk]:
            what = f"branch of {trunk.run_dir.name}" if run is not trunk and branches else _action(run)
            self.progress.start(run, what, " (log: train.log)")
        future = self.pool.submit(run_job, *job_args(trunk, branches), True, self.threads, device)
        return future, slot, 1 + len(branches)

    def done(self, handle: tuple[Future, int, int]) -> bool:
        return handle[0].done()

    def result(self, handle: tuple[Future, int, int]) -> list[RunResult]:
        future, slot, runs = handle
        self.free.append(slot)
        try:
            return future.result()
        except InterruptedRun as exc:
            return [("interrupted", str(exc), 0.0)] * runs
        except Exception as exc:  # noqa: BLE001 - a crashed worker fails its runs, not the experiment
            return [("failed", f"{type(exc).__name__}: {exc}", 0.0)] * runs

    def wait(self, handles: list[tuple[Future, int, int]]) -> None:
        wait_futures([handle[0] for handle in handles], return_when=FIRST_COMPLETED)

    def close(self, completed: bool) -> None:
        self.pool.shutdown(wait=True)
        sys.stdout.flush()
        if completed:
            stop_if_interrupted(self.progress.counter, self.progress.total)
