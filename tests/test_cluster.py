"""compare/sweep through ``--launcher submitit``: real submitit jobs run by its LocalExecutor (no cluster needed),
a job signalled as SLURM signals it, what a SLURM job of a run asks for, and the launcher's errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradpower.cli import build_parser, config_from_args, main
from gradpower.experiments.launcher import (
    LauncherConfig,
    launcher_config,
    sbatch_text,
    torchrun_command,
    torchrun_executable,
)
from gradpower.experiments.spec import load_experiment
from gradpower.train.config import TrainConfig
from tests.helpers import MICRO_EVAL_TOKENS, break_for_resume

pytest.importorskip("submitit")

#: The columns that do not depend on how fast the machine was.
RESULT_DEFINING = ("arm", "seed", "n_seeds", "lr", "final_val_loss", "best_val_loss", "val_loss_mean", "val_loss_std",
                   "diff_mean", "diff_ci_low", "diff_ci_high", "steps", "tokens", "spikes", "val_tokens", "val_loss_se")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def micro(cache: str, steps: int) -> list[str]:
    return ["--preset", "llama-tiny", "--steps", str(steps), "--batch-size", "2", "--device", "cpu", "--set",
            "seq_len=16", "--set", "bpe_vocab_size=300", "--set", "eval_batches=1", "--set", f"cache_dir={cache}",
            "--set", f"eval_tokens={MICRO_EVAL_TOKENS}", "--seeds", "1",
            "--arm", "optim=adamw", "--arm", "optim=adampower p=1.2"]


LOCAL_JOBS = ["--launcher", "submitit", "--submitit-executor", "local", "--gpus-per-run", "0"]


def table(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k in RESULT_DEFINING} for row in csv.DictReader(f)]


def assert_same_tables(path: Path, reference: Path) -> None:
    """Equal tables: the same rows and text, numbers within 1e-5 (two processes training at once on the same
    cores may sum a float32 GEMM in another order: MKL picks its threads by the load)."""
    rows, expected = table(path), table(reference)
    assert [r.keys() for r in rows] == [r.keys() for r in expected]
    for row, other in zip(rows, expected):
        for key, value in row.items():
            try:
                number, want = float(value), float(other[key])
            except ValueError:
                assert value == other[key], (path.name, key, row, other)
                continue
            assert number == pytest.approx(want, abs=1e-5, nan_ok=True), (path.name, key, row, other)


def test_jobs_through_submitit_give_the_tables_of_local_runs(tmp_path, cache, capsys):
    assert main(["compare", *micro(cache, 4), "--out", str(tmp_path / "here")]) == 0
    assert main(["compare", *micro(cache, 4), "--out", str(tmp_path / "jobs"), *LOCAL_JOBS]) == 0
    out = capsys.readouterr().out
    assert "submitted 2 job(s) (local)" in out and "[jobs] 2/2 done (0 failed)" in out
    for name in ("runs.csv", "results.csv"):
        assert_same_tables(tmp_path / "jobs" / name, tmp_path / "here" / name)
    # the same run folders (names and files) as local runs, and the jobs' logs beside them
    here = sorted(p.name for p in (tmp_path / "here" / "runs").iterdir())
    assert sorted(p.name for p in (tmp_path / "jobs" / "runs").iterdir()) == here
    assert len(list((tmp_path / "jobs" / "slurm").glob("*_0_log.out"))) == 2
    # a second command submits nothing: every run is finished
    assert main(["compare", *micro(cache, 4), "--out", str(tmp_path / "jobs"), *LOCAL_JOBS]) == 0
    out = capsys.readouterr().out
    assert "reusing 2 finished run(s) of 2" in out and "submitted" not in out


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _last_step(run_dir: Path) -> int:
    """The last step in the run's metrics so far (a line still being written is skipped)."""
    metrics = run_dir / "metrics.jsonl"
    for line in reversed(metrics.read_text().splitlines() if metrics.exists() else []):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job's process through /proc")
def test_a_job_signalled_as_slurm_does_checkpoints_is_requeued_and_ends_as_if_uninterrupted(tmp_path, cache):
    steps = 40
    assert main(["compare", *micro(cache, steps), "--out", str(tmp_path / "here"), "--set", "eval_every=20"]) == 0
    out = tmp_path / "jobs"
    command = [sys.executable, "-m", "gradpower", "compare", *micro(cache, steps), "--out", str(out), *LOCAL_JOBS,
               "--set", "eval_every=20"]
    submitting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        registry = out / "slurm" / "jobs.json"
        deadline = time.time() + 240
        while not registry.exists() and time.time() < deadline:
            time.sleep(0.2)
        jobs = json.loads(registry.read_text())
        # SIGUSR2 (SLURM's warning before a time limit or a preemption) to one job, SIGTERM to the other, each as
        # soon as its run is past step 4 (the jobs start apart: one may wait for the other's token cache)
        signals = dict(zip(sorted(jobs), (signal.SIGUSR2, signal.SIGTERM)))
        sent = {}
        while len(sent) < len(signals) and time.time() < deadline:
            for run_dir, signum in signals.items():
                job_id = jobs[run_dir]["job_id"]
                if job_id in sent or _last_step(Path(run_dir)) < 4:
                    continue
                assert _last_step(Path(run_dir)) < steps, "the run ended before it could be signalled"
                (task,) = _children(int(job_id))
                os.kill(task, signum)
                sent[job_id] = signal.Signals(signum).name
            time.sleep(0.02)
        assert len(sent) == 2, "the runs did not start"
        text, _ = submitting.communicate(timeout=300)
    finally:
        submitting.kill()
    assert submitting.returncode == 0, text
    assert_same_tables(out / "runs.csv", tmp_path / "here" / "runs.csv")
    for job_id, name in sent.items():
        log = (out / "slurm" / f"{job_id}_0_log.out").read_text() + (out / "slurm" / f"{job_id}_0_log.err").read_text()
        assert f"gradpower: {name} at step" in log and "checkpoint" in log
        assert "Requeued job" in log  # submitit's own requeue, and the job ran again to the end
        assert log.count("Starting with JobEnvironment") == 2


@pytest.mark.slow
def test_a_run_over_two_devices_is_torchrun_with_fsdp_and_matches_one_process(tmp_path, cache):
    """--gpus-per-run 2: the job starts torchrun over two processes (gloo on this CPU) with train --parallel fsdp."""
    one_arm = micro(cache, 4)[:-2]
    assert main(["compare", *one_arm, "--out", str(tmp_path / "here")]) == 0
    jobs = [*LOCAL_JOBS[:-1], "2"]
    assert main(["compare", *one_arm, "--out", str(tmp_path / "fsdp"), *jobs]) == 0
    (log,) = (tmp_path / "fsdp" / "runs").glob("*/train.log")
    text = log.read_text()
    assert "--standalone --nnodes=1 --nproc-per-node=2 -m gradpower train" in text and "--parallel fsdp" in text
    # the final evaluation (a fixed held-out set) is the same; evaluations during training split eval_batches
    # over the ranks, so best_val_loss differs by design
    (fsdp,), (here,) = table(tmp_path / "fsdp" / "runs.csv"), table(tmp_path / "here" / "runs.csv")
    assert float(fsdp["final_val_loss"]) == pytest.approx(float(here["final_val_loss"]), abs=1e-5)


def test_a_failed_job_is_named_with_its_log_and_the_command_exits_1(tmp_path, capsys):
    # Bad data is refused before any job is submitted (exit 2, nothing written) ...
    corpus = tmp_path / "one-line.txt"
    corpus.write_text("too small to hold out a validation split\n")
    bad = ["compare", *micro(str(tmp_path / "cache"), 4), "--set", f"data={corpus}", "--out", str(tmp_path / "b"),
           *LOCAL_JOBS]
    assert main(bad) == 2 and "train split is empty" in capsys.readouterr().err and not (tmp_path / "b").exists()
    # ... so a job fails where only the job can see it: a run to resume whose checkpoint is damaged.
    argv = ["compare", *micro(str(tmp_path / "cache"), 4), "--set", "ckpt_every=2", "--set", "keep_ckpts=3",
            "--out", str(tmp_path / "c"), *LOCAL_JOBS]
    assert main(argv) == 0
    break_for_resume(tmp_path / "c" / "runs")
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 run(s) failed: adamw seed 0 (its log " in err and "no loadable checkpoint" in err
    log = err.split("(its log ")[1].split(": ")[0]
    assert Path(log).is_file() and Path(log).parent == tmp_path / "c" / "slurm"


def test_detach_prints_the_jobs_and_report_builds_the_tables_when_they_are_done(tmp_path, cache, capsys):
    out = tmp_path / "det"
    argv = ["compare", *micro(cache, 4), "--out", str(out), *LOCAL_JOBS, "--detach"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "submitted job(s)" in printed and f"'gradpower report {out}' builds the tables" in printed
    waits = printed.strip().splitlines()[-1].split("writes the tables: ")[1]
    assert waits.startswith("gradpower compare ") and "--detach" not in waits and f"--out {out}" in waits
    assert not (out / "results.csv").exists()
    deadline = time.time() + 240
    while len(list((out / "slurm").glob("*_result.pkl"))) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert main(["report", str(out)]) == 0
    assert len(table(out / "results.csv")) == 2


def fake_slurm(folder: Path, sbatch: str) -> str:
    """A PATH with ``srun`` and an ``sbatch`` running ``sbatch`` (shell) in place of SLURM's."""
    folder.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", sbatch)):
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_sbatch_refusing_the_jobs_is_one_line(tmp_path, cache, capsys, monkeypatch):
    monkeypatch.setenv("PATH", fake_slurm(tmp_path / "bin", 'echo "sbatch: error: invalid partition specified: gpuu" '
                                                            '>&2; exit 1'))
    argv = ["compare", *micro(cache, 4), "--out", str(tmp_path / "x"), "--launcher", "submitit",
            "--slurm-partition", "gpuu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "gradpower: error: SLURM refused the submission: sbatch: error: invalid partition specified: gpuu\n"


def test_detach_submits_one_array_to_sbatch_and_names_its_jobs(tmp_path, cache, capsys, monkeypatch):
    script = tmp_path / "submitted.sh"
    monkeypatch.setenv("PATH", fake_slurm(tmp_path / "bin", f'cp "$1" {script}; echo "Submitted batch job 4242"'))
    out = tmp_path / "x"
    argv = ["compare", *micro(cache, 4), "--out", str(out), "--launcher", "submitit", "--slurm-partition", "gpu",
            "--gpus-per-run", "8", "--slurm-setup", "module load cuda", "--slurm-extra", "qos=high", "--detach"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "submitted job(s) 4242_[0-1]" in printed and f"gradpower report {out}" in printed
    text = script.read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=8", "#SBATCH --qos=high",
                 "#SBATCH --cpus-per-task=64", "#SBATCH --signal=USR2@120", "module load cuda"):
        assert line in text.splitlines(), line
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert sorted(e["job_id"] for e in jobs.values()) == ["4242_0", "4242_1"]
    assert all(Path(run).parent == (out / "runs").resolve() for run in jobs)


def test_the_sbatch_script_and_torchrun_command_of_a_two_node_run():
    launcher = LauncherConfig(launcher="submitit", slurm_partition="gpu", gpus_per_run=8, nodes_per_run=2,
                              timeout_min=600, slurm_setup=["module load cuda/12.4"], slurm_extra={"account": "proj"},
                              slurm_array_parallelism=4)
    text = sbatch_text(launcher, Path("/scratch/sweep/slurm/%j"), "python -u -m submitit.core._submit DIR", 12)
    assert text == """#!/bin/bash

# Parameters
#SBATCH --account=proj
#SBATCH --array=0-11%4
#SBATCH --cpus-per-task=32
#SBATCH --error=/scratch/sweep/slurm/%A_%a/%A_%a_0_log.err
#SBATCH --gpus-per-node=4
#SBATCH --job-name=gradpower
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/scratch/sweep/slurm/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=600
#SBATCH --wckey=submitit

# setup
module load cuda/12.4

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /scratch/sweep/slurm/%A_%a/%A_%a_%t_log.out --error \
/scratch/sweep/slurm/%A_%a/%A_%a_%t_log.err python -u -m submitit.core._submit DIR
"""
    cfg = TrainConfig(preset="llama-0.2b", optim="adampower", p=1.4, lr=1e-3, seed=3, out="/scratch/sweep/runs/x",
                      resume=True)
    command = torchrun_command(cfg, launcher, "gpu-node-017", 23456, "4242_3")
    assert command[:len(torchrun_executable())] == torchrun_executable()
    assert " ".join(command[len(torchrun_executable()):]) == (
        "--nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint=gpu-node-017:23456 --rdzv-id=4242_3 "
        "-m gradpower train --preset llama-0.2b --lr 0.001 --p 1.4 --seed 3 --out /scratch/sweep/runs/x --resume "
        "--parallel fsdp")
    # the flags give the run's configuration back (--resume, which reads the run folder, aside)
    flags = [f for f in command[command.index("train") + 1:] if f != "--resume"]
    assert config_from_args(build_parser().parse_args(["train", *flags])) == \
        dataclasses.replace(cfg, parallel="fsdp", resume=False)


def test_the_launcher_table_of_a_file_and_flags_that_override_it(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text('steps = 4\n[[arm]]\noptim = "adamw"\n[launcher]\nlauncher = "submitit"\ngpus-per-run = 8\n'
                    'slurm_partition = "gpu"\nslurm_setup = ["module load cuda"]\nslurm_extra = {account = "proj"}\n')
    spec = load_experiment(toml)
    launcher = launcher_config(spec.launcher, {"gpus_per_run": 16, "nodes_per_run": 2})
    assert (launcher.launcher, launcher.gpus_per_run, launcher.gpus_per_node, launcher.slurm_partition) == \
        ("submitit", 16, 8, "gpu")
    assert launcher.slurm_setup == ["module load cuda"] and launcher.slurm_extra == {"account": "proj"}
    toml.write_text('steps = 4\n[[arm]]\noptim = "adamw"\n[launcher]\ngpus = 8\n')
    with pytest.raises(ValueError, match=r"\[launcher\]: unknown key 'gpus'"):
        load_experiment(toml)


@pytest.mark.parametrize("flags, message", [
    (["--gpus-per-run", "2"], "--gpus-per-run go(es) with --launcher submitit"),
    (["--launcher", "submitit", "--gpus-per-run", "3", "--nodes-per-run", "2"], "does not split evenly"),
    (["--launcher", "submitit", "--slurm-extra", "account"], "--slurm-extra expects KEY=VALUE"),
    (["--launcher", "submitit", "--gpus-per-run", "0"], "needs a SLURM cluster"),
    (["--launcher", "submitit", "--jobs", "2"], "--jobs is for --launcher local"),
])
def test_launcher_mistakes_are_one_line_errors(tmp_path, cache, capsys, flags, message):
    if "needs a SLURM cluster" in message and subprocess.run(["which", "srun"], capture_output=True).returncode == 0:
        pytest.skip("this machine is a SLURM node")
    assert main(["compare", *micro(cache, 4), "--out", str(tmp_path / "x"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_without_submitit_the_launcher_names_the_cluster_extra(tmp_path, cache, capsys, monkeypatch):
    import gradpower.extras

    real = gradpower.extras.installed
    monkeypatch.setattr(gradpower.extras, "installed", lambda module: module != "submitit" and real(module))
    assert main(["compare", *micro(cache, 4), "--out", str(tmp_path / "x"), *LOCAL_JOBS]) == 2
    err = capsys.readouterr().err
    assert "--launcher submitit needs the 'cluster' extra" in err and "[cluster]" in err
