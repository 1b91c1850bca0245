"""The pilot's selection rule for the default of ``gradpower compare``, fixed before any candidate ran: fidelity
first (the longest training that fits), then precision. It reads cost and noise, never the effect.

Candidates (``experiments/pilot/*.toml``): dense llama-tiny, 8 x 128, AdamW vs AdamPower (p = 1.2) at the
preset's lr, under wsd and under cos, on the horizon ladder 320, 640, 1280, ... steps. The ladder starts at 320
steps: the first ~120 steps are the transient in which the loss still falls fast. ``run.sh`` runs each
candidate at 320 steps on pilot seeds 100-102 (``compare --plan``, one folder ``NAME-h320`` each) with the
CPU's default ``--jobs``.

1. Cost. A candidate's predicted demo time at horizon H is 4 seeds x 2 arms x (its mean wall time per run at its
   pilot horizon x H / that horizon) / the runs at a time. The time per run grows at most linearly with the
   steps (the final evaluation's time is fixed), so this never predicts a longer horizon cheaper than it is.
2. The horizon: the longest ladder horizon at which some candidate's predicted time fits the budget. When none
   fits at 320 steps, 320 steps, never less.
3. The candidate: among those that fit at that horizon (when none fits: the cheapest, and every candidate within
   10% of its cost, a tie on this noisy VM), the smallest predicted 95% half-width with 4 seeds,
   ``t(0.975, 3) * diff_sd / sqrt(4)``, ``diff_sd`` from the pilot seeds. A horizon longer than the pilot's is
   chosen only after ``run.sh`` has piloted it there (the rule says so and stops).

The paired mean difference is never read. Then the default replicates on fresh seeds 0-3 (``make demo``).

Usage: python experiments/pilot/choose.py runs/pilot [--budget-s 270] [--jobs 1]
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from scipy import stats

#: Seconds of training the default may spend: ``make demo`` on a fresh clone within 8 minutes on 2 cores, less
#: the install (2 min 32 s measured here) and building the tokenizer, token shards and C++ kernel (about 1 min).
BUDGET_S = 270.0
#: The horizon ladder, in steps (never below its first rung).
LADDER = (320, 640, 1280, 2560, 5120)
SEEDS, ARMS = 4, 2
#: Costs within this fraction of the cheapest are a tie (the VM's run-to-run timing noise).
TIE = 0.10
_NAME = re.compile(r"^(?P<candidate>.+)-h(?P<horizon>\d+)$")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def pilot(folder: Path) -> dict[str, object]:
    """One pilot folder's figures: its spread of paired differences and its mean wall time per run."""
    match = _NAME.match(folder.name)
    if match is None:
        raise SystemExit(f"{folder}: a pilot folder is named CANDIDATE-hSTEPS (run.sh names them)")
    plan, runs = _rows(folder / "plan.csv"), _rows(folder / "runs.csv")
    if len(plan) != 1:
        raise SystemExit(f"{folder / 'plan.csv'}: expected one compared arm, found {len(plan)}")
    wall = sum(float(r["wall_s"]) for r in runs) / len(runs)
    return {"candidate": match["candidate"], "horizon": int(match["horizon"]), "diff_sd": float(plan[0]["diff_sd"]),
            "pilot_seeds": int(plan[0]["n_seeds"]), "wall_s": wall}


def predicted_s(row: dict[str, object], horizon: int, jobs: int) -> float:
    """The demo's predicted training time at ``horizon`` from a pilot at ``row['horizon']``."""
    return SEEDS * ARMS * float(row["wall_s"]) * horizon / int(row["horizon"]) / jobs


def half_width(diff_sd: float) -> float:
    return float(stats.t.ppf(0.975, SEEDS - 1) * diff_sd / math.sqrt(SEEDS))


def choose(rows: list[dict[str, object]], budget_s: float, jobs: int) -> tuple[int, dict[str, object], str]:
    """(horizon, chosen pilot row, why) by the rule in the module docstring."""
    shortest = {}
    for row in rows:  # each candidate's cost from its shortest pilot horizon
        name = row["candidate"]
        if name not in shortest or row["horizon"] < shortest[name]["horizon"]:
            shortest[name] = row
    fitting = [h for h in LADDER if any(predicted_s(r, h, jobs) <= budget_s for r in shortest.values())]
    if fitting:
        horizon = fitting[-1]
        pool = [r for r in shortest.values() if predicted_s(r, horizon, jobs) <= budget_s]
        why = f"the longest horizon at which a candidate fits {budget_s:.0f} s"
    else:
        horizon = LADDER[0]
        cheapest = min(predicted_s(r, horizon, jobs) for r in shortest.values())
        pool = [r for r in shortest.values() if predicted_s(r, horizon, jobs) <= cheapest * (1 + TIE)]
        why = (f"no candidate fits {budget_s:.0f} s at {horizon} steps: the cheapest there (and those within "
               f"{TIE:.0%} of it), predicted {cheapest:.0f} s")
    at = {r["candidate"]: r for r in rows if r["horizon"] == horizon}
    missing = [r["candidate"] for r in pool if r["candidate"] not in at]
    if missing:
        raise SystemExit(f"horizon {horizon} fits: pilot {', '.join(missing)} there first (run.sh {horizon})")
    chosen = min((at[r["candidate"]] for r in pool), key=lambda r: half_width(float(r["diff_sd"])))
    return horizon, chosen, why


def print_table(rows: list[dict], chosen: dict, predicted: Callable[[dict], float], horizon_header: str,
                time_header: str) -> None:
    """The candidates as a Markdown table, the chosen one in bold: its horizon, wall per run, pilot spread,
    ``predicted`` demo time and predicted half-width (also the proxy pilot's table)."""
    print(f"| candidate | {horizon_header} | wall per run | diff_sd (pilot seeds) | {time_header} | "
          "predicted half-width |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        mark = "**" if row is chosen else ""
        print(f"| {mark}{row['candidate']}{mark} | {row['horizon']} | {row['wall_s']:.1f} s | {row['diff_sd']:.4f} "
              f"({row['pilot_seeds']}) | {predicted(row):.0f} s | {half_width(float(row['diff_sd'])):.4f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding one compare --plan folder per candidate and horizon")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="training seconds of the default")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time of the default (the pilot's --jobs)")
    args = parser.parse_args(argv)
    folders = sorted(p.parent for p in args.root.glob("*/plan.csv"))
    if not folders:
        print(f"no candidate in {args.root}: run experiments/pilot/run.sh first", file=sys.stderr)
        return 2
    rows = [pilot(folder) for folder in folders]
    horizon, chosen, why = choose(rows, args.budget_s, args.jobs)
    print(f"budget {args.budget_s:.0f} s of training, {SEEDS} seeds x {ARMS} arms, {args.jobs} run(s) at a time; "
          f"predicted half-width = t(0.975, {SEEDS - 1}) * diff_sd / sqrt({SEEDS})\n")
    print_table(rows, chosen, lambda row: predicted_s(row, horizon, args.jobs), "pilot horizon",
                f"predicted demo time at {horizon} steps")
    print(f"\nhorizon {horizon} steps: {why}\nchosen: {chosen['candidate']} at {horizon} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
