"""An experiment's runs as SLURM jobs through submitit: one job per run, submitted as one job array.

The submitting command waits with a progress line (or, with ``--detach``, prints the job ids and returns);
the run folders are the same as a local run's, so ``gradpower report OUT`` and a second ``compare`` read
them alike. A second command skips finished runs, waits for jobs of this folder that SLURM still runs
(``jobs.json`` beside the logs) and submits only the missing or failed runs.

Preemption and time limits: SLURM sends SIGUSR2 (``--signal``, :data:`.launcher.SIGNAL_DELAY_S` before
the limit; on preemption where the cluster sets ``preempt_send_user_signal``) or SIGTERM. The job records
it, the training loop writes a checkpoint at the next step boundary and stops, and the job then hands over
to submitit's own handler, which calls :meth:`RunJob.checkpoint` and requeues it; the requeued job resumes
from that checkpoint exactly as ``--resume`` does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from .. import interrupts
from ..fileio import atomic_write_text
from ..train import InterruptedRun
from ..train.config import TrainConfig
from .executors import usable_cores
from .job import Job, PlannedRun, done_message, start_config, train_one
from .launcher import (
    SIGNAL_DELAY_S,
    JobsSubmitted,
    LauncherConfig,
    SubmissionError,
    sbatch_parameters,
    torchrun_command,
)
from .runs import load_run

#: SLURM states of a job that may still finish (a second command waits for it instead of submitting again).
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "UNKNOWN")
#: Seconds between looks at the jobs (sacct is asked at most this often).
POLL_S = {"slurm": 30.0, "local": 0.5}
#: Port range of a multi-node run's rendezvous (one port per SLURM job id).
RDZV_PORT_BASE, RDZV_PORTS = 20000, 20000


class RunJob(submitit.helpers.Checkpointable):
    """One run of an experiment as a submitit job: ``__call__(cfg, launcher, threads)`` trains it (here, or
    through ``torchrun`` over the job's GPUs) and returns ``(status, message)`` as a local run does. ``checkpoint``
    (submitit's, inherited) resubmits the same call; the job decides at start whether to resume."""

    def __call__(self, cfg_dict: dict[str, Any], launcher_dict: dict[str, Any], threads: int | None = None
                 ) -> tuple[str, str]:
        launcher = LauncherConfig(**launcher_dict)
        cfg = start_config(TrainConfig(**cfg_dict))
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's handler: checkpoint() this job and requeue it
        with interrupts.deferred():
            try:
                if launcher.distributed:
                    return _torchrun(cfg, launcher)
                return train_one(cfg.to_dict(), str(cfg.run_dir / "train.log"), threads, None)
            except InterruptedRun as exc:
                print(f"gradpower: {exc.what}", flush=True)  # in the job's SLURM log
                if not callable(requeue):
                    return "interrupted", str(exc)
                try:
                    requeue(signal.SIGUSR2, None)  # exits this process when the job is requeued
                except (UncompletedJobError, subprocess.SubprocessError, OSError) as why:
                    return "interrupted", f"{exc}; not requeued ({str(why).splitlines()[0][:160]})"
                return "interrupted", f"{exc}; requeued by the job's first task"  # the other tasks of a job


def _torchrun(cfg: TrainConfig, launcher: LauncherConfig) -> tuple[str, str]:
    """This node's part of a multi-GPU run: ``torchrun`` with ``train --parallel fsdp`` (output in the run's
    ``train.log``). A signal to the job is passed on as SIGTERM: every rank checkpoints at one step boundary."""
    env = submitit.JobEnvironment()
    port = RDZV_PORT_BASE + int(env.raw_job_id) % RDZV_PORTS
    command = torchrun_command(cfg, launcher, env.hostnames[0], port, env.job_id)
    log_path = cfg.run_dir / "train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"$ {' '.join(command)}\n")
        # SLURM signals every process of the job: torchrun's agent would die of SIGUSR2 (it handles SIGTERM),
        # so it ignores it; its ranks record it (train defers it) and this task passes it on as SIGTERM.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
        passed_on = False
        while process.poll() is None:
            if interrupts.requested() and not passed_on:
                process.send_signal(signal.SIGTERM)
                passed_on = True
            time.sleep(0.5)
    if passed_on and not load_run(cfg.run_dir).finished:  # (a signal as the run ended: it is done)
        raise InterruptedRun(f"{interrupts.requested()}: torchrun's ranks stopped at a step boundary with a "
                             "checkpoint", cfg.run_dir)
    if process.returncode != 0:
        return "failed", f"torchrun exited with status {process.returncode}; see {log_path}"
    return "done", done_message(cfg.run_dir)


def _executor(launcher: LauncherConfig, folder: Path) -> submitit.Executor:
    """submitit's executor for ``launcher``: sbatch on the cluster, or this machine's processes."""
    if launcher.submitit_executor == "local":
        executor = submitit.LocalExecutor(folder=folder)  # its controller would make a folder named "%j"
        executor.update_parameters(timeout_min=launcher.timeout_min, gpus_per_node=launcher.gpus_per_node,
                                   tasks_per_node=1, signal_delay_s=SIGNAL_DELAY_S)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=3)
    except RuntimeError as exc:  # no srun on this machine
        raise SubmissionError(f"--launcher submitit needs a SLURM cluster ({exc}); --submitit-executor local "
                              "runs the same jobs as processes of this machine") from None
    executor.update_parameters(**sbatch_parameters(launcher))
    return executor


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [type(exc).__name__])[-1][:200]


class _Registry:
    """``jobs.json`` in the logs folder: the job of each run folder this experiment submitted, so a second
    command waits for a job SLURM still runs instead of submitting the run again."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "jobs.json"
        try:
            self.entries: dict[str, dict[str, str]] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            self.entries = {}  # only a hint: without it, a second command submits again (the run's lock guards it)

    def active(self, run_dir: Path, folder: Path) -> submitit.Job | None:
        entry = self.entries.get(str(run_dir.resolve()))
        if entry is None or entry.get("executor") != "slurm":
            return None
        job = submitit.SlurmJob(folder=folder / "%j", job_id=entry["job_id"])
        return job if job.state in ACTIVE_STATES else None

    def record(self, run_dir: Path, job: submitit.Job, executor: str) -> None:
        self.entries[str(run_dir.resolve())] = {"job_id": str(job.job_id), "executor": executor}

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.entries, indent=1) + "\n")


class SubmititExecutor:
    """The :class:`.executors.Executor` of SLURM jobs (or submitit's local processes): one job per run, trained
    whole, every run at once; the submissions of one :meth:`batch` go out as one job array. A run whose job of
    this folder SLURM still runs (``jobs.json``) is waited for, not submitted again. :meth:`wait` polls with a
    progress line; with ``--detach`` it raises :class:`JobsSubmitted` instead."""

    slots = float("inf")
    shares_trunks = False

    def __init__(self, launcher: LauncherConfig, folder: Path, echo: Callable[[str], None]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.launcher, self.folder, self.echo = launcher, folder, echo
        self.registry = _Registry(folder)
        self.queued: list[tuple[_Handle, TrainConfig]] = []
        self.handles: list[_Handle] = []
        self.failed, self.shown, self.started = 0, "", time.perf_counter()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield
        if self.queued:
            self._submit_queued()

    def accepting(self) -> bool:
        return True  # every run goes out in the first batch

    def submit(self, job: Job) -> _Handle:
        run, _ = job  # a job here is one run: shares_trunks is False
        handle = _Handle(run)
        self.handles.append(handle)
        active = self.registry.active(run.run_dir, self.folder)
        if active is not None:
            self.echo(f"      {run.label} | seed {run.seed}: SLURM job {active.job_id} is still {active.state}: "
                      "waiting for it")
            handle.job = active
        else:
            self.queued.append((handle, start_config(run.cfg)))
        return handle

    def _submit_queued(self) -> None:
        queued, self.queued = self.queued, []
        executor = _executor(self.launcher, self.folder)
        try:
            # the local executor starts every job at once: they share this machine's cores (a SLURM job has its own)
            threads = (max(1, usable_cores() // len(queued)) if self.launcher.submitit_executor == "local"
                       else None)
            # submitit prints sbatch's complaint itself: keep it for the one-line error instead
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                # absolute run folders: the job may start in another directory (sbatch --chdir)
                submitted = [executor.submit(RunJob(), dataclasses.replace(
                    cfg, out=str(cfg.run_dir.resolve())).to_dict(), dataclasses.asdict(self.launcher), threads)
                    for _, cfg in queued]
        except FileNotFoundError as exc:
            raise SubmissionError(f"cannot submit: {exc.filename or 'sbatch'} not found (is this a SLURM login "
                                  "node?)") from None
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal (no such partition, ...) as one line
            raise SubmissionError(f"SLURM refused the submission: {_first_line(exc)}") from None
        for (handle, _), job in zip(queued, submitted):
            handle.job = job
            self.registry.record(handle.run.run_dir, job, self.launcher.submitit_executor)
        self.registry.save()
        ids = [str(job.job_id) for job in submitted]
        self.echo(f"submitted {len(ids)} job(s) ({self.launcher.submitit_executor}): {_id_range(ids)}; logs in "
                  f"{self.folder}")

    def done(self, handle: _Handle) -> bool:
        return handle.job.done()

    def result(self, handle: _Handle) -> list[tuple[str, str, float]]:
        status, message = _outcome(handle.job)
        self.failed += status == "failed"
        return [(status, message, time.perf_counter() - self.started)]

    def wait(self, handles: list[_Handle]) -> None:
        if self.launcher.detach:  # the submitted jobs and those still running from before
            raise JobsSubmitted(_id_range([str(h.job.job_id) for h in self.handles]), self.folder)
        while True:
            if interrupts.requested():
                raise InterruptedRun(f"{interrupts.requested()} while waiting for {len(handles)} SLURM job(s), "
                                     "which keep running; the same command waits for them again")
            done = any(handle.job.done() for handle in handles)
            self._progress()
            if done:
                return
            time.sleep(POLL_S[self.launcher.submitit_executor])

    def _progress(self) -> None:
        states = [h.job.state for h in self.handles if not h.job.done()]
        line = (f"[jobs] {len(self.handles) - len(states)}/{len(self.handles)} done ({self.failed} failed), "
                f"{sum(s == 'RUNNING' for s in states)} running, {sum(s != 'RUNNING' for s in states)} waiting")
        if line != self.shown:
            self.echo(line)
            self.shown = line

    def close(self, completed: bool) -> None:
        if completed and self.handles:
            self._progress()


@dataclass
class _Handle:
    """One run's submitit job (set when its batch is submitted)."""

    run: PlannedRun
    job: Any = None


def _id_range(ids: list[str]) -> str:
    """``123_[0-7]`` for an array, the ids otherwise."""
    heads = {i.split("_")[0] for i in ids}
    if len(heads) == 1 and all("_" in i for i in ids) and len(ids) > 1:
        tails = sorted(int(i.split("_")[1]) for i in ids)
        return f"{heads.pop()}_[{tails[0]}-{tails[-1]}]"
    return ", ".join(ids)


def _outcome(job: submitit.Job) -> tuple[str, str]:
    """A finished job's (status, message); a failed one names its SLURM log."""
    log = job.paths.stderr
    try:
        status, message = job.result()
    except UncompletedJobError as exc:
        return "failed", f"its log {log}: SLURM job {job.job_id} ended {job.state} ({_first_line(exc)})"
    if status == "failed":
        return status, f"its log {log}: {message}"
    return status, message
