"""An experiment folder's files: its CSV tables and its listed runs, read back (``experiment.json``, what belongs
to it, is :mod:`.kinds`').

``compare`` and ``sweep`` write the record before they train, so an
interrupted experiment still lists its runs; reports read everything back
from here.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from .pairing import check_pairing
from .runs import Run, RunReadError, load_run


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return "" if not math.isfinite(value) else f"{value:.6g}"
        return "" if value is None else value

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: cell(row.get(c)) for c in columns})
    return path


def load_listed_runs(out: Path, record: dict[str, Any]) -> list[tuple[dict[str, Any], Run | None]]:
    """Each run ``record`` lists with its :class:`Run`, or ``None`` when the folder is missing or unreadable;
    refused in one line when they would not pair (:func:`.pairing.check_pairing`).

    A listed folder may lie outside ``out`` (``../runs/NAME`` when comparisons share their runs); its path is
    normalised, so one run has one name wherever it is listed."""
    loaded = []
    for entry in record["runs"]:
        try:
            loaded.append((entry, load_run(Path(os.path.normpath(out / entry["dir"])))))
        except RunReadError:
            loaded.append((entry, None))
    check_pairing(out, record, loaded)
    return loaded
