"""Experiments: seeded comparisons (``compare``), grids (``sweep``), the papers' claims (``claims``) and their
reports, read from run folders.

Everything here calls :func:`gradpower.train.train` to make runs and
:func:`load_run` to read them back; statistics live in :mod:`.stats` (pure
numbers), figures in :mod:`.plots`. The names below are imported on first use (:mod:`gradpower.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "Arm": ".spec",
    "ExperimentSpec": ".spec",
    "Run": ".runs",
    "RunReadError": ".runs",
    "compare_report": ".report",
    "default_spec": ".defaults",
    "load_experiment": ".spec",
    "load_run": ".runs",
    "parse_arm": ".spec",
    "parse_grid_axis": ".spec",
    "rebuild_report": ".rebuild",
    "run_claims": ".claims",
    "run_compare": ".compare",
    "run_sweep": ".sweep",
    "sweep_report": ".sweep",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .claims import run_claims
    from .compare import run_compare
    from .defaults import default_spec
    from .rebuild import rebuild_report
    from .report import compare_report
    from .runs import Run, RunReadError, load_run
    from .spec import Arm, ExperimentSpec, load_experiment, parse_arm, parse_grid_axis
    from .sweep import run_sweep, sweep_report

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
