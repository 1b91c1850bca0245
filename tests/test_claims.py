"""gradpower claims: the micro budget runs the plumbing end to end (files, columns, a contrast recomputed from
runs.csv by hand, no verdict), the verdict rule on fixed intervals and on a full budget, and bad input as one-line
errors."""

import contextlib
import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats

from gradpower.cli import main
from gradpower.experiments.claims import CLAIMS_FILE, load_claims, select_claims, verdict
from gradpower.experiments.stats import Interval
from gradpower.fileio import folder_lock
from gradpower.models import count_params, preset

COLUMNS = ["claim", "source", "statement", "setting", "metric", "arm", "baseline", "diff_mean", "ci_low", "ci_high",
           "n_seeds", "verdict"]


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_claims_file_declares_every_claim_with_its_direction():
    claims, budgets = load_claims(CLAIMS_FILE)
    assert [c.id for c in claims] == [f"C{i}" for i in range(1, 11)] + ["C11.b8", "C11.b32"] + [
        f"C12.{size}" for size in ("llama-pico", "llama-nano", "llama-micro")]
    assert [c.id for c in select_claims(claims, ["C11", "C2"])] == ["C2", "C11.b8", "C11.b32"]
    assert [c.id for c in select_claims(claims, ["C11.b32"])] == ["C11.b32"]
    with pytest.raises(ValueError, match="unknown claim\\(s\\) C13"):
        select_claims(claims, ["C13"])
    assert [c.id for c in select_claims(claims, ["C12"])] == ["C12.llama-pico", "C12.llama-nano", "C12.llama-micro"]
    tracked = {c.id: c for c in claims}["C11.b8"]
    assert tracked.select.among == ["adampower p=1.0", "adampower p=1.2"] and tracked.select.first_seed == 100
    assert set(budgets) == {"quick", "full", "micro", "paper", "sizes"} and budgets["full"]["effect"] == 0.015
    assert all(c.direction in ("lower", "higher", "additive") for c in claims)


@pytest.fixture(scope="session")
def micro(tmp_path_factory):
    """``gradpower claims --budget micro`` over every claim, as CI runs it: (out, printed, cache). Run once per test
    session: under xdist every worker asks for it, and the first to take the lock runs it for all."""
    root = tmp_path_factory.getbasetemp().parent  # shared by xdist's workers (their own base folders are below)
    out, cache, printed_file = root / "claims-micro", root / "claims-micro-cache", root / "claims-micro.txt"
    with folder_lock(root, wait=True, what="test fixture"):
        if not printed_file.exists():
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                assert main(["claims", "--budget", "micro", "--out", str(out), "--cache-dir", str(cache)]) == 0
            printed_file.write_text(printed.getvalue())
    return out, printed_file.read_text(), cache


def test_micro_runs_every_claim_and_names_what_it_wrote(micro):
    out, printed, _ = micro
    claims, _ = load_claims(CLAIMS_FILE)
    rows = read(out / "claims.csv")
    # every claim's rows, then each size family's trend row (C12)
    assert [c.id for c in claims] + ["C12"] == list(dict.fromkeys(r["claim"] for r in rows))
    assert all(r["verdict"] == "micro: plumbing only, no verdict" for r in rows)
    last = printed.strip().splitlines()[-1]
    assert last.startswith(f"written to {out}: claims.csv, claims.md, C12-sizes.png, the reports of C1, ")
    assert all(c.id in last for c in claims)


def test_the_size_trend_is_the_per_seed_slope_against_log_parameters(micro):
    # C12: AdamPower - AdamW at each size, paired by seed; per seed the least-squares slope against ln(params)
    out, printed, _ = micro
    sizes = ("llama-pico", "llama-nano", "llama-micro")
    diffs = {}
    for size in sizes:
        runs = read(out / f"C12.{size}" / "runs.csv")
        loss = {(r["arm"], r["seed"]): float(r["final_val_loss"]) for r in runs}
        diffs[size] = {s: loss[("adampower p=1.2", s)] - loss[("adamw", s)] for s in ("0", "1")}
    x = [math.log(count_params(preset(size)).total) for size in sizes]
    slopes = [stats.linregress(x, [diffs[size][s] for size in sizes]).slope for s in ("0", "1")]
    mean = sum(slopes) / 2
    half = stats.t.ppf(0.975, 1) * stats.tstd(slopes) / math.sqrt(2)
    (row,) = [r for r in read(out / "claims.csv") if r["claim"] == "C12"]
    assert float(row["diff_mean"]) == pytest.approx(mean, abs=2e-5)
    assert float(row["ci_low"]) == pytest.approx(mean - half, abs=2e-4)
    assert row["metric"] == "slope vs ln(params)" and row["n_seeds"] == "2"
    assert (out / "C12-sizes.png").exists() and "C12-sizes.png" in (out / "claims.md").read_text()
    assert "C12: micro: plumbing only, no verdict (d(adampower p=1.2 - adamw)/d ln(params) = " in printed


def test_a_claim_declared_for_other_budgets_is_refused_by_name(tmp_path, capsys):
    assert main(["claims", "--budget", "quick", "--only", "C12", "--out", str(tmp_path / "x")]) == 2
    assert "--only C12: declared for --budget micro or paper or sizes, not --budget quick" in capsys.readouterr().err


def test_micro_keeps_each_arms_own_batch_size(micro):
    # C8 compares batch 8 with batch 32 at equal tokens: the budget's shared settings never override an arm's own.
    out, _, _ = micro
    batch = {r["arm"]: json.loads((Path(r["run_dir"]) / "config.json").read_text())["train"]["batch_size"]
             for r in read(out / "C8" / "runs.csv")}
    assert batch == {"b8 p=0.8": 8, "b8 p=1.4": 8, "b32 p=0.8": 32, "b32 p=1.4": 32}
    for claim, size in (("C11.b8", 8), ("C11.b32", 32)):  # a claim's shared batch is its own too
        assert {json.loads((Path(r["run_dir"]) / "config.json").read_text())["train"]["batch_size"]
                for r in read(out / claim / "runs.csv")} == {size}


def test_micro_claims_write_the_table_and_a_contrast_that_follows_runs_csv(micro, capsys, tmp_path):
    out, printed, cache = micro
    assert "| C9 | GPAS paper |" in printed and "tokens per parameter" in printed
    rows = [r for r in read(out / "claims.csv") if r["claim"] == "C9"]
    # one row per (claim, horizon of its ladder): C9 declares 0.125, 0.25, 0.5 and 1 x the budget's 4096 tokens
    # (8 x 8 a step)
    assert [r["horizon_steps"] for r in rows] == ["8", "16", "32", "64"]
    assert list(rows[0])[:len(COLUMNS)] == COLUMNS
    # llama-pico keeps its vocab of 512 (the tokenizer's 300 ids use part of it): 2 x 512 x 32 + 2 x (4 x 32^2 +
    # 3 x 32 x 128 + 2 x 32) + 32 parameters
    params = float(rows[3]["tokens"]) / float(rows[3]["tokens_per_param"])
    assert params == pytest.approx(2 * 512 * 32 + 2 * (4 * 32 ** 2 + 3 * 32 * 128 + 2 * 32) + 32, rel=1e-3)
    assert rows[3]["tokens"] == "4096"
    assert (out / "claims.md").exists() and (out / "C9" / "horizons.png").exists()
    assert "C9/horizons.png" in (out / "claims.md").read_text()
    row = rows[3]
    runs = [r for r in read(out / "C9" / "runs.csv") if r["steps"] == "64"]
    loss = {(r["arm"], r["seed"]): float(r["final_val_loss"]) for r in runs}
    diffs = [loss[("pre-ln + gpas", s)] - loss[("pre-ln", s)] for s in sorted({r["seed"] for r in runs})]
    mean, half = sum(diffs) / len(diffs), stats.t.ppf(0.975, len(diffs) - 1) * stats.tstd(diffs) / math.sqrt(2)
    assert float(row["diff_mean"]) == pytest.approx(mean, abs=2e-5)
    assert float(row["ci_low"]) == pytest.approx(mean - half, abs=2e-4)  # t(0.975, 1) = 12.7 x the CSV rounding
    assert row["n_seeds"] == "2"
    # Rerunning reuses every run: nothing trains again (a copy: the finished runs without their checkpoints).
    copy = tmp_path / "claims"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.pt"))
    assert main(["claims", "--budget", "micro", "--only", "C9", "--out", str(copy), "--cache-dir", str(cache)]) == 0
    assert "training ->" not in capsys.readouterr().out


def test_micro_c11_chooses_the_better_fixed_p_on_pilot_seeds_and_contrasts_tracking_with_it(micro):
    out, printed, _ = micro
    # the rule, recomputed from the pilot's runs.csv: the lower mean final val loss at the headline (64 steps)
    pilot = [r for r in read(out / "C11.b8-pilot" / "runs.csv") if r["steps"] == "64"]
    assert sorted({r["seed"] for r in pilot}) == ["100", "101"]
    means = {arm: sum(float(r["final_val_loss"]) for r in pilot if r["arm"] == arm) / 2
             for arm in ("adampower p=1.0", "adampower p=1.2")}
    chosen = min(means, key=means.get)
    assert json.loads((out / "C11.b8-pilot" / "selection.json").read_text())["chosen"] == chosen
    assert f"C11.b8: better fixed p = {chosen}" in printed
    # the reported seeds are others, and the contrast is tracking minus the chosen arm, seed by seed
    runs = [r for r in read(out / "C11.b8" / "runs.csv") if r["steps"] == "64"]
    assert sorted({r["seed"] for r in runs}) == ["0", "1"]
    assert {r["arm"] for r in runs} == {chosen, "adampower p=track", "adamw"}
    loss = {(r["arm"], r["seed"]): float(r["final_val_loss"]) for r in runs}
    diffs = [loss[("adampower p=track", s)] - loss[(chosen, s)] for s in ("0", "1")]
    row = [r for r in read(out / "claims.csv") if r["claim"] == "C11.b8" and r["horizon_steps"] == "64"][0]
    assert float(row["diff_mean"]) == pytest.approx(sum(diffs) / 2, abs=2e-5)
    assert row["baseline"] == chosen and "chosen on pilot seeds 100-101" in row["arm"]
    also = [loss[("adampower p=track", s)] - loss[("adamw", s)] for s in ("0", "1")]
    assert f"adampower p=track - adamw = {sum(also) / 2:+.4f}" in (out / "claims.md").read_text()
    # the tracking runs re-chose p every 10% of the shortest horizon (8 steps: every step), the same on every horizon
    tracked = [Path(r["run_dir"]) for r in runs if r["arm"] == "adampower p=track"]
    for run in tracked:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert json.loads((run / "config.json").read_text())["train"]["p_every"] == 1
        assert [r["step"] for r in records if "p_track" in r] == [r["step"] for r in records]


@pytest.mark.parametrize("direction, low, high, also, expected", [
    ("lower", -0.03, -0.01, [], "supported"),
    ("lower", 0.01, 0.03, [], "contradicted"),
    ("lower", -0.01, 0.02, [], "not resolved"),
    ("higher", 0.01, 0.03, [], "supported"),
    ("higher", -0.03, -0.01, [], "contradicted"),
    ("additive", -0.01, 0.01, [(-0.05, -0.02), (-0.04, -0.01)], "supported"),
    ("additive", -0.01, 0.01, [(-0.05, -0.02), (-0.04, 0.01)], "not resolved"),
    ("additive", 0.01, 0.02, [(-0.05, -0.02), (-0.04, -0.01)], "contradicted"),
    ("lower", math.nan, math.nan, [], "not resolved"),
])
def test_the_verdict_follows_the_interval_and_the_papers_direction(direction, low, high, also, expected):
    extra = [Interval((a + b) / 2, a, b, 3) for a, b in also]
    assert verdict(direction, Interval((low + high) / 2, low, high, 3), extra) == expected


def test_bad_claims_input_is_one_line(tmp_path, capsys):
    assert main(["claims", "--budget", "micro", "--only", "C99", "--out", str(tmp_path / "x")]) == 2
    assert "unknown claim(s) C99" in capsys.readouterr().err
    broken = tmp_path / "claims.toml"
    broken.write_text("[[claim]]\nid = 'C1'\n")
    assert main(["claims", "--file", str(broken), "--out", str(tmp_path / "y")]) == 2
    assert f"{broken}: missing key" in capsys.readouterr().err


def test_claims_share_one_runs_folder_so_a_common_configuration_trains_once(micro, tmp_path):
    # C7's AdamW and AdamPower arms are C3's dense arms (same settings, other arm names): one run folder each.
    out, printed, _ = micro
    c3 = {(r["arm"], r["seed"]): r for r in read(out / "C3" / "runs.csv")}
    c7 = {(r["arm"], r["seed"]): r for r in read(out / "C7" / "runs.csv")}
    for seed in ("0", "1"):
        assert c7[("adamw", seed)]["run_dir"] == c3[("dense adamw", seed)]["run_dir"]
        assert c7[("adampower", seed)]["run_dir"] == c3[("dense adampower", seed)]["run_dir"]
    assert not (out / "C7" / "runs").exists()
    section = printed[printed.index("== C7 "):printed.index("== C8 ")]
    trained = {line.split("]")[0]: line.split("] ")[1].split(" @")[0] for line in section.splitlines()
               if line.startswith("[run ")}
    # only C7's 2 new arms x 2 seeds trained, each along the 4 horizons of its ladder
    assert set(trained.values()) == {"blockwise", "both"} and len(trained) == 2 * 2 * 4
    # The claim's folder is still a compare folder that 'gradpower report' rebuilds from the shared runs.
    copy = tmp_path / "claims"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.pt"))
    (copy / "C7" / "results.csv").unlink()
    assert main(["report", str(copy / "C7")]) == 0 and (copy / "C7" / "results.csv").exists()
    # And the claims folder is a registered kind: 'gradpower report' rebuilds claims.csv and claims.md from what it
    # recorded (each claim's selection or why it was skipped) and the claims' folders.
    table = (copy / "claims.csv").read_text()
    (copy / "claims.csv").unlink()
    (copy / "claims.md").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "claims.csv").read_text() == table and "C12-sizes.png" in (copy / "claims.md").read_text()


def one_claim_file(tmp_path, full: str) -> str:
    """A claims file with C9 alone and a full budget given by ``full`` (TOML lines)."""
    text = CLAIMS_FILE.read_text()
    c9 = text[text.index('[[claim]]\nid = "C9"'):text.index('[[claim]]\nid = "C10"')]
    # the seed rule at one horizon (ladders: the micro test above)
    c9 = c9.replace("ladder = [0.125, 0.25, 0.5, 1]\n", "")
    micro = text[text.index("[budget.micro]"):text.index("[[claim]]")]
    path = tmp_path / "claims.toml"
    path.write_text(f"[budget.quick]\ntokens = 256\nseeds = 2\n\n[budget.full]\ntokens = 256\nseeds = 2\n"
                    f"shared = {{ seq_len = 16, batch_size = 4, bpe_vocab_size = 300, eval_batches = 1, "
                    f"eval_tokens = 512 }}\n{full}\n\n{micro}\n{c9}")
    return str(path)


@pytest.mark.parametrize("full, seeds", [
    ("effect = 1e-6\nmax_seeds = 3\nminutes = 60", 3),   # seeds_needed is huge: max_seeds caps it
    ("effect = 1e-6\nmax_seeds = 3\nminutes = 0.001", 2),  # no further seed fits the time: the quick seeds stay
    ("effect = 1e3\nmax_seeds = 3\nminutes = 60", 2),   # an effect this large needs no more than the quick seeds
])
def test_full_adds_seeds_up_to_seeds_needed_capped_by_max_seeds_and_time(tmp_path, capsys, full, seeds):
    out = tmp_path / "claims"
    argv = ["claims", "--budget", "full", "--file", one_claim_file(tmp_path, full), "--out", str(out),
            "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    row = read(out / "claims.csv")[0]
    assert row["claim"] == "C9" and row["n_seeds"] == str(seeds)
    low, high = float(row["ci_low"]), float(row["ci_high"])  # the verdict follows the interval (GPAS: lower)
    assert row["verdict"] == ("supported" if high < 0 else "contradicted" if low > 0 else "not resolved")
    assert {r["seed"] for r in read(out / "C9" / "runs.csv")} == {str(s) for s in range(seeds)}


def test_a_claim_read_at_fractions_of_the_steps_evaluates_there_and_its_contrast_follows_metrics(micro):
    # C4: (AdamPower - AdamW) at 80% of the steps minus at 25%, from the runs' regular evaluations.
    out, _, _ = micro
    runs = read(out / "C4" / "runs.csv")
    steps = int(runs[0]["steps"])

    def val_at(run_dir, fraction):
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        evals = {r["step"]: r["val_loss"] for r in rows if r.get("val_loss") is not None}
        assert len(evals) >= 3  # a regular evaluation every tenth of the steps (at least every step here)
        return evals[min(evals, key=lambda s: abs(s - fraction * steps))]

    by = {(r["arm"], r["seed"]): r["run_dir"] for r in runs}
    diffs = [(val_at(by[("adampower p=1.2", s)], 0.8) - val_at(by[("adamw", s)], 0.8))
             - (val_at(by[("adampower p=1.2", s)], 0.25) - val_at(by[("adamw", s)], 0.25)) for s in ("0", "1")]
    row = [r for r in read(out / "claims.csv") if r["claim"] == "C4"][0]
    assert float(row["diff_mean"]) == pytest.approx(sum(diffs) / 2, abs=1e-5) and sum(map(abs, diffs)) > 0
