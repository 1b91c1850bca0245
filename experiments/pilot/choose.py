"""The pilot's selection rule, fixed before any candidate ran: it reads only noise and cost, never the effect.

For each candidate folder (``gradpower compare --plan`` output) it takes the pilot's spread of the paired
differences (``diff_sd`` in ``plan.csv``) and its mean wall time per run (``wall_s`` in ``runs.csv``), fits
as many seeds as the budget allows (two arms per seed, one run at a time), and predicts the 95% interval's
half-width with that many seeds: ``t(0.975, n - 1) * diff_sd / sqrt(n)``. The candidate with the smallest
predicted half-width becomes the default. The paired mean difference is not read.

Usage: python experiments/pilot/choose.py runs/pilot [--budget-s 220]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from scipy import stats

#: Seconds of training a default comparison may spend on 2 cores, so that ``make demo`` on a fresh clone
#: (venv, tokenizer and token cache, report and figures included) stays within 5 minutes.
BUDGET_S = 220.0


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def candidate(folder: Path, budget_s: float) -> dict[str, object]:
    """One candidate's pilot figures and its predicted half-width within ``budget_s``."""
    plan, runs = _rows(folder / "plan.csv"), _rows(folder / "runs.csv")
    if len(plan) != 1:
        raise SystemExit(f"{folder / 'plan.csv'}: expected one compared arm, found {len(plan)}")
    diff_sd = float(plan[0]["diff_sd"])
    wall = sum(float(r["wall_s"]) for r in runs) / len(runs)
    arms = len({r["arm"] for r in runs})
    fit = int(budget_s // (arms * wall))
    half = stats.t.ppf(0.975, fit - 1) * diff_sd / math.sqrt(fit) if fit >= 2 else math.inf
    return {"candidate": folder.name, "pilot_seeds": int(plan[0]["n_seeds"]), "diff_sd": diff_sd,
            "wall_s": wall, "tokens": int(float(runs[0]["tokens"])), "seeds_in_budget": fit, "expected_half": half}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding one compare --plan folder per candidate")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="training seconds of the default")
    args = parser.parse_args(argv)
    folders = sorted(p.parent for p in args.root.glob("*/plan.csv"))
    if not folders:
        print(f"no candidate in {args.root}: run experiments/pilot/run.sh first", file=sys.stderr)
        return 2
    table = [candidate(folder, args.budget_s) for folder in folders]
    chosen = min(table, key=lambda row: row["expected_half"])
    print(f"budget {args.budget_s:.0f} s of training; expected half-width = t(0.975, n-1) * diff_sd / sqrt(n)\n")
    print("| candidate | tokens per run | wall per run | diff_sd (pilot seeds) | seeds in budget "
          "| expected half-width |")
    print("|---|---|---|---|---|---|")
    for row in table:
        mark = "**" if row is chosen else ""
        print(f"| {mark}{row['candidate']}{mark} | {row['tokens']:,} | {row['wall_s']:.1f} s | "
              f"{row['diff_sd']:.4f} ({row['pilot_seeds']}) | {row['seeds_in_budget']} | {row['expected_half']:.4f} |")
    print(f"\nchosen: {chosen['candidate']} with {chosen['seeds_in_budget']} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
