"""Running a list of planned runs: reuse finished ones, resume interrupted ones, N at a time.

Every run goes through :func:`gradpower.train.train` and lives in its own
folder named after its result-defining fields (:func:`run_name`), so
re-running an experiment never redoes a finished run and never mixes two
configurations in one folder. Where the runs train is an executor
(:mod:`.executors`: this process, a pool of ``jobs`` processes, or SLURM
through :mod:`.slurm`), all driven by the same loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..train.assemble import check_before_start, data_config, hardware_choices, model_config_for, prepare_run_data
from ..train.checkpoint import latest_checkpoint
from ..train.config import TrainConfig, config_differences, run_name
from ..train.distributed import resolve_device
from .executors import Executor, PoolExecutor, Progress, SerialExecutor, drive, format_duration, usable_cores
from .job import PlannedRun, plan_jobs
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
                raise BadInput(f"{folder} holds a run of another configuration ({'; '.join(changed)}); "
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
            raise BadInput(f"{folder} holds a {cfg.optim} run whose {what} {ran}, while this machine's default is "
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
    """One process per visible GPU on CUDA; on CPU one single-threaded process per usable core.

    Measured on 2 cores (docs/performance.md, ``benchmarks/cpu_jobs.py``): two runs at once with one thread each
    finished in 0.80x (llama-tiny) and 0.83x (llama-nano) the wall time of one run at a time with two threads on an
    AVX-512 Xeon, and 0.97x on an AVX2 EPYC: the small models scale worse across threads than across processes.
    """
    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return usable_cores()


def execute(planned: list[PlannedRun], jobs: int = 1, echo: Callable[[str], None] = print,
            launcher: LauncherConfig | None = None) -> list[Outcome]:
    """Run every planned run that is not already finished; return one outcome per planned run.

    Prints one progress line per run (``[run i/N] label | seed s | ETA``);
    finished runs are reused without training, interrupted ones resume from
    their newest checkpoint, and wsd runs that differ only in length share their stable phase
    (:func:`.job.run_job`). With ``launcher.launcher == "submitit"`` the runs are SLURM jobs
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
    progress = Progress(total, max(1, jobs), echo, counter=reused)

    def finished(run: PlannedRun, status: str, message: str, seconds: float) -> None:
        progress.durations.append(seconds)
        outcomes[id(run)] = Outcome(run, status, message, seconds)
        note = f"{status}: {message}" if status != "done" else message
        echo(f"      {run.label} | seed {run.seed}: {note} ({format_duration(seconds)})")

    if not todo:
        return [outcomes[id(run)] for run in planned]
    executor = _executor(todo, jobs, launcher, progress)
    work = plan_jobs(planned, todo) if executor.shares_trunks else [(run, []) for run in todo]
    drive(executor, work, finished)
    return [outcomes[id(run)] for run in planned]


def _executor(todo: list[PlannedRun], jobs: int, launcher: LauncherConfig | None, progress: Progress) -> Executor:
    """Where the runs go: SLURM (or submitit's local processes) with ``--launcher submitit``, else this process
    (``jobs`` 1) or a pool of ``jobs`` processes."""
    if launcher is not None and launcher.launcher == "submitit":
        check_available(launcher)
        from .slurm import SubmititExecutor  # submitit is an optional extra: imported only when asked for

        return SubmititExecutor(launcher, todo[0].run_dir.parent.parent / "slurm", progress.echo)
    return SerialExecutor(progress) if jobs <= 1 else PoolExecutor(jobs, progress)
