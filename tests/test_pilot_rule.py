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


C5_RULE = Path(__file__).resolve().parents[1] / "experiments" / "c5-spikes" / "rule.py"


def test_the_c5_rule_takes_the_smallest_lr_where_every_pilot_seed_spikes_and_none_diverges(tmp_path):
    spec = importlib.util.spec_from_file_location("c5_rule", C5_RULE)
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    with (tmp_path / "sweep.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lr", "seed", "final_val_loss", "best_val_loss", "steps", "wall_s", "spikes", "run_dir"])
        for lr, spikes, finals in [(0.003, (0, 0), (5.6, 5.7)), (0.006, (2, 0), (5.6, 5.6)),
                                   (0.012, (1, 3), (5.7, "")), (0.024, (1, 1), (5.9, 6.0)), (0.048, (4, 5), (6, 6))]:
            for seed, (s, f) in enumerate(zip(spikes, finals)):
                writer.writerow([lr, 100 + seed, f, f, 10, 1.0, s, "x"])
    table = rule.pilot_table(tmp_path)
    assert table[0.006] == [(2, 5.6), (0, 5.6)]
    assert math.isnan(table[0.012][1][1])
    # 0.006: one seed without a spike; 0.012: one run did not finish; 0.024 is the first that qualifies.
    assert rule.choose(table) == 0.024
    assert rule.choose({0.003: [(0, 5.6)]}) is None
