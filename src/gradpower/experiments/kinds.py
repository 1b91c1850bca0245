"""Kinds of experiment, one protocol: a kind plans its runs, analyses a folder of them into a typed result, and
writes that result as files. ``compare``, ``sweep``, ``claims`` and ``noise`` are kinds; a new kind is one module
that defines an :class:`Experiment` and calls :func:`register` (``docs/layout.md``, "Adding a kind of
experiment").

Everything a kind shares comes from here: :func:`run_experiment` plans, checks, records (``experiment.json``
names the kind), executes through :mod:`.execute` (this process, a pool, or SLURM) and reports;
:func:`rebuild_report` (``gradpower report DIR``) finds the folder's kind in the registry and analyses and writes
again without training; :mod:`.pairing` asks the kind which configuration it planned for each listed run.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadInput
from .job import PlannedRun

#: The kinds that ship with gradpower, imported on first lookup (each module registers its kind).
BUILTIN = {"compare": ".compare", "sweep": ".sweep", "claims": ".claims", "noise": ".noise"}
_KINDS: dict[str, Experiment] = {}


class SavedSpec:
    """A kind's spec (a dataclass) as ``experiment.json`` keeps it: its fields as a dict, and back."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """The spec of a saved ``to_dict()``; keys this spec does not have (folders of earlier versions held
        every kind's) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


class Experiment(Protocol):
    """A kind of experiment of seeded runs."""

    #: The kind's name, recorded as ``experiment.json``'s ``kind``.
    kind: str
    #: Its spec's type (a :class:`~gradpower.experiments.spec.RunsSpec`), saved in ``experiment.json``.
    spec_type: type

    def plan(self, spec: Any, runs_root: Path) -> list[PlannedRun]:
        """Every run, each knowing what it is (arm or grid point, seed, horizon, phase), its folder under
        ``runs_root``."""
        ...

    def planned_config(self, spec: Any, entry: dict[str, Any]) -> Any:
        """The ``TrainConfig`` the spec plans for a run listed as ``entry`` (None when it plans none such)."""
        ...

    def analyse(self, folder: Path, **options: Any) -> Any:
        """The folder's runs read back (pairing checked) and analysed into the kind's typed result; no file is
        written."""
        ...

    def write(self, folder: Path, result: Any) -> str:
        """The result's tables, figures and ``report.md`` in ``folder``; returns the summary text."""
        ...


EXPERIMENT_FILE = "experiment.json"


def write_experiment(out: Path, record: dict[str, Any]) -> None:
    """``experiment.json``: the spec and the runs that belong to the experiment (written atomically)."""
    tmp = out / f".{EXPERIMENT_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out / EXPERIMENT_FILE)


def read_experiment(out: Path) -> dict[str, Any]:
    path = out / EXPERIMENT_FILE
    if not path.is_file():
        raise BadInput(f"{path}: not found; is {out} a folder written by 'gradpower compare', 'sweep', 'claims' or "
                       "'noise'?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc}); rerun the experiment to rewrite it") from None


def register(experiment: Experiment) -> Experiment:
    """Make ``experiment`` the kind of its name: :func:`rebuild_report` and :mod:`.pairing` find it by the
    ``kind`` its folders record.

    Args:
        experiment: an object with the :class:`Experiment` protocol's attributes and methods.

    Returns:
        ``experiment``.
    """
    _KINDS[experiment.kind] = experiment
    return experiment


def registered(kind: str) -> Experiment:
    """The experiment registered as ``kind`` (a built-in one is imported on first use)."""
    if kind not in _KINDS and kind in BUILTIN:
        importlib.import_module(BUILTIN[kind], __package__)
    if kind not in _KINDS:
        raise BadInput(f"no kind of experiment named {kind!r} is registered; known: {', '.join(kinds())}")
    return _KINDS[kind]


def kinds() -> list[str]:
    """Every kind's name: the built-in ones and those registered since."""
    return sorted(set(BUILTIN) | set(_KINDS))


def record_of(experiment: Experiment, spec: Any, planned: list[PlannedRun], folder: Path, command: str
              ) -> dict[str, Any]:
    """``experiment.json``'s content: the kind, the command, the spec and each planned run's entry."""
    return {"kind": experiment.kind, "command": command, "spec": spec.to_dict(),
            "runs": [run.entry(folder) for run in planned]}


def spec_of(record: dict[str, Any]) -> tuple[Experiment, Any]:
    """A folder's kind and its spec, from its ``experiment.json`` record (folders without a kind are compares)."""
    experiment = registered(record.get("kind", "compare"))
    return experiment, experiment.spec_type.from_dict(record["spec"])


def rebuild_report(folder: str | Path, **options: Any) -> str:
    """The tables and figures of an experiment folder rebuilt from its runs (no training), by its kind's
    ``analyse`` and ``write``. ``options`` go to ``analyse`` (compare: ``baseline``)."""
    out = Path(folder)
    experiment, _ = spec_of(read_experiment(out))
    for name in options:
        if name not in inspect.signature(experiment.analyse).parameters:
            raise BadInput(f"--{name.replace('_', '-')} does not apply to {out}, a {experiment.kind} folder")
    return experiment.write(out, experiment.analyse(out, **options))


def run_experiment(experiment: Experiment, spec: Any, out: Path, jobs: int = 1, command: str = "",
                   echo: Callable[[str], None] = print, launcher: Any = None) -> str:
    """Plan, check (every configuration and data setting, before anything is written), record, train (or
    reuse) every run, then analyse and write the report. Raises
    :class:`~gradpower.experiments.execute.RunsFailedError` (after the report of the others) when runs failed.

    Args:
        experiment: the kind (an :class:`Experiment`).
        spec: its spec.
        out: the experiment's folder.
        jobs: runs trained at once by the local launcher.
        command: the command line, recorded in experiment.json.
        echo: where progress lines go.
        launcher: where the runs execute (default: this machine).

    Returns:
        The kind's summary text.
    """
    from .execute import RunsFailedError, check_planned, execute, failures

    planned = experiment.plan(spec, out / "runs")
    check_planned(planned)
    out.mkdir(parents=True, exist_ok=True)
    write_experiment(out, record_of(experiment, spec, planned, out, command or f"gradpower {experiment.kind}"))
    ladder = f" x {len(spec.horizons)} horizon(s)" if spec.horizons else ""
    echo(f"== {experiment.kind}: {len(planned)} run(s) over {spec.seeds} seed(s){ladder} -> {out}")
    failed = failures(execute(planned, jobs, echo, launcher))
    text = experiment.write(out, experiment.analyse(out))
    if failed:
        raise RunsFailedError(failed, text)
    return text
