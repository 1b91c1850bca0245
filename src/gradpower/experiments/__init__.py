"""Experiments: seeded comparisons (``compare``), grids (``sweep``), the papers' claims (``claims``) and their
reports, read from run folders. Each kind of experiment is an :class:`Experiment` registered in :mod:`.kinds`.

Everything here calls :func:`gradpower.train.train` to make runs and
:func:`load_run` to read them back; statistics live in :mod:`.stats` (pure
numbers), figures in :mod:`.plots`. The names below are imported on first use (:mod:`gradpower.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "Arm": ".spec",
    "CompareResult": ".report",
    "CompareSpec": ".spec",
    "Experiment": ".kinds",
    "PlannedRun": ".job",
    "Run": ".runs",
    "RunReadError": ".runs",
    "RunsSpec": ".spec",
    "SweepResult": ".sweep",
    "SweepSpec": ".spec",
    "analyse_compare": ".report",
    "analyse_sweep": ".sweep",
    "default_spec": ".defaults",
    "load_experiment": ".spec",
    "load_run": ".runs",
    "parse_arm": ".spec",
    "parse_grid_axis": ".spec",
    "rebuild_report": ".kinds",
    "register": ".kinds",
    "registered": ".kinds",
    "run_claims": ".claims",
    "run_compare": ".compare",
    "run_experiment": ".kinds",
    "run_sweep": ".sweep",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .claims import run_claims
    from .compare import run_compare
    from .defaults import default_spec
    from .job import PlannedRun
    from .kinds import Experiment, rebuild_report, register, registered, run_experiment
    from .report import CompareResult, analyse_compare
    from .runs import Run, RunReadError, load_run
    from .spec import Arm, CompareSpec, RunsSpec, SweepSpec, load_experiment, parse_arm, parse_grid_axis
    from .sweep import SweepResult, analyse_sweep, run_sweep

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
