"""The paths a user takes through the command line, each hint followed exactly as printed.

Resume without retyping flags, finished runs, interrupts in start-up, missing
optional packages, the micro-batch under several processes, and the help,
version and error messages.
"""

import argparse
import json
import logging
import math
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from gradpower import extras, interrupts
from gradpower.cli import build_parser, main
from gradpower.experiments.runs import load_run
from gradpower.optim import routes
from gradpower.train.config import TrainConfig, micro_batch_for, run_name

from .helpers import MICRO_EVAL_TOKENS

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    assert main(["train", *small(str(folder)), "--steps", "1", "--out", str(tmp_path_factory.mktemp("warm"))]) == 0
    return str(folder)


def small(cache: str) -> list[str]:
    """Non-default flags throughout, so a resume that forgot them would be noticed."""
    return ["--preset", "llama-tiny", "--batch-size", "2", "--seq-len", "16", "--bpe-vocab-size", "300",
            "--eval-batches", "1", "--cache-dir", cache, "--device", "cpu", "--log-every", "1", "--eval-every", "0",
            "--optim", "adamw", "--eval-tokens", str(MICRO_EVAL_TOKENS)]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1]


def hint_command(line: str, marker: str) -> list[str]:
    """The command a message tells the user to type, as argv for ``main`` (without ``gradpower``)."""
    argv = shlex.split(line.split(marker, 1)[1])
    assert argv[0] == "gradpower"
    return argv[1:]


# -- resume ------------------------------------------------------------------------------------------------

def test_resume_takes_the_saved_configuration_and_refuses_an_explicit_change(tmp_path, cache, capsys):
    out = tmp_path / "r"
    straight = tmp_path / "straight"
    assert main(["train", *small(cache), "--steps", "6", "--out", str(straight)]) == 0
    assert main(["train", *small(cache), "--steps", "6", "--out", str(out), "--stop-after", "3"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 0  # as the README says: no flag retyped
    resumed = rows(out)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in rows(straight)]
    assert main(["train", "--out", str(out), "--resume", "--steps", "8", "--batch-size", "4"]) == 2
    line = last_line(capsys.readouterr().err)
    assert "batch_size: 2 -> 4" in line and "--resume takes the saved values" in line


def test_a_finished_run_is_not_silently_extended_and_steps_extends_it_keeping_its_warmup(tmp_path, cache, capsys):
    out = tmp_path / "r"
    assert main(["train", *small(cache), "--steps", "16", "--out", str(out), "--schedule", "cos"]) == 0
    warmup = json.loads((out / "config.json").read_text())["resolved"]["warmup"]
    assert warmup == 1  # min(100, 16 // 10)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert last_line(capsys.readouterr().err) == (
        f"gradpower: error: --resume: {out} refused: it finished at step 16/16: pass --steps N with N > 16 to "
        "train further")
    assert main(["train", "--out", str(out), "--resume", "--steps", "10"]) == 2
    assert "is at step 16 already" in last_line(capsys.readouterr().err)
    assert main(["train", "--out", str(out), "--resume", "--steps", "40"]) == 0
    err = capsys.readouterr().err
    assert "its cos lr schedule is recomputed for 40 steps" in err
    extended = rows(out)
    assert [r["step"] for r in extended] == list(range(1, 41))
    # The lr after the extension follows a 40-step cosine with the run's original 1-step warm-up
    # (the default warm-up for 40 steps would be 4 and send the lr back down into a warm-up).
    peak, floor = extended[1]["lr"], 0.1 * extended[1]["lr"]
    for r in extended[16:]:
        progress = (r["step"] - 1 - warmup) / (40 - 1 - warmup)
        assert r["lr"] == pytest.approx(floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress)), rel=1e-9)


def test_resume_of_an_empty_or_missing_folder_is_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        assert main(["train", "--out", str(folder), "--resume"]) == 2
        assert "holds no gradpower run" in last_line(capsys.readouterr().err)
    assert not (tmp_path / "missing").exists()


def test_the_interrupt_hint_of_train_works_as_printed(tmp_path, cache, capsys, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setattr(interrupts, "requested", lambda: "SIGINT")  # a Ctrl-C arrived during step 1
    assert main(["train", *small(cache), "--steps", "5", "--out", str(out)]) == 130
    line = last_line(capsys.readouterr().err)
    assert "interrupted by SIGINT at step 1/5" in line
    monkeypatch.undo()
    assert main(hint_command(line, "continue with: ")) == 0
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4, 5]


def test_the_interrupt_hint_of_compare_works_as_printed(tmp_path, cache, capsys, monkeypatch):
    argv = ["compare", "--steps", "4", "--seeds", "1", "--batch-size", "2", "--preset", "llama-tiny",
            "--set", "seq_len=16", "--set", "bpe_vocab_size=300", "--set", f"cache_dir={cache}",
            "--set", "eval_batches=1", "--arm", "optim=adamw", "--arm", "optim=adampower", "--out", str(tmp_path / "c")]
    calls = iter([None])  # the check before the first run sees nothing; a Ctrl-C arrives during its step 1
    monkeypatch.setattr(interrupts, "requested", lambda: next(calls, "SIGINT"))
    assert main(argv) == 130
    line = last_line(capsys.readouterr().err)
    assert "--resume" not in line
    monkeypatch.undo()
    assert main(hint_command(line, "run the same command again to continue (finished runs are reused, "
                                   "interrupted ones resume): ")) == 0
    assert "resuming" in capsys.readouterr().out


def test_a_run_stopped_during_start_up_is_started_by_the_same_command(tmp_path, cache, capsys):
    out = tmp_path / "z"
    argv = ["train", *small(cache), "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    # What a kill during the first step leaves: the config and environment files, no step, no checkpoint.
    for name in ("metrics.jsonl",):
        (out / name).unlink()
    for path in (out / "checkpoints").iterdir():
        path.unlink()
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "no step was completed there" in last_line(capsys.readouterr().err)
    assert main(argv) == 0
    assert [r["step"] for r in rows(out)] == [1, 2]


# -- optional packages ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, module, extra", [
    (["--data", "c4"], "transformers", "hf"),
    (["--tokenizer", "gpt2"], "transformers", "hf"),
    (["--tensorboard"], "tensorboard", "tensorboard"),
    (["--wandb"], "wandb", "wandb"),
])
def test_a_missing_optional_package_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, flags,
                                                                           module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails, find_spec answers None
    out = tmp_path / "run"
    assert main(["train", *flags, "--steps", "1", "--warmup", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"needs the '{extra}' extra (module '{module}' is not installed)" in err
    assert not out.exists()
    command = err.split(": ")[-1]
    assert command == f"pip install -e '{ROOT.resolve()}[{extra}]'"


def test_every_extra_named_in_a_hint_exists_and_the_train_modules_are_its_packages():
    extras_of = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in extras.EXTRA_MODULES:
        assert extra in extras_of
    packages = {spec.split(">")[0].split("=")[0].split("<")[0].strip() for spec in extras_of["train"]}
    assert packages == set(extras.EXTRA_MODULES["train"])
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[train]'" in readme
    for package in packages:  # the README's list of the train extra is complete
        assert f"`{package}`" in readme


def test_streamed_data_with_a_bpe_tokenizer_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "c4", "--tokenizer", "bpe", "--steps", "1", "--warmup", "0", "--out",
                 str(out)]) == 2
    assert "needs a pretrained tokenizer" in capsys.readouterr().err and not out.exists()


# -- the global batch under several processes -------------------------------------------------------------------

@pytest.mark.parametrize("batch, cap, world, micro", [
    (8, None, 1, 8), (8, None, 2, 4), (8, 8, 2, 4), (8, 3, 2, 2), (6, 4, 1, 3), (12, 5, 3, 4), (8, 1, 4, 1),
])
def test_the_micro_batch_is_the_largest_divisor_of_the_per_process_batch_that_fits(batch, cap, world, micro):
    assert micro_batch_for(batch, cap, world) == micro
    assert (batch // world) % micro == 0 and micro <= (cap or batch)


def test_a_batch_that_does_not_divide_over_the_processes_is_refused_with_the_numbers():
    with pytest.raises(ValueError, match=r"batch_size 7 does not divide over 2 processes.*\(e\.g\. 6 or 8\)"):
        micro_batch_for(7, None, 2)


# -- messages, help, exit codes ------------------------------------------------------------------------------------

def test_compare_checks_its_baseline_before_any_run(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["compare", "--baseline", "nosucharm", "--out", str(out)]) == 2
    assert "'nosucharm' is not an arm; arms: adamw, adampower p=1.2" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_p_says_what_it_accepts(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--p", "abc"])
    assert info.value.code == 2
    assert "p must be a number > 0, 'auto' or 'track', got 'abc'" in capsys.readouterr().err
    assert main(["compare", "--arm", "optim=adampower p=abc"]) == 2
    assert "p must be a number > 0, 'auto' or 'track'" in capsys.readouterr().err


def test_an_unknown_flag_names_the_subcommand_help_and_the_close_match(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--stepz", "5"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gradpower train: error: unrecognized arguments: --stepz 5; did you mean --steps? "
                   "(see gradpower train --help)")


def test_help_states_each_default_once_and_the_real_folder_name(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    train_parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "train"
    ]
    for action in train_parser._actions:
        assert (action.help or "").count("(default") <= 1, action.help
    assert f"runs/{run_name(TrainConfig())}" in text.replace("- ", "-")
    assert f"runs/{run_name(TrainConfig(p=1.4, steps=200, seed=1))}" in text.replace("- ", "-")
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "95% intervals" in text and "%%" not in text


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("gradpower 0.1.0 (torch ")


def test_a_programming_error_keeps_its_traceback(monkeypatch):
    from gradpower.commands import train

    def broken(args, command):
        raise TypeError("a bug")

    monkeypatch.setattr(train, "run", broken)
    with pytest.raises(TypeError, match="a bug"):  # not "error: a bug" with exit 2
        main(["train", "--steps", "1"])


# -- first steps that look frozen -------------------------------------------------------------------------------------

def test_the_first_step_says_it_compiles_and_throughput_leaves_it_out(tmp_path, cache, capsys, monkeypatch, caplog):
    # a new optimizer compiles every size on first use (its compiled kernels are its own)
    monkeypatch.setattr(routes, "CPU_KERNEL", False)  # the Inductor route (CUDA's), which compiles per size
    out = tmp_path / "r"
    argv = [*small(cache), "--optim", "adampower", "--steps", "3", "--out", str(out)]
    with caplog.at_level(logging.INFO, logger="gradpower.optim.onepass"):
        assert main(["train", *argv]) == 0
    text = capsys.readouterr().out
    assert "first step: compiling AdamPower's one-pass kernel" in text
    assert "first step took" in text
    assert any("compiled AdamPower's one-pass kernel" in r.getMessage() for r in caplog.records)
    logged = rows(out)
    assert logged[0]["tokens_per_s"] is None and all(r["tokens_per_s"] > 0 for r in logged[1:])


def test_mean_throughput_is_measured_after_the_first_step(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": TrainConfig().to_dict()}))
    # A 60-second first step (compiles), then 1 s per 100-token step.
    records = [{"step": s, "tokens": 100 * s, "loss": 1.0, "lr": 1e-3, "elapsed_s": 60.0 + (s - 1)}
               for s in range(1, 11)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_run(run).mean_tokens_per_s == pytest.approx(900 / 9)


def test_the_readme_speaks_of_the_project_not_of_how_it_was_made():
    readme = (ROOT / "README.md").read_text()
    for history in ("this session", "the issue's", "ticket", "no GPU was available"):
        assert history not in readme, history
    assert not re.search(r"commit [0-9a-f]{7}", readme)
