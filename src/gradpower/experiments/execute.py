"""Running a list of planned runs: reuse finished ones, resume interrupted ones, N at a time.

Every run goes through :func:`gradpower.train.train` and lives in its own
folder named after its result-defining fields (:func:`run_name`), so
re-running an experiment never redoes a finished run and never mixes two
configurations in one folder. ``jobs > 1`` runs processes in parallel (spawned,
one torch thread pool each; on CUDA one device per process, round-robin over
the visible GPUs); their harness output goes to ``train.log`` in each run folder.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import interrupts
from ..train import InterruptedRun
from ..train.assemble import check_before_start, data_config, hardware_choices, model_config_for, prepare_run_data
from ..train.checkpoint import latest_checkpoint
from ..train.config import TrainConfig, config_differences, run_name
from ..train.distributed import resolve_device
from .job import PlannedRun, start_config, train_one
from .ladder import chains, checkpoint_step, seed_branch
from .launcher import LauncherConfig, check_available
from .runs import RunReadError, load_run


@dataclass
class Outcome:
    """How a planned run ended in this invocation: done, reused, diverged or failed (with the reason)."""

    run: PlannedRun
    status: str
    message: str = ""
    seconds: float = 0.0


def place(cfg: TrainConfig, runs_root: Path) -> TrainConfig:
    """The config with its run folder under ``runs_root``, named after its defining fields."""
    return dataclasses.replace(cfg, out=str(runs_root / run_name(cfg)), resume=False)


class RunsFailedError(RuntimeError):
    """Runs of an experiment failed (an error, not a diverging loss). ``report`` is the text of the tables
    written from the other runs ("" when none could be written); the message names every failed run."""

    def __init__(self, failed: list[Outcome], report: str = "") -> None:
        self.failed, self.report = failed, report
        by_reason: dict[str, list[str]] = {}  # one reason once, however many runs it stopped
        for o in failed:  # a run's own folder in its message reads "its folder", so equal reasons group
            why = o.message.splitlines()[0].replace(str(o.run.run_dir), "its folder")[:160] if o.message else \
                "no reason given"
            by_reason.setdefault(why, []).append(f"{o.run.label} seed {o.run.seed}")
        names = "; ".join(f"{', '.join(runs)} ({why})" for why, runs in by_reason.items())
        super().__init__(f"{len(failed)} run(s) failed: {names}")


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes whose run failed with an error."""
    return [o for o in outcomes if o.status == "failed"]


def state_of(run: PlannedRun) -> str:
    """``done`` (finished with this exact config), ``resume`` (checkpoints) or ``fresh``."""
    folder = run.run_dir
    if (folder / "config.json").exists():
        try:
            existing = load_run(folder)
        except RunReadError:
            existing = None
        if existing is not None:
            changed = config_differences(TrainConfig.from_dict(existing.config).defining(), run.cfg.defining())
            if changed:
                raise ValueError(f"{folder} holds a run of another configuration ({'; '.join(changed)}); "
                                 "move it away or use another --out")
            _check_hardware(folder, existing.resolved, run.cfg)
            if existing.finished:
                return "done"
    return "resume" if latest_checkpoint(folder / "checkpoints") is not None else "fresh"


#: How each hardware choice reads in a refusal, and what a run written before it was recorded used (None: unknown,
#: so it is not refused).
_CHOICES = {"ns_dtype": ("Newton-Schulz ran in", lambda device: "bfloat16" if device.type == "cuda" else "float32"),
            "power_kernel": ("|g|^p kernel was", lambda device: None)}


def _check_hardware(folder: Path, resolved: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to reuse a run whose hardware choices (:func:`hardware_choices`) are not the ones this machine makes
    now: its numbers would not be the ones a run trained here gives, so it would not pair with them."""
    device = resolve_device(cfg.device)
    for key, now in hardware_choices(cfg, device).items():
        what, legacy = _CHOICES[key]
        ran = resolved.get(key) or legacy(device)
        if ran is not None and ran != now:
            raise ValueError(f"{folder} holds a {cfg.optim} run whose {what} {ran}, while this machine's default is "
                             f"{now}; move it away or use another --out")


def check_configs(configs: Iterable[TrainConfig]) -> None:
    """Everything a run would refuse, found once before an experiment writes anything or trains: each
    configuration's batch split and optional packages, then each distinct data setting's corpus and tokenizer
    (a local corpus's token cache is built or verified here, and every run then reuses it)."""
    prepared = set()
    for cfg in configs:
        check_before_start(cfg)
        model = model_config_for(cfg)
        data = (dataclasses.astuple(data_config(cfg)), model.vocab_size, model.max_seq_len)
        if data not in prepared:
            prepare_run_data(cfg)
            prepared.add(data)


def check_planned(planned: list[PlannedRun]) -> None:
    """:func:`check_configs` of the planned runs."""
    check_configs(run.cfg for run in planned)


def default_jobs() -> int:
    """One process per visible GPU on CUDA; one on CPU (a small model already uses every core)."""
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s`` or ``6h30m``; ``--`` when unknown."""
    if not seconds or seconds != seconds:
        return "--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


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
        return train_one(dataclasses.asdict(cfg), str(cfg.run_dir / "train.log") if logs else None, threads, device)

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


def _job_args(trunk: PlannedRun, branches: list[tuple[PlannedRun, int]]) -> tuple[dict, list[tuple[dict, int]]]:
    """A job's configs as plain dicts, for :func:`run_job` here or in a spawned process."""
    return dataclasses.asdict(trunk.cfg), [(dataclasses.asdict(run.cfg), step) for run, step in branches]


def execute(planned: list[PlannedRun], jobs: int = 1, echo: Callable[[str], None] = print,
            launcher: LauncherConfig | None = None) -> list[Outcome]:
    """Run every planned run that is not already finished; return one outcome per planned run.

    Prints one progress line per run (``[run i/N] label | seed s | ETA``);
    finished runs are reused without training, interrupted ones resume from
    their newest checkpoint, and wsd runs that differ only in length share their stable phase
    (:func:`run_job`). With ``launcher.launcher == "submitit"`` the runs are SLURM jobs
    (:mod:`.slurm`; their logs under ``slurm/`` beside the runs folder), each trained whole, and ``jobs`` is
    unused.
    """
    check_planned(planned)
    todo, outcomes = [], {}
    for run in planned:
        if state_of(run) == "done":
            outcomes[id(run)] = Outcome(run, "reused")
        else:
            todo.append(run)
    total = len(planned)
    reused = total - len(todo)
    if reused:
        echo(f"reusing {reused} finished run(s) of {total}")
    durations: list[float] = []
    counter = reused

    def eta(remaining: int) -> str:
        if not durations:
            return "ETA --"
        return f"ETA {format_duration(sum(durations) / len(durations) * remaining / max(1, jobs))}"

    def finished(run: PlannedRun, status: str, message: str, seconds: float) -> None:
        durations.append(seconds)
        outcomes[id(run)] = Outcome(run, status, message, seconds)
        note = f"{status}: {message}" if status != "done" else message
        echo(f"      {run.label} | seed {run.seed}: {note} ({format_duration(seconds)})")

    if launcher is not None and launcher.launcher == "submitit" and todo:
        check_available(launcher)
        from .slurm import run_jobs

        run_jobs([(run, start_config(run.cfg)) for run in todo], launcher, todo[0].run_dir.parent.parent / "slurm",
                 finished, echo)
    elif jobs <= 1:
        for trunk, branches in plan_jobs(planned, todo):
            runs = [run for run, _ in branches] + [trunk]
            numbers: dict[int, int] = {}  # each run keeps the number it was given when it began

            def started(index: int, action: str, runs: list[PlannedRun] = runs, numbers: dict = numbers) -> None:
                nonlocal counter
                run = runs[index]
                if index not in numbers:
                    _stop_if_interrupted(counter, total)
                    counter += 1
                    numbers[index] = counter
                echo(f"[run {numbers[index]}/{total}] {run.label} | seed {run.seed} | {action} -> {run.run_dir} | "
                     f"{eta(total - counter + 1)}")

            results = run_job(*_job_args(trunk, branches), False, None, None, started)
            for run, (status, message, seconds) in zip(runs, results):
                finished(run, status, message, seconds)
    else:
        _execute_parallel(plan_jobs(planned, todo), jobs, total, reused, echo, eta, finished)
    return [outcomes[id(run)] for run in planned]


def _execute_parallel(work, jobs, total, done_before, echo, eta, finished) -> None:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    threads = max(1, (os.cpu_count() or 1) // jobs) if gpus == 0 else None
    pending: dict[Future, tuple[list[PlannedRun], int]] = {}
    queue = list(work)
    free_slots = list(range(jobs))
    counter = done_before
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        while queue or pending:
            if interrupts.requested():
                queue.clear()  # let the running ones checkpoint and stop; start nothing new
            while queue and free_slots:
                trunk, branches = queue.pop(0)
                runs = [run for run, _ in branches] + [trunk]
                slot = free_slots.pop(0)
                device = f"cuda:{slot % gpus}" if gpus and trunk.cfg.device in ("auto", "cuda") else None
                for run in runs:
                    counter += 1
                    what = f"branch of {trunk.run_dir.name}" if run is not trunk and branches else (
                        "resuming" if checkpoint_step(run.run_dir) is not None else "training")
                    echo(f"[run {counter}/{total}] {run.label} | seed {run.seed} | {what} -> {run.run_dir} "
                         f"(log: train.log) | {eta(total - counter + 1)}")
                future = pool.submit(run_job, *_job_args(trunk, branches), True, threads, device)
                pending[future] = (runs, slot)
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                runs, slot = pending.pop(future)
                free_slots.append(slot)
                try:
                    results = future.result()
                except InterruptedRun as exc:
                    results = [("interrupted", str(exc), 0.0)] * len(runs)
                except Exception as exc:  # noqa: BLE001 - a crashed worker fails its runs, not the experiment
                    results = [("failed", f"{type(exc).__name__}: {exc}", 0.0)] * len(runs)
                for run, (status, message, seconds) in zip(runs, results):
                    finished(run, status, message, seconds)
    sys.stdout.flush()
    _stop_if_interrupted(counter, total)


def _stop_if_interrupted(done: int, total: int) -> None:
    """Between runs: stop the experiment if Ctrl-C/SIGTERM arrived (each run saved its own checkpoint)."""
    name = interrupts.requested()
    if name:
        raise InterruptedRun(f"{name} after {done} of {total} runs: finished runs are kept and interrupted ones "
                             "resume from their checkpoints")
