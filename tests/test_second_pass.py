"""A newcomer's second pass through the command line: every number says what it is, every hint runs as printed,
and bad input to an experiment stops before its first run. Each test drives the command as a user types it."""

import contextlib
import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gradpower.cli import main
from gradpower.experiments.claims import CLAIMS_FILE
from gradpower.invocation import PROGRAM_VARIABLE, spelling

from .helpers import MICRO_EVAL_TOKENS

pytestmark = pytest.mark.timeout(600)
SCRIPT = Path(sys.executable).parent / "gradpower"  # the console script pip installed beside this python


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def small(cache: str) -> list[str]:
    return ["--preset", "llama-tiny", "--batch-size", "2", "--seq-len", "16", "--bpe-vocab-size", "300",
            "--eval-batches", "1", "--cache-dir", cache, "--device", "cpu", "--eval-tokens", str(MICRO_EVAL_TOKENS)]


def experiment(cache: str, steps: int = 6) -> list[str]:
    return ["--preset", "llama-tiny", "--steps", str(steps), "--batch-size", "2", "--device", "cpu", "--set",
            "seq_len=16", "--set", "bpe_vocab_size=300", "--set", "eval_batches=1", "--set", f"cache_dir={cache}",
            "--set", f"eval_tokens={MICRO_EVAL_TOKENS}", "--set", "eval_every=2"]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    assert run_main(["train", *small(str(folder)), "--steps", "1", "--out", str(tmp_path_factory.mktemp("w"))])[0] == 0
    return str(folder)


# -- claims: a plumbing budget gives no verdict; the command as typed; an lr at the edge of its grid ---------------

@pytest.fixture(scope="module")
def edge_claims(tmp_path_factory, cache):
    """``claims --budget micro --file F --only C1`` of a C1 whose lr grid has two values (the choice is an edge)."""
    root = tmp_path_factory.mktemp("claims")
    text = CLAIMS_FILE.read_text()
    budgets = text[:text.index("[[claim]]")]
    c1 = text[text.index('[[claim]]\nid = "C1"'):text.index('[[claim]]\nid = "C2"')]
    c1 = c1.replace("ladder = [0.125, 0.25, 0.5, 1]\n", "")
    c1 = c1.replace("tune_lr = [1.5e-3, 3e-3, 6e-3]", "tune_lr = [2e-3, 4e-3]")
    path = root / "claims.toml"
    path.write_text(budgets + c1)
    argv = ["claims", "--budget", "micro", "--file", str(path), "--only", "C1", "--out", str(root / "out"),
            "--cache-dir", cache]
    code, printed, _ = run_main(argv)
    assert code == 0
    return root / "out", printed, argv


def test_a_plumbing_budget_prints_no_verdict(edge_claims):
    out, printed, _ = edge_claims
    (row,) = read(out / "claims.csv")
    assert row["verdict"] == "micro: plumbing only, no verdict"
    assert "C1 @ 64 steps: micro: plumbing only, no verdict (adampower p=1.2 - adamw = " in printed
    table = (out / "claims.md").read_text()
    assert "micro: plumbing only, no verdict" in table
    assert not re.search(r"\b(supported|contradicted|not resolved)\b", printed + table)


def test_claims_md_records_the_command_exactly_as_typed(edge_claims):
    out, _, argv = edge_claims
    assert f"Command: `gradpower {shlex.join(argv)}`" in (out / "claims.md").read_text()


def test_an_lr_at_the_edge_of_its_grid_is_flagged_on_the_console_in_claims_md_and_claims_csv(edge_claims):
    out, printed, _ = edge_claims
    (row,) = read(out / "claims.csv")
    chosen = {arm: lr for arm, lr in (item.rsplit(" ", 1) for item in row["lr_at_edge"].split("; "))}
    assert set(chosen) == {"adamw", "adampower p=1.2"} and set(chosen.values()) <= {"0.002", "0.004"}
    assert f"C1: warning: the lr chosen at the edge of its tuning grid ({row['lr_at_edge']})" in printed
    assert f"- C1: warning: the lr chosen at the edge of its tuning grid ({row['lr_at_edge']})" in (
        out / "claims.md").read_text()


# -- hints run as printed ------------------------------------------------------------------------------------------

def test_a_hint_names_the_program_as_it_was_invoked_and_runs_as_printed(tmp_path, cache):
    env = {k: v for k, v in os.environ.items() if k != PROGRAM_VARIABLE}
    env["PATH"] = "/usr/bin:/bin"  # the venv is not on PATH, as in a shell after `make demo`
    home = SCRIPT.parents[2]  # the folder holding the venv: typed from there, as the README does
    script = os.path.relpath(SCRIPT, home)
    out = tmp_path / "run"
    start = [script, "train", *small(cache), "--steps", "4", "--out", str(out)]
    subprocess.run([*start, "--stop-after", "2"], cwd=home, env=env, check=True, capture_output=True)
    again = subprocess.run(start, cwd=home, env=env, capture_output=True, text=True)
    assert again.returncode == 4
    hint = again.stderr.split("pass --resume to continue it (", 1)[1].split(")", 1)[0]
    assert hint == f"{script} train --out {shlex.quote(str(out))} --resume"
    typed = subprocess.run(hint, shell=True, cwd=home, env=env, capture_output=True, text=True)
    assert typed.returncode == 0, typed.stderr
    assert "done: step 4/4" in typed.stdout


def test_a_module_run_is_named_with_its_python():
    assert spelling("/somewhere/gradpower/__main__.py").endswith(" -m gradpower")
    assert spelling(sys.executable + "-not-on-path") == os.path.relpath(sys.executable + "-not-on-path") or \
        spelling(sys.executable + "-not-on-path").startswith("/")


def test_a_refused_resume_names_every_refused_change_at_once_with_the_lr_used(tmp_path, cache):
    out = tmp_path / "r"
    assert run_main(["train", *small(cache), "--steps", "4", "--out", str(out)])[0] == 0
    code, _, err = run_main(["train", "--out", str(out), "--resume", "--lr", "0.01"])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "it finished at step 4/4: pass --steps N with N > 4" in line and "lr: 0.003 -> 0.01" in line
    code, _, err = run_main(["train", "--out", str(out), "--resume", "--lr", "0.01", "--steps", "6"])
    assert code == 2 and "lr: 0.003 -> 0.01" in err and "None" not in err and "finished" not in err


# -- compare and sweep check their input before the first run ----------------------------------------------------

@pytest.mark.parametrize("command", [["compare"], ["sweep", "--grid", "p=1.0,1.2", "--set", "optim=adampower"]])
def test_bad_data_stops_an_experiment_before_its_first_run_leaving_nothing(tmp_path, cache, command):
    out = tmp_path / "x"
    code, printed, err = run_main([*command, *experiment(cache), "--data", "/nonexistent", "--out", str(out)])
    assert code == 2 and "training ->" not in printed
    assert err.strip().splitlines() == [
        "gradpower: error: /nonexistent: no such file or folder (data is 'shakespeare', 'c4', 'openwebtext' or a path)"]
    assert not out.exists()


def test_a_tokenizer_that_cannot_load_stops_compare_before_its_first_run(tmp_path, cache):
    out = tmp_path / "x"
    code, printed, err = run_main(["compare", *experiment(cache), "--set", f"tokenizer={tmp_path / 'none'}",
                                   "--out", str(out)])
    assert code == 2 and "training ->" not in printed and not out.exists()
    (line,) = err.strip().splitlines()
    assert line.startswith("gradpower: error: cannot load tokenizer")


def test_train_with_bad_data_leaves_no_folder(tmp_path):
    out = tmp_path / "deep" / "t"
    code, _, err = run_main(["train", "--data", "/nonexistent", "--out", str(out)])
    assert code == 2 and "no such file or folder" in err
    assert not (tmp_path / "deep").exists()


def test_a_key_given_twice_in_an_arm_is_an_error_naming_it(tmp_path, cache):
    code, printed, err = run_main(["compare", *experiment(cache), "--arm", "optim=adamw",
                                   "--arm", "optim=adampower p=1.2 p=1.4", "--out", str(tmp_path / "x")])
    assert code == 2 and "training ->" not in printed
    assert err.strip() == ("gradpower: error: p is given twice in 'optim=adampower p=1.2 p=1.4': give each field "
                           "once")


# -- every number says what it is -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compared(tmp_path_factory, cache):
    """A micro compare with an arm that hardly trains (it never reaches the baseline's final loss)."""
    out = tmp_path_factory.mktemp("compare") / "c"
    code, printed, _ = run_main(["compare", *experiment(cache), "--seeds", "2", "--out", str(out),
                                 "--arm", "optim=adamw", "--arm", "optim=adampower p=1.2",
                                 "--arm", "frozen: optim=adamw lr=1e-9"])
    assert code == 0
    return out, printed


def test_plus_minus_says_what_it_is_in_the_table_and_in_the_run_lines(compared):
    out, printed = compared
    assert "val loss (mean ± sd over seeds)" in printed and "val loss (mean ± sd over seeds)" in (
        out / "report.md").read_text()
    run_lines = [line for line in printed.splitlines() if "seed 0: final val loss" in line]
    assert run_lines and all(re.search(r"± \d\.\d{4} \(standard error over [\d,]+ held-out tokens\)", line)
                             for line in run_lines)


def test_the_loss_figure_says_its_curves_are_the_regular_evaluation_and_marks_the_final_one(compared):
    out, _ = compared
    description = Image.open(out / "loss.png").text["Description"]
    assert "lines the regular evaluation" in description and "final evaluation (the table's number)" in description
    scored = {int(r["val_tokens"]) for r in read(out / "runs.csv")}  # what was scored, not what was asked for
    assert len(scored) == 1 and f"final: {scored.pop():,} tokens scored" in description


def test_the_done_line_names_its_two_losses_apart_and_rounds_them(compared):
    _, printed = compared
    done = [line for line in printed.splitlines() if line.startswith("done: ")]
    assert len(done) == 6
    for line in done:
        assert re.search(r"regular-evaluation val loss \d\.\d{4} \(1 batch\(es\)", line)
        assert re.search(r"final val loss \d\.\d{4} ± \d\.\d{4} \(standard error", line)
        assert not re.search(r"\d\.\d{5,}", line)  # nothing unrounded


def test_tokens_per_s_counts_training_alone_and_the_final_evaluation_apart(compared):
    out, printed = compared
    for row in read(out / "runs.csv"):
        records = [json.loads(line) for line in (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        evaluating = sum(r.get("eval_s") or 0.0 for r in records[1:])
        seconds = records[-1]["elapsed_s"] - records[0]["elapsed_s"] - evaluating
        training = (records[-1]["tokens"] - records[0]["tokens"]) / seconds
        assert float(row["tokens_per_s"]) == pytest.approx(training, rel=1e-4)
        assert float(row["final_eval_s"]) == pytest.approx(records[-1]["final_eval_s"], rel=1e-4) and evaluating > 0
    assert "training tokens/s" in printed and "a throughput measurement of this machine" in " ".join(printed.split())


def test_a_blank_speed_up_says_why(compared):
    out, printed = compared
    frozen = next(r for r in read(out / "results.csv") if r["arm"] == "frozen")
    assert frozen["speedup"] == "" and frozen["speedup_note"].startswith("not reached")
    assert "(not reached: the arm never got to the baseline's final loss)" in printed


def test_throughput_within_run_to_run_noise_is_marked(compared):
    out, printed = compared
    rows = {r["arm"]: r for r in read(out / "results.csv")}
    assert rows["adamw"]["tokens_per_s_vs_baseline"] == ""
    marks = {arm: rows[arm]["tokens_per_s_vs_baseline"] for arm in ("adampower p=1.2", "frozen")}
    assert set(marks.values()) <= {"within noise", "faster", "slower"}
    for arm, mark in marks.items():
        line = next(line for line in printed.splitlines() if line.startswith(f"| {arm} |"))
        assert line.rstrip(" |").endswith(" ~") == (mark == "within noise")


def test_theory_flags_an_optimum_at_the_edge_of_its_grid(tmp_path):
    code, printed, _ = run_main(["theory", "--ratios", "0.5,50", "--steps", "200", "--out", str(tmp_path)])
    assert code == 0
    assert "| 0.5 | 0.5 (grid edge) |" in printed
    assert "warning: sigma/mu = 0.5: p* = 0.5 is the lower edge of the grid [0.5, 2.5]" in printed
    optimal = read(tmp_path / "optimal_p.csv")
    assert [r["p_opt_edge"] for r in optimal] == ["lower", ""]


def test_a_comparison_whose_runs_used_different_thread_counts_is_refused(compared, tmp_path):
    out, _ = compared
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    env = next((copy / "runs").iterdir()) / "env.json"
    threads = json.loads(env.read_text())["threads"]
    assert f"torch threads per run: {threads} (every CPU run)" in (copy / "report.md").read_text()
    env.write_text(json.dumps({**json.loads(env.read_text()), "threads": threads + 1}))
    code, printed, err = run_main(["report", str(copy)])
    assert code == 2 and not printed
    assert err.count("\n") == 1 and "pairs runs of different torch thread counts (" in err
    assert str(env.parent) in err and "with one --jobs setting" in err
