"""Every command that reads runs checks what it pairs; identical arms are no design; flags are never abbreviated;
every precise-looking number says how precise it is. Each through the command line, where a user meets it."""

import contextlib
import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gradpower.cli import build_parser, main
from gradpower.diagnostics.predict import flat_range
from gradpower.experiments.claims import CLAIMS_FILE
from gradpower.experiments.stats import seeds_needed, seeds_needed_range

from .helpers import MICRO_EVAL_TOKENS

pytestmark = pytest.mark.timeout(600)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def small(cache: str, steps: int = 8) -> list[str]:
    return ["--preset", "llama-tiny", "--steps", str(steps), "--batch-size", "2", "--device", "cpu",
            "--set", "seq_len=16", "--set", "bpe_vocab_size=300", "--set", "eval_batches=2",
            "--set", f"cache_dir={cache}", "--set", f"eval_tokens={MICRO_EVAL_TOKENS}", "--set", "eval_every=2"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("compare") / "c"
    code, printed, err = run_main(["compare", *small(cache), "--seeds", "2", "--out", str(out)])
    assert code == 0, err
    return out, printed


# -- every reader checks what it pairs -----------------------------------------------------------------------------

def test_report_refuses_a_folder_holding_a_run_extended_after_it_was_planned(compared, tmp_path):
    out, _ = compared
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    run = next(Path(r["run_dir"]) for r in read(out / "runs.csv") if r["arm"] == "adamw" and r["seed"] == "1")
    extended = copy / "runs" / run.name
    assert run_main(["train", "--out", str(extended), "--resume", "--steps", "10"])[0] == 0
    code, printed, err = run_main(["report", str(copy)])
    assert code == 2 and not printed
    assert err.count("\n") == 1 and str(extended) in err and "(adamw seed 1)" in err and "steps: 8 -> 10" in err
    # compare refuses the same folder, and so does claims' contrast (the same reader)
    code, _, err = run_main(["compare", *small(str(tmp_path / "cache")), "--seeds", "2", "--out", str(copy)])
    assert code == 2 and "steps: 10 -> 8" in err


def test_identical_arms_are_refused_before_anything_runs(tmp_path, cache):
    out = tmp_path / "same"
    code, printed, err = run_main(["compare", *small(cache), "--out", str(out), "--arm", "A: optim=adamw",
                                   "--arm", "B: optim=adamw lr=0.003"])  # 0.003 is llama-tiny's own lr
    assert code == 2 and "arms 'A' and 'B' are the same runs" in err and not out.exists()
    assert "detects differences above" not in printed + err


ADAMW_VS_ADAMPOWER = ('[{ name = "adamw", optim = "adamw" }, { name = "adampower", optim = "adampower", p = 1.2 }]',
                      '[{ arm = "adampower", weight = 1 }, { arm = "adamw", weight = -1 }]')


def claim_toml(claim_id: str, base: str, arms: str = ADAMW_VS_ADAMPOWER[0], terms: str = ADAMW_VS_ADAMPOWER[1]) -> str:
    """One ``[[claim]]`` table of a test's claims file (AdamPower - AdamW unless told)."""
    return (f'\n[[claim]]\nid = "{claim_id}"\nsource = "test"\nstatement = "{claim_id}"\nsetting = "llama-tiny"\n'
            f'direction = "lower"\nbase = {base}\narms = {arms}\nterms = {terms}\n')


def claims_file(tmp_path: Path, claim: str) -> str:
    text = CLAIMS_FILE.read_text()
    path = tmp_path / "claims.toml"
    path.write_text(text[:text.index("[[claim]]")] + claim)
    return str(path)


def test_a_claim_whose_arms_are_the_same_runs_is_skipped_with_its_reason_and_the_others_run(tmp_path, cache):
    claim = claim_toml("X1", '{ preset = "llama-tiny", batch_size = 8, seq_len = 16, optim = "adamw" }',
                       '[{ name = "a", lr = 3e-3 }, { name = "b" }]',  # 3e-3 is llama-tiny's own lr
                       '[{ arm = "b", weight = 1 }, { arm = "a", weight = -1 }]')
    claim += claim_toml("X2", '{ preset = "llama-tiny", batch_size = 8, seq_len = 16 }')
    out = tmp_path / "claims"
    code, printed, _ = run_main(["claims", "--budget", "micro", "--file", claims_file(tmp_path, claim),
                                 "--out", str(out), "--cache-dir", cache])
    assert code == 0
    rows = {r["claim"]: r for r in read(out / "claims.csv")}
    assert rows["X1"]["verdict"].startswith("skipped: its arms 'a' and 'b' are the same runs at this budget")
    assert rows["X1"]["diff_mean"] == "" and rows["X1"]["mde_80"] == ""
    assert rows["X2"]["verdict"] == "micro: plumbing only, no verdict" and not (out / "X1").exists()
    assert printed.strip().splitlines()[-1] == f"written to {out}: claims.csv, claims.md, the reports of X2"


def test_a_contrast_whose_terms_are_the_same_runs_is_degenerate_never_a_verdict(tmp_path, cache):
    # C10's shape with a one-lr grid equal to the shared lr: the tuned part's runs are the shared part's.
    text = CLAIMS_FILE.read_text()
    c10 = text[text.index('[[claim]]\nid = "C10"'):text.index("# C11 is not the papers' claim")]
    c10 = c10.replace("ladder = [0.125, 0.25, 0.5, 1]\n", "")
    c10 = c10.replace("tuned = [1.5e-3, 3e-3, 6e-3]", "tuned = [3e-3]")
    c10 = c10.replace("seq_len = 128", "seq_len = 16")
    out = tmp_path / "claims"
    code, printed, _ = run_main(["claims", "--budget", "micro", "--file", claims_file(tmp_path, c10),
                                 "--out", str(out), "--cache-dir", cache])
    assert code == 0
    (row,) = read(out / "claims.csv")
    assert row["verdict"].startswith("degenerate: the arms are the same runs")
    assert row["diff_mean"] == "" and row["mde_80"] == "" and "mde_80 0.000" not in printed


def test_claims_keep_going_when_a_claims_runs_fail_and_the_command_fails(tmp_path, cache, monkeypatch):
    from gradpower.experiments import job

    def fail_power_runs(cfg_dict, *args):  # every AdamPower run of X3 fails as a run would (a message, no raise)
        if cfg_dict["optim"] == "adampower" and cfg_dict["batch_size"] == 8:
            return "failed", "boom"
        return real(cfg_dict, *args)

    real = job.train_one
    monkeypatch.setattr(job, "train_one", fail_power_runs)
    claim = claim_toml("X3", '{ preset = "llama-tiny", batch_size = 8, seq_len = 16 }')  # its power runs fail
    claim += claim_toml("X4", '{ preset = "llama-tiny", batch_size = 4, seq_len = 16 }')
    out = tmp_path / "claims"
    code, printed, err = run_main(["claims", "--budget", "micro", "--file", claims_file(tmp_path, claim),
                                   "--out", str(out), "--cache-dir", cache])
    assert code == 1 and "2 run(s) failed: adampower seed 0, adampower seed 1 (boom)" in err
    rows = {r["claim"]: r for r in read(out / "claims.csv")}
    assert rows["X3"]["verdict"].startswith("runs failed: 2 run(s) failed")
    assert rows["X4"]["verdict"] == "micro: plumbing only, no verdict"
    assert f"written to {out}: claims.csv, claims.md, the reports of X3, X4" in printed


# -- flags ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, hint, typed", [
    (["compare", "--seed", "3"], "did you mean --seeds? (flags are never abbreviated)", ["compare", "--seeds", "3"]),
    (["compare", "--step", "10"], "did you mean --steps?", ["compare", "--steps", "10"]),
    (["compare", "--p", "1.4"], "gradpower compare sets p for every run with --set p=VALUE, or per arm --arm "
     "'NAME: ... p=VALUE'", ["compare", "--set", "p=1.4"]),
    (["sweep", "--p", "1.4"], "or as a grid axis --grid 'p=V1,V2'", ["sweep", "--grid", "p=1.2,1.4"]),
    (["train", "--set", "seq_len=64"], "gradpower train takes each field as its own flag: --seq-len 64",
     ["train", "--seq-len", "64"]),
    (["train", "--ste", "3"], "did you mean --steps?", ["train", "--steps", "3"]),
])
def test_an_abbreviated_or_misplaced_flag_is_refused_with_a_hint_that_parses_as_typed(argv, hint, typed):
    code, printed, err = run_main(argv)
    assert code == 2 and not printed and err.count("\n") == 1
    assert hint in err
    parsed = build_parser().parse_args(typed)  # the spelling the hint names is one the parser takes
    assert parsed.command == typed[0]


def test_every_parser_refuses_abbreviations():
    parser = build_parser()
    commands = next(a.choices for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    assert parser.allow_abbrev is False and all(sub.allow_abbrev is False for sub in commands.values())


# -- precision stated -------------------------------------------------------------------------------------------

def test_flat_range_is_the_run_of_p_within_the_stated_fraction_of_the_maximum():
    ps = np.round(np.arange(0.3, 2.5001, 0.05), 10)
    curve = 1.0 - (ps - 0.9) ** 2  # peak 1.0 at 0.9: within 2% where (p - 0.9)^2 <= 0.02
    low, high = flat_range(curve, ps, 0.02)
    inside = ps[(1.0 - (ps - 0.9) ** 2) >= 0.98]
    assert (low, high) == (inside.min(), inside.max())
    assert flat_range(np.where(ps > 2.0, 1.0, 0.0), ps, 0.02) == (2.05, 2.5)  # a flat top at the grid's edge


def test_noise_prints_each_p_star_with_its_flat_range(tmp_path, cache):
    out = tmp_path / "noise"
    code, printed, _ = run_main(["noise", "--preset", "llama-tiny", "--batch-sizes", "2,8", "--micro-batches", "3",
                                 "--set", "seq_len=16", "--set", "bpe_vocab_size=300", "--set", f"cache_dir={cache}",
                                 "--out", str(out)])
    assert code == 0
    rows = [r for r in read(out / "noise.csv") if r["block"] == "all"]
    for row in rows:
        for noise in ("uniform", "gaussian"):
            low, star, high = (float(row[f"p_flat_low_{noise}"]), float(row[f"p_star_{noise}"]),
                               float(row[f"p_flat_high_{noise}"]))
            assert low <= star <= high
        cell = (f"| {row['batch_size']} | {float(row['p_star_uniform']):g} [{float(row['p_flat_low_uniform']):g}, "
                f"{float(row['p_flat_high_uniform']):g}] |")
        assert cell in printed
    assert "flat range: the p whose predicted loss decrease D(p) is within 2% of its maximum" in printed


def test_a_seed_count_estimated_from_few_seeds_carries_its_range():
    # the ends are seeds_needed at the 95% chi-square interval of the spread (independent formula here)
    diff_sd, n, effect = 0.02, 3, 0.01
    low_sd = diff_sd * math.sqrt((n - 1) / stats.chi2.ppf(0.975, n - 1))
    high_sd = diff_sd * math.sqrt((n - 1) / stats.chi2.ppf(0.025, n - 1))
    assert seeds_needed_range(diff_sd, n, effect) == (seeds_needed(low_sd, effect), seeds_needed(high_sd, effect))
    low, high = seeds_needed_range(diff_sd, n, effect)
    assert low < seeds_needed(diff_sd, effect) < high
    narrow = seeds_needed_range(diff_sd, 30, effect)
    assert narrow[1] - narrow[0] < high - low


def test_the_verdict_line_says_where_its_seed_count_comes_from(compared):
    _, printed = compared
    line = next(line for line in printed.splitlines() if line.startswith("adampower p=1.2 - adamw"))
    if "no difference detectable" in line and "about " in line:
        assert "(95% range " in line and "the spread comes from 2 seeds)" in line


def test_the_drop_is_read_from_the_regular_evaluation_it_names(compared):
    out, printed = compared
    # "fell D nats over its last doubling of steps (4 -> 8, regular evaluation, which ended G nats from the final one)"
    line = next(line for line in printed.splitlines() if "over its last doubling" in line)
    drop = float(line.split("fell ")[1].split(" nats")[0])
    gap = float(line.split("which ended ")[1].split(" nats")[0])
    drops, gaps = [], []
    for row in read(out / "runs.csv"):
        if row["arm"] != "adamw":
            continue
        records = [json.loads(x) for x in (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        val = {r["step"]: r["val_loss"] for r in records if r.get("val_loss") is not None}
        drops.append(val[4] - val[8])
        gaps.append(records[-1]["final_val_loss"] - val[8])
    assert drop == pytest.approx(np.mean(drops), abs=6e-4) and gap == pytest.approx(np.mean(gaps), abs=6e-4)


def test_the_regular_evaluation_is_spread_over_the_final_one(cache):
    from gradpower.data.pipeline import DataConfig, build_data, spread

    data = build_data(DataConfig(bpe_vocab_size=300, eval_batches=3, cache_dir=cache, eval_tokens=64 * 16),
                      seq_len=16, micro_batch_size=2, seed=0, vocab_size=300)
    final = torch_rows(data.final_val)
    regular = torch_rows(data.val)
    assert len(final) == 64 and len(regular) == 6
    assert regular == [final[i] for i in spread(6, 64)] and spread(6, 64) == [0, 10, 21, 32, 42, 53]


def torch_rows(batches) -> list[tuple[int, ...]]:
    return [tuple(row.tolist()) for batch in batches for row in batch]


def test_the_loss_figure_names_the_tokens_scored_and_why_its_curves_differ(compared):
    from PIL import Image

    out, _ = compared
    scored = {int(r["val_tokens"]) for r in read(out / "runs.csv")}
    description = Image.open(out / "loss.png").text["Description"]
    assert f"final: {scored.pop():,} tokens scored" in description
    assert "spread over the final set; it ended " in description
