"""Where an experiment's runs execute: here (``local``, ``--jobs N`` processes) or as SLURM jobs through submitit.

:class:`LauncherConfig` holds the ``--launcher`` flags of ``compare``, ``sweep`` and ``claims`` and the
``[launcher]`` table of an experiment file (same keys; flags win). It also says what a SLURM job of one run
asks for (:func:`sbatch_parameters`) and, for a run over more than one GPU, the ``torchrun`` command the job
starts on each of its nodes (:func:`torchrun_command`), so both can be read, and tested, without a cluster.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..extras import require
from ..train.config import TrainConfig, config_fields

LAUNCHERS = ("local", "submitit")
#: ``slurm``: sbatch on a cluster; ``local``: submitit's LocalExecutor, real submitit jobs as processes of this
#: machine (for tests and for trying a launch without a cluster).
SUBMITIT_EXECUTORS = ("slurm", "local")
#: Seconds before the time limit at which SLURM sends SIGUSR2: time to finish a step and write a checkpoint.
SIGNAL_DELAY_S = 120


class SubmissionError(BadInput):
    """The cluster refused the jobs, or there is no cluster here (one line, exit 2)."""


class JobsSubmitted(Exception):  # noqa: N818 - not an error: --detach ends the command here on purpose
    """``--detach``: the jobs are submitted; the command ends here (exit 0) and names them."""

    def __init__(self, job_ids: str, logs: Path) -> None:
        self.job_ids, self.logs = job_ids, logs
        super().__init__(f"submitted job(s) {job_ids}; their logs are in {logs}")


@dataclass
class LauncherConfig:
    """How each run of an experiment is launched (the ``--launcher`` flags and the ``[launcher]`` table)."""

    launcher: str = "local"
    submitit_executor: str = "slurm"
    slurm_partition: str | None = None
    #: GPUs of one run in all (over ``nodes_per_run`` nodes, the same number on each); 0: a CPU job.
    gpus_per_run: int = 1
    nodes_per_run: int = 1
    cpus_per_gpu: int = 8
    timeout_min: int = 240
    slurm_array_parallelism: int = 256
    slurm_setup: list[str] = field(default_factory=list)
    slurm_extra: dict[str, str] = field(default_factory=dict)
    #: Submit and return at once, printing the job ids (``gradpower report OUT`` once they are done).
    detach: bool = False

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise BadInput(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.submitit_executor not in SUBMITIT_EXECUTORS:
            raise BadInput(f"--submitit-executor must be one of {', '.join(SUBMITIT_EXECUTORS)}, "
                           f"got {self.submitit_executor!r}")
        for name, least in (("gpus_per_run", 0), ("nodes_per_run", 1), ("cpus_per_gpu", 1), ("timeout_min", 1),
                            ("slurm_array_parallelism", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BadInput(f"--{name.replace('_', '-')} must be a whole number >= {least}, got {value!r}")
        if self.gpus_per_run % self.nodes_per_run:
            raise BadInput(f"--gpus-per-run {self.gpus_per_run} does not split evenly over --nodes-per-run "
                           f"{self.nodes_per_run} (the GPUs of a run are the same number on each of its nodes)")
        if self.nodes_per_run > 1 and self.gpus_per_run == 0:
            raise BadInput("--nodes-per-run > 1 needs GPUs (--gpus-per-run): a CPU run is one process")
        if self.submitit_executor == "local" and self.nodes_per_run > 1:
            raise BadInput("--submitit-executor local runs on this machine: --nodes-per-run must be 1")
        if self.launcher == "local":
            changed = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self) if f.name != "launcher"
                       and getattr(self, f.name) != (f.default if f.default_factory is dataclasses.MISSING
                                                     else f.default_factory())]
            if changed:
                raise BadInput(f"{', '.join(changed)} go(es) with --launcher submitit (this launcher is local)")

    @property
    def gpus_per_node(self) -> int:
        return self.gpus_per_run // self.nodes_per_run

    @property
    def distributed(self) -> bool:
        """A run over more than one GPU: its job starts ``torchrun`` with ``train --parallel fsdp``."""
        return self.gpus_per_run > 1


def check_available(launcher: LauncherConfig) -> None:
    """Refuse ``--launcher submitit`` without submitit, naming the extra that installs it."""
    if launcher.launcher == "submitit":
        require("--launcher submitit", "submitit")


def launcher_config(table: Mapping[str, Any] | None, flags: Mapping[str, Any], where: str = "[launcher]"
                    ) -> LauncherConfig:
    """The launcher of an experiment: defaults < its file's ``[launcher]`` table < the flags given (None: not
    given). Unknown keys and wrong types are one-line errors naming ``where``."""
    names = {f.name: f for f in dataclasses.fields(LauncherConfig)}
    values: dict[str, Any] = {}
    for key, value in (table or {}).items():
        name = key.replace("-", "_")
        if name not in names:
            raise BadInput(f"{where}: unknown key {key!r}; valid: {', '.join(names)}")
        values[name] = value
    for name, value in flags.items():
        if value is not None and value != [] and value != {}:
            values[name] = value
    setup = values.get("slurm_setup", [])
    if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
        raise BadInput(f"{where}: slurm_setup must be a list of shell lines, got {setup!r}")
    if "slurm_extra" in values:
        if not isinstance(values["slurm_extra"], Mapping):
            raise BadInput(f"{where}: slurm_extra must be a table of sbatch options, got {values['slurm_extra']!r}")
        values["slurm_extra"] = {str(k): str(v) for k, v in values["slurm_extra"].items()}
    try:
        return LauncherConfig(**values)
    except ValueError as exc:
        if not table:  # the flags alone: the message names the flag
            raise
        raise BadInput(f"{where}: {exc}") from None


def parse_extra(items: list[str]) -> dict[str, str]:
    """``--slurm-extra KEY=VALUE`` flags (e.g. ``account=proj``, ``qos=high``) as sbatch options."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--slurm-extra expects KEY=VALUE (an sbatch option without its dashes), got {item!r}")
        extra[key.strip().lstrip("-")] = value.strip()
    return extra


def sbatch_parameters(launcher: LauncherConfig) -> dict[str, Any]:
    """The parameters of one run's SLURM job, in submitit's ``SlurmExecutor`` names (one task per node; the
    task starts the run, or ``torchrun`` over the node's GPUs)."""
    params: dict[str, Any] = {
        "job_name": "gradpower", "time": launcher.timeout_min, "nodes": launcher.nodes_per_run,
        "ntasks_per_node": 1, "cpus_per_task": launcher.cpus_per_gpu * max(1, launcher.gpus_per_node),
        "signal_delay_s": SIGNAL_DELAY_S, "array_parallelism": launcher.slurm_array_parallelism,
    }
    if launcher.gpus_per_node:
        params["gpus_per_node"] = launcher.gpus_per_node
    if launcher.slurm_partition:
        params["partition"] = launcher.slurm_partition
    if launcher.slurm_setup:
        params["setup"] = list(launcher.slurm_setup)
    if launcher.slurm_extra:
        params["additional_parameters"] = dict(launcher.slurm_extra)
    return params


def sbatch_text(launcher: LauncherConfig, folder: Path, command: str, runs: int) -> str:
    """The sbatch script submitit writes for an array of ``runs`` such jobs (``command`` runs each)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=command, folder=str(folder), map_count=runs, **sbatch_parameters(launcher))


def train_flags(cfg: TrainConfig) -> list[str]:
    """``gradpower train`` flags that give ``cfg`` (every field that differs from its default)."""
    default = TrainConfig()
    flags: list[str] = []
    for f in config_fields():
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            raise BadInput(f"{f.name}=None cannot be given as a flag (its default is {getattr(default, f.name)})")
        else:
            flags += [flag, repr(value) if isinstance(value, float) else str(value)]
    return flags


def torchrun_executable() -> list[str]:
    """``torchrun`` of this Python (the job may not have the environment's bin folder on its PATH)."""
    beside = Path(sys.executable).with_name("torchrun")
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def torchrun_command(cfg: TrainConfig, launcher: LauncherConfig, master: str, port: int, job_id: str
                     ) -> list[str]:
    """The command one node of a multi-GPU run starts: ``torchrun`` over the node's GPUs (rendezvous at the
    job's first node, named after the job) running ``gradpower train --parallel fsdp`` on the run's folder."""
    if launcher.nodes_per_run > 1:
        where = [f"--nnodes={launcher.nodes_per_run}", f"--nproc-per-node={launcher.gpus_per_node}",
                 "--rdzv-backend=c10d", f"--rdzv-endpoint={master}:{port}", f"--rdzv-id={job_id}"]
    else:
        where = ["--standalone", "--nnodes=1", f"--nproc-per-node={launcher.gpus_per_node}"]
    return [*torchrun_executable(), *where, "-m", "gradpower", "train",
            *train_flags(dataclasses.replace(cfg, parallel="fsdp"))]
