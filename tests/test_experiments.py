"""compare / sweep / report end to end on a micro setting, and the seams they rely on."""

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import t as scipy_t

from gradpower.cli import main
from gradpower.experiments import CompareSpec, load_run, parse_arm, parse_grid_axis
from gradpower.experiments.execute import PlannedRun, place, state_of
from gradpower.experiments.report import RESULTS_COLUMNS, RUNS_COLUMNS
from gradpower.optim.muonpower import default_ns_dtype
from gradpower.optim.onepass_cpu import avx512
from gradpower.optim.routes import power_kernel
from gradpower.train import TrainConfig, train
from gradpower.train.config import config_differences, run_name
from gradpower.train.distributed import Runtime
from gradpower.train.loop import Trainer

from .helpers import MICRO_EVAL_TOKENS, break_for_resume


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def micro(cache, steps=6):
    return ["--preset", "llama-tiny", "--steps", str(steps), "--batch-size", "2", "--device", "cpu", "--set",
            "seq_len=16", "--set", "bpe_vocab_size=300", "--set", "eval_batches=1", "--set", f"cache_dir={cache}",
            "--set", f"eval_tokens={MICRO_EVAL_TOKENS}"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_compare_writes_every_table_and_figure_and_reruns_nothing(tmp_path, cache, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *micro(cache), "--seeds", "2", "--out", str(out),
            "--arm", "optim=adamw", "--arm", "optim=adampower p=1.2"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "[run 1/4] adamw | seed 0" in first and "[run 4/4] adampower p=1.2 | seed 1" in first
    runs = read_csv(out / "runs.csv")
    assert list(runs[0]) == RUNS_COLUMNS
    assert [(r["arm"], r["seed"]) for r in runs] == [("adamw", "0"), ("adampower p=1.2", "0"), ("adamw", "1"),
                                                      ("adampower p=1.2", "1")]
    results = read_csv(out / "results.csv")
    assert list(results[0]) == RESULTS_COLUMNS
    assert [r["arm"] for r in results] == ["adamw", "adampower p=1.2"]
    assert results[0]["diff_mean"] == "" and results[1]["diff_mean"] != "" and results[1]["n_seeds"] == "2"
    # The table's numbers are the runs' numbers: recompute the paired difference from runs.csv.
    finals = {(r["arm"], r["seed"]): float(r["final_val_loss"]) for r in runs}
    diff = np.mean([finals[("adampower p=1.2", s)] - finals[("adamw", s)] for s in "01"])
    assert float(results[1]["diff_mean"]) == pytest.approx(diff, abs=1e-5)
    # the design columns, by hand: sd of the per-seed differences, the t half-width, and the 80%-power MDE
    per_seed = [finals[("adampower p=1.2", s)] - finals[("adamw", s)] for s in "01"]
    sd = float(np.std(per_seed, ddof=1))
    slack = 2e-5  # runs.csv rounds each loss to 6 significant digits
    factor_ci = scipy_t.ppf(0.975, 1) / np.sqrt(2)
    factor_mde = (scipy_t.ppf(0.975, 1) + scipy_t.ppf(0.8, 1)) / np.sqrt(2)
    assert float(results[1]["diff_sd"]) == pytest.approx(sd, abs=slack)
    assert float(results[1]["diff_halfwidth"]) == pytest.approx(factor_ci * sd, abs=factor_ci * slack)
    assert float(results[1]["mde_80"]) == pytest.approx(factor_mde * sd, abs=factor_mde * slack)
    needed = int(results[1]["seeds_needed"])

    def mde(n, s):
        return (scipy_t.ppf(0.975, n - 1) + scipy_t.ppf(0.8, n - 1)) * s / np.sqrt(n)

    reported = float(results[1]["diff_sd"])
    assert needed == 2 or mde(needed, reported) <= 0.01 * (1 + 1e-4) and mde(needed - 1, reported) > 0.01 * (1 - 1e-4)
    assert "written to" in first and "loss.png" in first.splitlines()[-1]
    report = (out / "report.md").read_text()
    assert "95% Student-t interval" in report and "![loss.png](loss.png)" in report
    for png in ("loss.png", "difference.png", "lr.png"):
        assert (out / png).stat().st_size > 5000
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.jsonl")}
    assert len(stamps) == 4
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "reusing 4 finished run(s) of 4" in second and "[run" not in second
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.jsonl")}
    # report rebuilds the same table from the runs alone, and can switch the baseline.
    (out / "results.csv").unlink()
    assert main(["report", str(out)]) == 0
    assert read_csv(out / "results.csv") == results
    assert main(["report", str(out), "--baseline", "adampower p=1.2"]) == 0
    assert [r["arm"] for r in read_csv(out / "results.csv")] == ["adampower p=1.2", "adamw"]
    assert main(["report", str(out), "--baseline", "nope"]) == 2


def test_arms_within_a_seed_start_from_identical_weights_and_batches(tmp_path, cache):
    base = dict(preset="llama-tiny", seq_len=16, batch_size=4, micro_batch_size=2, steps=3, bpe_vocab_size=300,
                eval_batches=1, cache_dir=cache, device="cpu", seed=7)
    cpu = Runtime(torch.device("cpu"))
    a = Trainer(TrainConfig(**base, optim="adamw", out=str(tmp_path / "a")), cpu)
    b = Trainer(TrainConfig(**base, optim="adampower", p=1.4, norm="pre_gpas", out=str(tmp_path / "b")), cpu)
    state_b = b.model.state_dict()
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, state_b[key]), key
    for _ in range(4):
        assert torch.equal(a.data.train.next(), b.data.train.next())
    other = Trainer(TrainConfig(**{**base, "seed": 8}, optim="adamw", out=str(tmp_path / "c")), cpu)
    assert not torch.equal(other.model.lm_head.weight, a.model.lm_head.weight)
    # --init-seed / --data-seed vary one while holding the other.
    same_data = Trainer(TrainConfig(**{**base, "init_seed": 99}, optim="adamw", out=str(tmp_path / "d")), cpu)
    assert not torch.equal(same_data.model.lm_head.weight, a.model.lm_head.weight)
    fresh = Trainer(TrainConfig(**base, optim="adamw", out=str(tmp_path / "e")), cpu)
    assert torch.equal(same_data.data.train.next(), fresh.data.train.next())


def test_tune_lr_picks_each_arms_own_lr_and_reuses_the_tuning_run(tmp_path, cache, capsys):
    out = tmp_path / "tuned"
    argv = ["compare", *micro(cache, steps=8), "--seeds", "2", "--out", str(out), "--tune-lr", "0.0003,0.003",
            "--arm", "optim=adamw", "--arm", "optim=adampower"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "chosen lr:" in text
    record = json.loads((out / "experiment.json").read_text())
    tune = [r for r in record["runs"] if r["phase"] == "tune"]
    assert len(tune) == 4 and {r["seed"] for r in tune} == {0}
    chosen = {}
    for arm in ("adamw", "adampower"):
        losses = {r["lr"]: load_run(out / r["dir"]).final_val_loss for r in tune if r["arm"] == arm}
        chosen[arm] = min(losses, key=losses.get)
    results = {r["arm"]: r for r in read_csv(out / "results.csv")}
    assert {arm: float(results[arm]["lr"]) for arm in chosen} == chosen
    # The seed-0 final run of each arm is its tuning run at the chosen lr: 4 tuning + 2 new final runs.
    assert len(list((out / "runs").iterdir())) == 6
    report = (out / "report.md").read_text()
    assert "Learning rate, tuned per arm" in report
    assert "edge of the grid" in report  # a two-point grid always has its best at an edge


def test_sweep_resumes_without_rerunning_finished_points(tmp_path, cache, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", *micro(cache, steps=4), "--seeds", "2", "--out", str(out), "--grid", "p=1.0,1.5",
            "--grid", "batch_size=2,4", "--set", "optim=adampower"]
    assert main(argv) == 0
    capsys.readouterr()
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 8 and list(rows[0])[:3] == ["p", "batch_size", "seed"]
    summary = read_csv(out / "summary.csv")
    assert len(summary) == 4 and list(summary[0]) == ["p", "batch_size", "mean", "std", "n", "diff_mean",
                                                       "diff_ci_low", "diff_ci_high"]
    # the paired columns, recomputed from sweep.csv: each point minus p=1.0 at its batch size, by seed
    loss = {(float(r["p"]), r["batch_size"], r["seed"]): float(r["final_val_loss"]) for r in rows}
    for s in summary:
        diffs = [loss[(float(s["p"]), s["batch_size"], seed)] - loss[(1.0, s["batch_size"], seed)] for seed in "01"]
        half = scipy_t.ppf(0.975, 1) * np.std(diffs, ddof=1) / np.sqrt(2)
        assert float(s["diff_mean"]) == pytest.approx(np.mean(diffs), abs=2e-5)
        # each loss is rounded to 6 digits in sweep.csv, and t(0.975, 1) = 12.7 magnifies that
        assert float(s["diff_ci_high"]) - float(s["diff_ci_low"]) == pytest.approx(2 * half, abs=1e-3)
    best = read_csv(out / "best.csv")
    for b in best:
        if b["field"] == "p":  # resolved only when the best p's interval against the other excludes 0
            row = next(s for s in summary if s["batch_size"] == b["given"].split("=")[1] and float(s["p"]) == 1.5)
            low, high = float(row["diff_ci_low"]), float(row["diff_ci_high"])  # p=1.5 minus p=1.0
            assert b["resolved"] == str(low > 0 if float(b["best_value"]) == 1.0 else high < 0)
    assert "steps held fixed at 4" in (out / "report.md").read_text()
    assert {(b["field"], b["given"]) for b in best} >= {("p", "batch_size=2"), ("p", "batch_size=4")}
    for b in best:  # each best value is the argmin of summary.csv for its group
        group = [s for s in summary if all(s[k] == v for k, v in (kv.split("=") for kv in b["given"].split()))]
        assert b["best_value"] == min(group, key=lambda s: float(s["mean"]))[b["field"]]
    assert (out / "heatmap.png").exists() and (out / "lines.png").exists()
    victim = out / rows[3]["run_dir"]
    for path in sorted(victim.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    victim.rmdir()
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "reusing 7 finished run(s) of 8" in text and text.count("[run ") == 1


def test_interrupted_runs_resume_and_foreign_folders_are_refused(tmp_path, cache):
    cfg = TrainConfig(preset="llama-tiny", seq_len=16, batch_size=2, steps=6, bpe_vocab_size=300, eval_batches=1,
                      cache_dir=cache, device="cpu", ckpt_every=2, log_every=1)
    planned = PlannedRun("x", 0, place(cfg, tmp_path / "runs"))
    assert state_of(planned) == "fresh"
    train(dataclasses.replace(planned.cfg, stop_after=3))
    assert state_of(planned) == "resume"
    train(dataclasses.replace(planned.cfg, resume=True))
    assert state_of(planned) == "done"
    other = PlannedRun("y", 0, dataclasses.replace(planned.cfg, p=1.7))
    with pytest.raises(ValueError, match="holds a run of another configuration.*p"):
        state_of(other)


def test_a_muon_run_records_its_newton_schulz_dtype_and_another_dtype_is_not_reused(tmp_path, cache):
    cfg = TrainConfig(preset="llama-tiny", optim="muonpower", seq_len=16, batch_size=2, steps=2, bpe_vocab_size=300,
                      eval_batches=1, eval_tokens=MICRO_EVAL_TOKENS, cache_dir=cache, device="cpu", log_every=1)
    planned = PlannedRun("m", 0, place(cfg, tmp_path / "runs"))
    train(planned.cfg)
    now = default_ns_dtype(torch.device("cpu"))
    assert load_run(planned.run_dir).resolved["ns_dtype"] == now and state_of(planned) == "done"
    config = planned.run_dir / "config.json"
    record = json.loads(config.read_text())
    record["resolved"]["ns_dtype"] = "float32" if now == "bfloat16" else "bfloat16"
    config.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=f"Newton-Schulz ran in {record['resolved']['ns_dtype']}.*default is {now}"):
        state_of(planned)


def test_a_power_run_records_its_kernel_and_another_kernel_is_neither_reused_nor_paired(tmp_path, cache, capsys):
    out = tmp_path / "c"
    assert main(["compare", *micro(cache, steps=2), "--seeds", "1", "--out", str(out)]) == 0
    runs = {load_run(d).config["optim"]: d for d in (out / "runs").iterdir()}
    now = power_kernel(torch.device("cpu"))
    assert load_run(runs["adampower"]).resolved["power_kernel"] == now == ("avx512" if avx512() else "portable")
    assert "power_kernel" not in load_run(runs["adamw"]).resolved  # no |g|^p in AdamW
    config = runs["adampower"] / "config.json"
    record = json.loads(config.read_text())
    record["resolved"]["power_kernel"] = other = "portable" if now == "avx512" else "avx512"
    config.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["compare", *micro(cache, steps=2), "--seeds", "1", "--out", str(out)]) == 2
    assert f"{runs['adampower']} holds a adampower run whose |g|^p kernel was {other}, while this machine's default " \
           f"is {now}" in capsys.readouterr().err
    # a folder whose runs came from two kinds of machine is not paired (a copy, or a cluster of mixed CPUs)
    twin = runs["adamw"].parent / "twin"
    shutil.copytree(runs["adampower"], twin)
    record["resolved"]["power_kernel"] = now
    record["train"]["seed"] = 1  # listed as seed 1 below: the run that seed plans, but for its kernel
    (twin / "config.json").write_text(json.dumps(record))
    experiment = json.loads((out / "experiment.json").read_text())
    experiment["runs"].append({**experiment["runs"][-1], "seed": 1, "dir": "runs/twin"})
    (out / "experiment.json").write_text(json.dumps(experiment))
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pairs runs of different |g|^p kernels" in err and str(twin) in err and str(runs["adampower"]) in err


def test_run_names_encode_every_defining_field():
    assert run_name(TrainConfig()) == "llama-tiny-adampower-s0"
    a = run_name(TrainConfig(p=1.4, batch_size=8, seed=2))
    b = run_name(TrainConfig(p=1.4, batch_size=16, seed=2))
    assert a == "llama-tiny-adampower-batch_size8-p1.4-s2" and a != b
    assert run_name(TrainConfig(p=1.4, device="cpu", log_every=1)) == run_name(TrainConfig(p=1.4))
    long = run_name(TrainConfig(data="/some/very/long/path/to/a/corpus/file-with-a-long-name.txt", lr=0.001,
                                eval_every=7, eval_batches=3, warmup=5, min_lr_ratio=0.2, stable_frac=0.7,
                                beta2=0.99, clip=0.5, bpe_vocab_size=1000))
    assert len(long) < 60 and long.startswith("llama-tiny-adampower-")


def test_configs_saved_before_the_optimizer_knobs_still_load_and_keep_their_names():
    # a config.json of a version without momentum, nesterov, decay_all, ns_dtype, fused and foreach fields
    knobs = ("momentum", "nesterov", "decay_all", "ns_dtype", "fused", "foreach")
    saved = {k: v for k, v in TrainConfig(optim="muonpower", p=1.4, seed=3).to_dict().items() if k not in knobs}
    old = TrainConfig.from_dict(saved)
    assert (old.momentum, old.nesterov, old.decay_all, old.ns_dtype, old.fused, old.foreach) == \
        (0.95, True, False, None, None, None)
    # the folder name it was written under is the one this version plans for it, so it is found and reused
    assert run_name(old) == "llama-tiny-muonpower-p1.4-s3"
    assert not config_differences(old.defining(), TrainConfig(optim="muonpower", p=1.4, seed=3).defining())


def test_load_run_reads_config_and_metrics(tmp_path, cache):
    cfg = TrainConfig(preset="llama-tiny", seq_len=16, batch_size=2, steps=5, bpe_vocab_size=300, eval_batches=1,
                      cache_dir=cache, device="cpu", eval_every=2, log_every=1, out=str(tmp_path / "r"), lr=0.002)
    train(cfg)
    run = load_run(tmp_path / "r")
    assert run.finished and run.steps == 5 and list(run.step) == [1, 2, 3, 4, 5]
    assert list(run.val_step) == [2, 4, 5]
    # the loss verdicts use is the final evaluation's, on its own held-out tokens
    assert run.final_val_loss == run.records[-1]["final_val_loss"] != run.val_loss[-1] and run.val_tokens > 1000
    assert run.peak_lr == 0.002 and run.lr.max() == pytest.approx(0.002)
    assert run.tokens == 5 * 2 * 16 and run.wall_s > 0 and run.spikes == 0
    assert run.config["p"] == 1.2 and run.model["arch"] == "llama"


def test_arm_and_grid_parsing():
    arm = parse_arm("optim=adampower p=1.2 blockwise_lr=true")
    assert arm.name == "adampower p=1.2 blockwise_lr=True"
    assert arm.overrides == {"optim": "adampower", "p": 1.2, "blockwise_lr": True}
    assert parse_arm("Mine: optim=adamw lr=0.002").name == "Mine"
    assert parse_grid_axis("batch_size=8,32,128") == ("batch_size", [8, 32, 128])
    with pytest.raises(ValueError, match="unknown field 'learning_rate'"):
        parse_arm("learning_rate=3")
    with pytest.raises(ValueError, match="expected int"):
        parse_grid_axis("batch_size=8,x")
    with pytest.raises(ValueError, match="unique"):
        CompareSpec(arms=[parse_arm("optim=adamw"), parse_arm("optim=adamw")])


def test_experiment_file_with_arm_tables(tmp_path, cache, capsys):
    toml = tmp_path / "exp.toml"
    toml.write_text(
        f'preset = "llama-tiny"\nsteps = 4\nbatch_size = 2\nseq_len = 16\nbpe_vocab_size = 300\n'
        f'eval_batches = 1\ncache_dir = "{cache}"\ndevice = "cpu"\nseeds = 1\n\n'
        '[[arm]]\nname = "base"\noptim = "adamw"\n\n[[arm]]\nname = "power"\noptim = "adampower"\np = 1.3\n'
    )
    assert main(["compare", "--config", str(toml), "--out", str(tmp_path / "o")]) == 0
    results = read_csv(tmp_path / "o" / "results.csv")
    assert [r["arm"] for r in results] == ["base", "power"] and results[1]["diff_ci_low"] == ""  # one seed
    assert "no interval" in capsys.readouterr().out
    toml.write_text('seeds = 2\n[[arm]]\noptim = "adamw"\nlearning_rate = 1\n')
    assert main(["compare", "--config", str(toml)]) == 2
    assert "unknown key(s) learning_rate" in capsys.readouterr().err


def test_parallel_jobs_write_logs_and_the_same_tables(tmp_path, cache, capsys):
    out = tmp_path / "par"
    argv = ["compare", *micro(cache, steps=4), "--seeds", "1", "--out", str(out), "--jobs", "2",
            "--arm", "optim=adamw", "--arm", "optim=adampower"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("(log: train.log)") == 2
    logs = sorted(out.glob("runs/*/train.log"))
    assert len(logs) == 2 and all("done: step 4/4" in log.read_text() for log in logs)
    results = read_csv(out / "results.csv")
    assert [r["n_seeds"] for r in results] == ["1", "1"] and all(float(r["val_loss_mean"]) > 0 for r in results)
    assert main(argv[:-6] + ["--jobs", "0"]) == 2


def test_a_compare_whose_runs_fail_exits_1_naming_them(tmp_path, cache, capsys):
    out = tmp_path / "c"
    argv = ["compare", *micro(cache, steps=4), "--seeds", "1", "--set", "ckpt_every=2", "--set", "keep_ckpts=3",
            "--out", str(out)]
    assert main(argv) == 0
    # Damage both runs so that they fail when the compare resumes them (what the start-up checks cannot see):
    # back to step 2, whose checkpoint is broken.
    break_for_resume(out / "runs")
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr()
    line = err.err.strip().splitlines()[-1]
    # the reason once, after the runs it stopped
    assert line.startswith("gradpower: error: 2 run(s) failed: adamw seed 0, adampower p=1.2 seed 0 (no loadable "
                           "checkpoint in its folder/checkpoints") and line.count("no loadable checkpoint") == 1
    assert "not finished (left out): adamw seed 0, adampower p=1.2 seed 0" in err.out


def test_seeds_auto_looks_at_fixed_rounds_and_reports_the_adjusted_interval(tmp_path, cache, capsys):
    out = tmp_path / "seq"
    assert main(["compare", *micro(cache, steps=4), "--seeds", "auto", "--max-seeds", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads((out / "experiment.json").read_text())
    assert record["sequential"]["looks"] == [3, 4] and "look 1/2 of --seeds auto" in text
    runs = read_csv(out / "runs.csv")
    seeds = sorted({int(r["seed"]) for r in runs})
    assert seeds == list(range(record["sequential"]["stopped_at"]))
    finals = {(r["arm"], int(r["seed"])): float(r["final_val_loss"]) for r in runs}
    diffs = [finals[("adampower p=1.2", s)] - finals[("adamw", s)] for s in seeds]
    half = scipy_t.ppf(1 - 0.05 / 2 / 2, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))  # 97.5% level
    results = read_csv(out / "results.csv")
    assert float(results[1]["diff_ci_high"]) - float(results[1]["diff_ci_low"]) == pytest.approx(2 * half, abs=1e-4)
    assert "Bonferroni" in (out / "report.md").read_text() and "97.5% CI" in text
    assert main(["compare", *micro(cache), "--max-seeds", "4", "--out", str(tmp_path / "x")]) == 2
    assert "--max-seeds goes with --seeds auto" in capsys.readouterr().err
    assert main(["sweep", *micro(cache), "--grid", "p=1.0,1.2", "--seeds", "auto", "--out", str(tmp_path / "y")]) == 2


def test_plan_runs_a_pilot_and_sizes_the_comparison_from_it(tmp_path, cache, capsys):
    from gradpower.experiments.compare import PLAN_COLUMNS

    out = tmp_path / "plan"
    argv = ["compare", *micro(cache, steps=4), "--plan", "--pilot-seeds", "2", "--effect", "0.05", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    plan = read_csv(out / "plan.csv")
    assert list(plan[0]) == PLAN_COLUMNS and [r["arm"] for r in plan] == ["adampower p=1.2"]
    runs = read_csv(out / "runs.csv")
    assert sorted({r["seed"] for r in runs}) == ["0", "1"]  # the pilot, nothing beyond it
    finals = {(r["arm"], r["seed"]): float(r["final_val_loss"]) for r in runs}
    sd = float(np.std([finals[("adampower p=1.2", s)] - finals[("adamw", s)] for s in "01"], ddof=1))
    assert float(plan[0]["diff_sd"]) == pytest.approx(sd, abs=2e-5)
    reported = float(plan[0]["diff_sd"])
    needed = next(n for n in range(2, 100_000)
                  if (scipy_t.ppf(0.975, n - 1) + scipy_t.ppf(0.8, n - 1)) * reported / np.sqrt(n) <= 0.05)
    assert abs(int(plan[0]["seeds_needed"]) - needed) <= 1  # diff_sd rounded to 6 digits in the csv
    wall = np.mean([float(r["wall_s"]) for r in runs])
    assert float(plan[0]["est_wall_s"]) == pytest.approx(int(plan[0]["seeds_needed"]) * 2 * wall, rel=1e-3)
    assert "seeds resolve 0.05" in text and "plan.csv" in text
    assert main(argv) == 0
    assert "reusing 4 finished run(s) of 4" in capsys.readouterr().out


def test_sweep_tokens_hold_compute_fixed_and_a_single_seed_names_no_best(tmp_path, cache, capsys):
    out = tmp_path / "budget"
    argv = ["sweep", *micro(cache), "--seeds", "1", "--grid", "batch_size=2,4", "--tokens", "256", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    steps = {r["batch_size"]: int(r["steps"]) for r in read_csv(out / "sweep.csv")}
    assert steps == {"2": 8, "4": 4}  # 256 tokens / (batch x 16 tokens per sequence)
    assert "tokens held fixed at 256" in (out / "report.md").read_text()
    assert [b["best_value"] for b in read_csv(out / "best.csv")] == [""] and "none named from 1 seed" in text
    bad = ["sweep", *micro(cache), "--grid", "p=1.0,1.2", "--reference", "p=2.0", "--out", str(tmp_path / "x")]
    assert main(bad) == 2 and "--reference p=2.0 is not a grid value" in capsys.readouterr().err


@pytest.mark.default_jobs
def test_on_cpu_compare_runs_one_single_threaded_process_per_core_by_default(tmp_path, cache, capsys, monkeypatch):
    """The CPU default measured faster for small models (docs/performance.md): as many runs at once as usable
    cores, each with an equal share of the cores as its torch thread count."""
    import os

    from gradpower.experiments import execute

    cores = 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert execute.default_jobs() == cores
    out = tmp_path / "cmp"
    assert main(["compare", *micro(cache, 2), "--seeds", "1", "--out", str(out),
                 "--arm", "optim=adamw", "--arm", "optim=adampower p=1.2"]) == 0
    envs = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*/env.json"))]
    assert [env["threads"] for env in envs] == [1, 1]
