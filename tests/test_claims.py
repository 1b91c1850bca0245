"""gradpower claims: the micro budget runs the plumbing end to end (files, columns, a verdict recomputed from
runs.csv by hand), the verdict rule on fixed intervals, and bad input as one-line errors."""

import csv
import math

import pytest
from scipy import stats

from gradpower.cli import main
from gradpower.experiments.claims import CLAIMS_FILE, load_claims, verdict
from gradpower.experiments.stats import Interval

COLUMNS = ["claim", "source", "statement", "setting", "metric", "arm", "baseline", "diff_mean", "ci_low", "ci_high",
           "n_seeds", "verdict"]


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_claims_file_declares_every_claim_with_its_direction():
    claims, budgets = load_claims(CLAIMS_FILE)
    assert [c.id for c in claims] == [f"C{i}" for i in range(1, 11)]
    assert set(budgets) == {"quick", "full", "micro"} and budgets["full"]["effect"] == 0.015
    assert all(c.direction in ("lower", "higher", "additive") for c in claims)


def test_micro_claims_write_the_table_and_a_verdict_that_follows_runs_csv(tmp_path, capsys):
    out = tmp_path / "claims"
    argv = ["claims", "--budget", "micro", "--only", "C9,C6", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| C9 | GPAS paper |" in printed and "written to" in printed and "claims.md" in printed
    rows = read(out / "claims.csv")
    assert [r["claim"] for r in rows] == ["C6", "C9"] and list(rows[0])[:len(COLUMNS)] == COLUMNS
    assert (out / "claims.md").exists() and (out / "C9" / "difference.png").exists()
    for row, (arm, base) in zip(rows, [("muonpower p=1.2", "muon"), ("pre-ln + gpas", "pre-ln")]):
        runs = read(out / row["claim"] / "runs.csv")
        loss = {(r["arm"], r["seed"]): float(r["final_val_loss"]) for r in runs}
        diffs = [loss[(arm, s)] - loss[(base, s)] for s in sorted({r["seed"] for r in runs})]
        mean, half = sum(diffs) / len(diffs), stats.t.ppf(0.975, len(diffs) - 1) * stats.tstd(diffs) / math.sqrt(2)
        assert float(row["diff_mean"]) == pytest.approx(mean, abs=2e-5)
        assert float(row["ci_low"]) == pytest.approx(mean - half, abs=2e-4)  # t(0.975, 1) = 12.7 x the CSV rounding
        expected = ("supported" if mean + half < 0 else "contradicted" if mean - half > 0 else "not resolved")
        assert row["verdict"] == expected and row["n_seeds"] == "2"
    # Rerunning reuses every run: nothing trains again.
    assert main(argv) == 0
    assert "training ->" not in capsys.readouterr().out


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
