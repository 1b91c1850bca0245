"""The README's "Choosing p" table from experiments/choosing-p.sh's folder: per batch size, the predicted p*
(early and late, uniform and Gaussian noise) next to each p's paired difference against p = 1.0 and the
sweep's best p with whether it is resolved.

Usage: python experiments/choosing_p_table.py runs/choosing-p
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise SystemExit(f"{path} is missing: run experiments/choosing-p.sh first")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _p_star(path: Path, batch: str) -> str:
    row = next(r for r in _rows(path) if r["batch_size"] == batch and r["block"] == "all")
    return f"{float(row['p_star_uniform']):g} / {float(row['p_star_gaussian']):g}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    root = Path(argv[0])
    summary = _rows(root / "sweep" / "summary.csv")
    best = {r["given"]: r for r in _rows(root / "sweep" / "best.csv") if r["field"] == "p"}
    ps = sorted({float(r["p"]) for r in summary})
    others = [p for p in ps if p != 1.0]
    print("| batch | p* early (uniform / Gaussian) | p* late (uniform / Gaussian) | val loss p=1.0 | "
          + " | ".join(f"p={p:g} - p=1.0 [95% CI]" for p in others) + " | best p |")
    print("|---" * (5 + len(others)) + "|")
    for batch in sorted({r["batch_size"] for r in summary}, key=int):
        points = {float(r["p"]): r for r in summary if r["batch_size"] == batch}
        cells = [f"{float(points[p]['diff_mean']):+.4f} [{float(points[p]['diff_ci_low']):+.4f}, "
                 f"{float(points[p]['diff_ci_high']):+.4f}]" for p in others]
        top = best[f"batch_size={batch}"]
        verdict = "resolved" if top["resolved"] == "True" else "not resolved"
        print(f"| {batch} | {_p_star(root / 'noise-early' / 'noise.csv', batch)} | "
              f"{_p_star(root / f'noise-late-b{batch}' / 'noise.csv', batch)} | "
              f"{float(points[1.0]['mean']):.4f} ± {float(points[1.0]['std']):.4f} | " + " | ".join(cells)
              + f" | {float(top['best_value']):g} ({verdict}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
