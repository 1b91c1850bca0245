"""Experiments: seeded comparisons (``compare``), grids (``sweep``), the papers' claims (``claims``) and their
reports, read from run folders.

Everything here calls :func:`gradpower.train.train` to make runs and
:func:`load_run` to read them back; statistics live in :mod:`.stats` (pure
numbers), figures in :mod:`.plots`.
"""

from pathlib import Path

from .claims import run_claims
from .compare import default_spec, run_compare
from .folder import read_experiment
from .report import compare_report
from .runs import Run, RunReadError, load_run
from .spec import Arm, ExperimentSpec, load_experiment, parse_arm, parse_grid_axis
from .sweep import run_sweep, sweep_report


def rebuild_report(out: str | Path, baseline: str | None = None) -> str:
    """Rebuild the tables and figures of a compare or sweep folder from its runs (no training)."""
    folder = Path(out)
    kind = read_experiment(folder).get("kind")
    if kind == "sweep":
        if baseline is not None:
            raise ValueError("--baseline applies to compare folders; this is a sweep")
        return sweep_report(folder)
    return compare_report(folder, baseline)


__all__ = [
    "Arm",
    "ExperimentSpec",
    "Run",
    "RunReadError",
    "compare_report",
    "default_spec",
    "load_experiment",
    "load_run",
    "parse_arm",
    "parse_grid_axis",
    "rebuild_report",
    "run_claims",
    "run_compare",
    "run_sweep",
    "sweep_report",
]
