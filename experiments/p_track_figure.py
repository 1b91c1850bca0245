"""The p trajectories of C11 (``--p track``): one seed per batch size at the claim's headline horizon, from a
``gradpower claims --only C11`` folder. Each panel shows the p in force (the controller's output), each raw
estimate p* and the median noise-to-signal ratio it was measured at, against training tokens.

Usage: python experiments/p_track_figure.py runs/claims-c11 docs/p-track.png [SEED]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the Agg backend must be chosen before pyplot is imported

from gradpower.experiments import load_run  # noqa: E402

ARM = "adampower p=track"


def headline_run(folder: Path, seed: int):
    """The tracking arm's run of ``seed`` at the longest horizon listed in ``folder/experiment.json``."""
    entries = [e for e in json.loads((folder / "experiment.json").read_text())["runs"]
               if e["arm"] == ARM and e["seed"] == seed and e["phase"] == "final"]
    if not entries:
        raise SystemExit(f"{folder}: no finished {ARM!r} run of seed {seed}")
    entry = max(entries, key=lambda e: e.get("horizon") or 0)
    return load_run(folder / entry["dir"])


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    root, target = Path(argv[0]), Path(argv[1])
    seed = int(argv[2]) if len(argv) == 3 else 0
    folders = sorted((d for d in root.glob("C11.*") if not d.name.endswith("-pilot")),
                     key=lambda d: int(d.name.split(".b")[-1]))
    if not folders:
        raise SystemExit(f"{root}: no C11 folders (run gradpower claims --only C11 --out {root} first)")
    fig, axes = plt.subplots(1, len(folders), figsize=(5.5 * len(folders), 3.8), squeeze=False)
    for ax, folder in zip(axes[0], folders):
        run = headline_run(folder, seed)
        steps, ps = run.p_trajectory
        per_step = run.tokens / run.steps
        updates = [r for r in run.records if "p_track" in r]
        ax.step(steps * per_step, ps, where="post", color="C0", label="p in force")
        ax.plot([r["tokens"] for r in updates], [r["p_star"] for r in updates], "o", ms=3, color="C0", alpha=0.5,
                label="p* of each update")
        ax.set(xlabel="training tokens", ylabel="p", ylim=(0.25, 2.1),
               title=f"{folder.name}: batch {run.config['batch_size']}, seed {seed}, {run.steps} steps")
        ax.grid(alpha=0.3)
        noise = ax.twinx()
        noise.plot([r["tokens"] for r in updates], [r["noise_ratio_median"] for r in updates], color="C1", lw=1,
                   label="median noise/signal")
        noise.set_ylabel("median sigma/|mu| (the averages')")
        lines = ax.get_legend_handles_labels()
        more = noise.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    fig.suptitle("--p track: p re-chosen from the measured gradient noise (from 1.0, at most 0.1 per update)")
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
