"""``gradpower report``: the tables and figures of a compare or sweep folder rebuilt from its runs (no training)."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from .folder import read_experiment
from .report import compare_report
from .sweep import sweep_report


def rebuild_report(out: str | Path, baseline: str | None = None) -> str:
    """Rebuild the tables and figures of a compare or sweep folder from its runs (no training)."""
    folder = Path(out)
    kind = read_experiment(folder).get("kind")
    if kind == "sweep":
        if baseline is not None:
            raise BadInput("--baseline applies to compare folders; this is a sweep")
        return sweep_report(folder)
    return compare_report(folder, baseline)
