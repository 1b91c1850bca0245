"""Training length as an axis: --horizons ladders, wsd runs branched from one stable run, where in training."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import t as scipy_t

from gradpower.cli import main
from gradpower.experiments import CompareSpec, load_run
from gradpower.experiments.ladder import chains, eval_every
from gradpower.train import TrainConfig

from .helpers import MICRO_EVAL_TOKENS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def shared(cache):
    return ["--preset", "llama-tiny", "--batch-size", "2", "--device", "cpu", "--set", "seq_len=16", "--set",
            "bpe_vocab_size=300", "--set", "eval_batches=1", "--set", f"cache_dir={cache}", "--set",
            f"eval_tokens={MICRO_EVAL_TOKENS}"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def final_state(folder: Path) -> dict:
    newest = sorted((folder / "checkpoints").iterdir())[-1]
    return torch.load(newest, weights_only=True)


def test_a_branched_wsd_horizon_equals_a_fresh_run_of_that_horizon(tmp_path, cache, capsys):
    out = tmp_path / "ladder"
    argv = ["compare", *shared(cache), "--schedule", "wsd", "--arm", "optim=adampower p=1.2", "--seeds", "1",
            "--horizons", "10,16", "--set", "warmup=2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "branching at step 8" in printed  # decay start of 10 steps: round(0.8 x 10)
    entries = json.loads((out / "experiment.json").read_text())["runs"]
    branch = out / next(e["dir"] for e in entries if e["horizon"] == 10)
    fresh = tmp_path / "fresh"
    train_argv = ["train", "--preset", "llama-tiny", "--batch-size", "2", "--device", "cpu", "--seq-len", "16",
                  "--bpe-vocab-size", "300", "--eval-batches", "1", "--cache-dir", cache,
                  "--eval-tokens", str(MICRO_EVAL_TOKENS), "--schedule", "wsd", "--steps", "10", "--warmup", "2",
                  "--optim", "adampower", "--p", "1.2", "--log-every", "1", "--out", str(fresh)]
    assert main(train_argv) == 0
    losses = {r["step"]: r["loss"] for r in metrics(fresh)}
    assert {r["step"]: r["loss"] for r in metrics(branch)} == losses and len(losses) == 10
    assert metrics(branch)[-1]["final_val_loss"] == metrics(fresh)[-1]["final_val_loss"]
    a, b = final_state(fresh), final_state(branch)
    assert a["step"] == b["step"] == 10
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    for key, value in a["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][name]), (key, name)
    # the branch spent only its decay: its stable phase is the trunk's own (same wall time recorded at step 8)
    trunk = out / next(e["dir"] for e in entries if e["horizon"] == 16)
    at8 = [next(r["elapsed_s"] for r in metrics(folder) if r["step"] == 8) for folder in (branch, trunk)]
    assert at8[0] == at8[1]
    assert "saved" in (out / "report.md").read_text()


def test_a_tracking_arm_shares_one_p_every_over_the_ladder_and_its_branch_equals_a_fresh_run(tmp_path, cache, capsys):
    """--p track's default interval is 10% of a run's steps; on a ladder every horizon takes the shortest's, so the
    stable phase (p updates included) is one run and a branch's p sequence and losses are a fresh run's."""
    out = tmp_path / "ladder"
    argv = ["compare", *shared(cache), "--schedule", "wsd", "--arm", "optim=adampower p=track", "--seeds", "1",
            "--horizons", "20,30", "--set", "warmup=2", "--out", str(out)]
    assert main(argv) == 0
    assert "branching at step 16" in capsys.readouterr().out
    entries = json.loads((out / "experiment.json").read_text())["runs"]
    branch = out / next(e["dir"] for e in entries if e["horizon"] == 20)
    trunk = out / next(e["dir"] for e in entries if e["horizon"] == 30)
    assert {json.loads((d / "config.json").read_text())["train"]["p_every"] for d in (branch, trunk)} == {2}
    fresh = tmp_path / "fresh"
    assert main(["train", "--preset", "llama-tiny", "--batch-size", "2", "--device", "cpu", "--seq-len", "16",
                 "--bpe-vocab-size", "300", "--eval-batches", "1", "--cache-dir", cache,
                 "--eval-tokens", str(MICRO_EVAL_TOKENS), "--schedule", "wsd", "--steps", "20", "--warmup", "2",
                 "--optim", "adampower", "--p", "track", "--p-every", "2", "--log-every", "1",
                 "--out", str(fresh)]) == 0
    track = [(r["step"], r["loss"], r.get("p_track")) for r in metrics(fresh)]
    assert [(r["step"], r["loss"], r.get("p_track")) for r in metrics(branch)] == track
    assert len([t for t in track if t[2] is not None]) == 10


def test_horizons_csv_is_the_paired_difference_at_each_horizon_recomputed_from_runs_csv(tmp_path, cache, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *shared(cache), "--schedule", "cos", "--arm", "optim=adamw", "--arm", "optim=adampower p=1.2",
            "--seeds", "3", "--horizons", "4,8", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    runs = read_csv(out / "runs.csv")
    rows = read_csv(out / "horizons.csv")
    assert [(r["arm"], r["horizon_steps"]) for r in rows] == [("adampower p=1.2", "4"), ("adampower p=1.2", "8")]
    for row in rows:
        steps = row["horizon_steps"]
        final = {(r["arm"], r["seed"]): float(r["final_val_loss"]) for r in runs if r["steps"] == steps}
        diffs = [final[("adampower p=1.2", s)] - final[("adamw", s)] for s in "012"]
        half = scipy_t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
        assert float(row["diff_mean"]) == pytest.approx(np.mean(diffs), abs=1e-5)
        assert float(row["diff_ci_high"]) - float(row["diff_ci_low"]) == pytest.approx(2 * half, abs=1e-4)
        assert float(row["diff_sd"]) == pytest.approx(np.std(diffs, ddof=1), abs=5e-5)
        power = (scipy_t.ppf(0.975, 2) + scipy_t.ppf(0.80, 2)) * np.std(diffs, ddof=1) / math.sqrt(3)
        assert float(row["mde_80"]) == pytest.approx(power, abs=1e-4)
        assert float(row["baseline_val_loss"]) == pytest.approx(np.mean([final[("adamw", s)] for s in "012"]),
                                                                abs=1e-5)
        assert int(row["tokens"]) == int(steps) * 2 * 16 and row["n_seeds"] == "3"
        # tokens per parameter against the parameters the run's final checkpoint holds
        folder = Path(next(r["run_dir"] for r in runs if r["steps"] == steps))
        params = sum(t.numel() for t in final_state(folder)["model"].values())
        assert float(row["tokens_per_param"]) == pytest.approx(int(steps) * 32 / params, rel=1e-4)
    # one verdict per horizon, each saying where in training it stands; the figure
    assert printed.count("at 4 steps (") == 1 and printed.count("at 8 steps (") == 1
    assert "tokens per parameter" in printed and "the papers' claims: ~20" in printed
    assert (out / "horizons.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Training length" in report and "horizons.png" in report


def test_the_baseline_drop_over_the_last_doubling_is_read_from_its_regular_evaluations(tmp_path, cache, capsys):
    out = tmp_path / "drop"
    argv = ["compare", *shared(cache), "--steps", "8", "--arm", "optim=adamw", "--arm", "optim=adampower",
            "--seeds", "2", "--set", "eval_every=2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    runs = read_csv(out / "runs.csv")
    drops = []
    for r in runs:
        if r["arm"] == "adamw":
            val = {m["step"]: m["val_loss"] for m in metrics(Path(r["run_dir"])) if "val_loss" in m}
            drops.append(val[4] - val[8])
    assert f"fell {np.mean(drops):.3f} nats over its last doubling of steps (4 -> 8" in printed


def test_ladder_settings_and_the_runs_that_share_a_stable_phase():
    # one cadence divides every half horizon, and gives the longest at least 10 evaluations
    assert eval_every([80, 160, 320, 640]) == 40
    assert eval_every([320, 640, 1280]) == 80
    assert eval_every([7]) == 1 or 7 // eval_every([7]) >= 1
    spec = CompareSpec(base={"schedule": "wsd", "batch_size": 8, "seq_len": 128}, arms=[], seeds=1,
                          horizons=[640, 80, 160])
    settings = [s for _, s in spec.horizon_runs({})]
    assert [s["steps"] for s in settings] == [80, 160, 640]
    assert {s["warmup"] for s in settings} == {8} and {s["eval_every"] for s in settings} == {40}
    tokens = CompareSpec(base={"batch_size": 8, "seq_len": 128}, horizons=[81920, 163840], horizon_unit="tokens")
    assert [s["steps"] for _, s in tokens.horizon_runs({})] == [80, 160]
    configs = [TrainConfig(schedule="wsd", steps=s, warmup=8, eval_every=e) for s, e in ((640, 40), (80, 40),
                                                                                        (160, 8))]
    configs.append(TrainConfig(schedule="wsd", steps=80, warmup=8, p=1.4))  # another arm: its own chain
    configs.append(TrainConfig(schedule="cos", steps=80, warmup=8))  # cos never branches
    assert sorted(chains(configs)) == [(0, [(1, 64), (2, 128)]), (3, []), (4, [])]


@pytest.mark.parametrize("argv, message", [
    (["--horizons", "80,160", "--steps", "100"], "--steps and --horizons both set"),
    (["--horizons", "80,x"], "--horizons expects comma-separated whole numbers"),
    (["--horizons", "80,80"], "distinct positive whole numbers"),
    (["--horizons", "1,80", "--set", "warmup=4"], "horizon 1 is 1 step(s)"),
    (["--horizons", "80", "--horizon-tokens", "1000"], "not allowed with argument"),
    (["--horizons", "80", "--arm", "optim=adamw steps=50"], "sets steps, which --horizons sets"),
])
def test_bad_ladders_are_refused_in_one_line_before_anything_runs(tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    arms = [] if "--arm" in argv else ["--arm", "optim=adamw"]
    try:
        code = main(["compare", *arms, *argv, "--out", str(out)])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_an_experiment_file_declares_a_ladder(tmp_path):
    from gradpower.experiments.spec import load_experiment

    file = tmp_path / "e.toml"
    file.write_text('schedule = "wsd"\nbatch_size = 8\nseq_len = 128\nhorizon_tokens = [81920, 163840]\n'
                    '[[arm]]\noptim = "adamw"\n')
    spec = load_experiment(file)
    assert spec.horizons == [81920, 163840] and spec.horizon_unit == "tokens" and spec.headline == 163840
    file.write_text('horizons = 80\n[[arm]]\noptim = "adamw"\n')
    with pytest.raises(ValueError, match="horizons must be a list"):
        load_experiment(file)


def test_a_sweep_over_a_ladder_has_the_horizon_as_an_axis(tmp_path, cache, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", *shared(cache), "--schedule", "wsd", "--set", "optim=adampower", "--grid", "p=1.0,1.2",
            "--seeds", "1", "--horizons", "5,10", "--set", "warmup=1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = read_csv(out / "sweep.csv")
    assert sorted((r["p"], r["horizon"]) for r in rows) == [("1", "10"), ("1", "5"), ("1.2", "10"), ("1.2", "5")]
    assert {r["steps"] for r in rows} == {"5", "10"}
    assert printed.count("branching at step 4") == 2
    assert "tokens per parameter" in (out / "report.md").read_text()
    assert all(load_run(out / r["run_dir"]).finished for r in rows)


def test_compare_help_states_the_embedded_default_from_the_values_the_code_runs(capsys):
    from gradpower.experiments.defaults import DEFAULT_BASE, DEFAULT_SEEDS, default_spec

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    spec = default_spec()
    assert spec.seeds == DEFAULT_SEEDS and spec.config().steps == DEFAULT_BASE["steps"]
    for fact in (DEFAULT_BASE["preset"], f"{DEFAULT_BASE['schedule']} schedule",
                 f"batch {DEFAULT_BASE['batch_size']} x {DEFAULT_BASE['seq_len']}", f"{DEFAULT_BASE['steps']} steps",
                 f"({DEFAULT_SEEDS} seeds)", "adamw vs adampower p=1.2"):
        assert fact in text, fact


def test_the_embedded_default_trains_20_tokens_per_parameter_within_4_passes():
    """The default stands where the papers' claims do: 20 training tokens per parameter (every parameter counted,
    by the formula d x V x 2 + layers x (4 d^2 + 3 d x 4d + 2 d) + d for an untied LLaMA), at most 4 passes."""
    from gradpower.experiments.defaults import default_spec
    from gradpower.models import count_params, preset
    from gradpower.models.proxy import CORPUS_TRAIN_TOKENS

    cfg = default_spec().config()
    shape = preset(cfg.preset)
    d, layers, vocab = shape.d_model, shape.n_layers, shape.vocab_size
    by_hand = 2 * d * vocab + layers * (4 * d * d + 3 * d * shape.d_ff + 2 * d) + d
    assert count_params(shape).total == by_hand
    assert cfg.steps == 20 * by_hand // (cfg.batch_size * cfg.seq_len)
    assert cfg.steps * cfg.batch_size * cfg.seq_len / CORPUS_TRAIN_TOKENS[vocab] <= 4
