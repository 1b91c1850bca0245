"""The pilot's selection rules on hand-made candidate folders: the default's (experiments/pilot/choose.py) goes up the
horizon ladder as far as the budget allows, then takes the smallest predicted half-width, never the paired mean."""

import csv
import importlib.util
import math
from pathlib import Path

import pytest
from scipy import stats

CHOOSE = Path(__file__).resolve().parents[1] / "experiments" / "pilot" / "choose.py"


def load_rule(path: Path = CHOOSE):
    spec = importlib.util.spec_from_file_location(path.parent.name.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def candidate(root: Path, name: str, diff_sd: float, wall_s: float, diff_mean: float) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    with (folder / "plan.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "n_seeds", "diff_sd", "mde_80", "seeds_needed", "est_wall_s"])
        writer.writerow(["adampower p=1.2", 3, diff_sd, "", "", ""])
    with (folder / "runs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "seed", "final_val_loss", "tokens", "wall_s"])
        for seed in range(3):
            writer.writerow(["adamw", seed, 5.0, 1000, wall_s])
            writer.writerow(["adampower p=1.2", seed, 5.0 + diff_mean, 1000, wall_s])


def test_the_rule_predicts_the_demo_time_and_the_half_width_with_four_seeds(tmp_path):
    rule = load_rule()
    candidate(tmp_path, "wsd-h320", diff_sd=0.02, wall_s=30.0, diff_mean=+0.05)
    row = rule.pilot(tmp_path / "wsd-h320")
    assert row["candidate"] == "wsd" and row["horizon"] == 320
    assert rule.predicted_s(row, 640, jobs=1) == 4 * 2 * 30.0 * 2  # linear in the steps
    assert rule.predicted_s(row, 320, jobs=2) == 4 * 2 * 30.0 / 2
    assert math.isclose(rule.half_width(0.02), stats.t.ppf(0.975, 3) * 0.02 / 2)


def test_with_nothing_fitting_the_rule_stays_at_320_steps_and_takes_the_cheapest(tmp_path, capsys):
    rule = load_rule()
    candidate(tmp_path, "flattering-h320", diff_sd=0.05, wall_s=100.0, diff_mean=-0.2)  # best mean, noisier
    candidate(tmp_path, "quiet-h320", diff_sd=0.01, wall_s=105.0, diff_mean=+0.1)  # within 10%: a tie on cost
    candidate(tmp_path, "slow-h320", diff_sd=0.001, wall_s=150.0, diff_mean=-0.3)  # quietest, but dearer
    assert rule.main([str(tmp_path), "--budget-s", "270"]) == 0
    printed = capsys.readouterr().out
    assert "chosen: quiet at 320 steps" in printed and "no candidate fits 270 s at 320 steps" in printed


def test_the_rule_goes_up_the_ladder_as_far_as_the_budget_allows_then_asks_for_that_pilot(tmp_path, capsys):
    rule = load_rule()
    candidate(tmp_path, "wsd-h320", diff_sd=0.03, wall_s=10.0, diff_mean=-0.2)  # 80 s at 320: fits to 1280 (320 s)
    candidate(tmp_path, "cos-h320", diff_sd=0.01, wall_s=20.0, diff_mean=+0.2)  # fits to 640 (320 s)
    with pytest.raises(SystemExit, match="horizon 1280 fits: pilot wsd there first"):
        rule.main([str(tmp_path), "--budget-s", "330"])
    candidate(tmp_path, "wsd-h1280", diff_sd=0.04, wall_s=40.0, diff_mean=-0.5)
    assert rule.main([str(tmp_path), "--budget-s", "330"]) == 0
    assert "chosen: wsd at 1280 steps" in capsys.readouterr().out  # the only one that fits there
    # fidelity before precision: the quieter cos candidate fits only a shorter horizon, so it is not taken


PROXY_CHOOSE = Path(__file__).resolve().parents[1] / "experiments" / "proxy-pilot" / "choose.py"


def test_the_proxy_rule_takes_the_quietest_candidate_that_fits_never_the_flattering_one(tmp_path, capsys):
    rule = load_rule(PROXY_CHOOSE)
    # budget 780 s with 2 runs at a time: a candidate fits when 4 x 2 x wall / 2 <= 780, i.e. wall <= 195 s
    candidate(tmp_path, "nano-wsd-8x128-h5126", diff_sd=0.020, wall_s=160.0, diff_mean=-0.30)  # flattering, noisier
    candidate(tmp_path, "nano-cos-8x128-h5126", diff_sd=0.008, wall_s=170.0, diff_mean=+0.05)  # quietest that fits
    candidate(tmp_path, "nano-cos-16x128-h2563", diff_sd=0.001, wall_s=200.0, diff_mean=-0.40)  # quieter, too dear
    assert rule.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "chosen: nano-cos-8x128 at 5126 steps" in printed and "2 candidate(s) fit 780 s" in printed
    row = rule.RULE.pilot(tmp_path / "nano-cos-8x128-h5126")
    assert rule.predicted_s(row, 2) == 4 * 2 * 170.0 / 2


def test_the_proxy_rule_with_nothing_fitting_takes_the_quietest_of_the_cheapest(tmp_path, capsys):
    rule = load_rule(PROXY_CHOOSE)
    candidate(tmp_path, "a-h10", diff_sd=0.05, wall_s=300.0, diff_mean=-0.3)  # cheapest, noisy
    candidate(tmp_path, "b-h10", diff_sd=0.01, wall_s=320.0, diff_mean=+0.3)  # within 10%: a tie on cost
    candidate(tmp_path, "c-h10", diff_sd=0.001, wall_s=400.0, diff_mean=-0.5)  # quietest, not within 10%
    assert rule.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "chosen: b at 10 steps" in printed and "no candidate fits 780 s" in printed


def test_the_proxy_candidates_train_llama_nano_to_20_tokens_per_parameter():
    from gradpower.experiments import load_experiment
    from gradpower.models import count_params, preset

    files = sorted(PROXY_CHOOSE.parent.glob("*.toml"))
    assert len(files) == 4
    for file in files:
        spec = load_experiment(file)
        assert spec.base["preset"] == "llama-nano" and spec.first_seed == 100
        assert [a.overrides for a in spec.arms] == [{"optim": "adamw"}, {"optim": "adampower", "p": 1.2}]
    steps = 20 * count_params(preset("llama-nano")).total // (8 * 128)
    assert steps == 5126  # the docstring's and run.sh's horizon at 8 x 128


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
