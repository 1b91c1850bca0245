"""Claim C5's setting rule, fixed before the pilot ran: the smallest lr at which AdamW spikes in every pilot seed.

Reads ``sweep.csv`` of ``experiments/c5-spikes/run.sh`` (AdamW alone over an lr grid, pilot seeds 100 and 101):
an lr qualifies when every one of its pilot runs finished with a finite final loss and counted at least one loss
spike (:func:`gradpower.experiments.stats.count_spikes`). The smallest qualifying lr becomes C5's lr. AdamPower is
not in the pilot, so the choice cannot depend on the effect C5 measures.

Usage: python experiments/c5-spikes/rule.py runs/c5-spikes
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def pilot_table(folder: Path) -> dict[float, list[tuple[int, float]]]:
    """Per lr: each pilot run's (spikes, final validation loss; nan when it did not finish)."""
    path = folder / "sweep.csv"
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise SystemExit(f"{path}: not found; run experiments/c5-spikes/run.sh first") from None
    table: dict[float, list[tuple[int, float]]] = {}
    for row in rows:
        final = float(row["final_val_loss"]) if row["final_val_loss"] else math.nan
        spikes = int(row["spikes"]) if row["spikes"] else 0
        table.setdefault(float(row["lr"]), []).append((spikes, final))
    return dict(sorted(table.items()))


def choose(table: dict[float, list[tuple[int, float]]]) -> float | None:
    """The smallest lr whose every pilot run finished (finite loss) with at least one spike; None when none does."""
    for lr, runs in table.items():
        if runs and all(spikes >= 1 and math.isfinite(final) for spikes, final in runs):
            return lr
    return None


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    table = pilot_table(args.folder)
    print("| lr | AdamW spikes per pilot seed | final val loss per pilot seed |\n|---|---|---|")
    for lr, runs in table.items():
        print(f"| {lr:g} | {', '.join(str(s) for s, _ in runs)} | {', '.join(f'{f:.4f}' for _, f in runs)} |")
    chosen = choose(table)
    if chosen is None:
        sys.exit("no lr of the grid makes AdamW spike in every pilot seed without diverging: extend the grid")
    print(f"\nchosen: lr {chosen:g}")


if __name__ == "__main__":
    main()
