"""The pilot's selection rule (experiments/pilot/choose.py) on hand-made candidate folders: it fits seeds into
the budget from the wall time, predicts the half-width with Student's t, and never reads the paired mean."""

import csv
import importlib.util
import math
from pathlib import Path

from scipy import stats

CHOOSE = Path(__file__).resolve().parents[1] / "experiments" / "pilot" / "choose.py"


def load_rule():
    spec = importlib.util.spec_from_file_location("choose", CHOOSE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def candidate(root: Path, name: str, diff_sd: float, wall_s: float, diff_mean: float) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    with (folder / "plan.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "n_seeds", "diff_sd", "mde_80", "seeds_needed", "est_wall_s"])
        writer.writerow(["adampower p=1.2", 4, diff_sd, "", "", ""])
    with (folder / "runs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "seed", "final_val_loss", "tokens", "wall_s"])
        for seed in range(4):
            writer.writerow(["adamw", seed, 5.0, 1000, wall_s])
            writer.writerow(["adampower p=1.2", seed, 5.0 + diff_mean, 1000, wall_s])


def test_the_rule_fits_seeds_into_the_budget_and_predicts_the_half_width(tmp_path):
    rule = load_rule()
    candidate(tmp_path, "short", diff_sd=0.02, wall_s=20.0, diff_mean=+0.05)
    row = rule.candidate(tmp_path / "short", budget_s=220.0)
    assert row["seeds_in_budget"] == 5  # 220 // (2 arms x 20 s)
    assert math.isclose(row["expected_half"], stats.t.ppf(0.975, 4) * 0.02 / math.sqrt(5))


def test_the_choice_follows_the_predicted_half_width_not_the_paired_mean(tmp_path, capsys):
    rule = load_rule()
    candidate(tmp_path, "flattering", diff_sd=0.04, wall_s=20.0, diff_mean=-0.08)  # lowest mean, noisy
    candidate(tmp_path, "quiet", diff_sd=0.01, wall_s=30.0, diff_mean=+0.01)
    candidate(tmp_path, "too-slow", diff_sd=0.001, wall_s=200.0, diff_mean=-0.2)  # one seed fits: no interval
    assert rule.main([str(tmp_path), "--budget-s", "220"]) == 0
    printed = capsys.readouterr().out
    assert "chosen: quiet with 3 seeds" in printed
    assert "| too-slow |" in printed and "| inf |" in printed
