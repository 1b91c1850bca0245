"""torchrun on CPU (gloo, 2 processes): DDP and FSDP2 give the single-process run's losses.

Each multi-process run has a timeout, so a hang fails the test instead of blocking CI.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradpower.cli import main
from gradpower.optim.muonpower import default_ns_dtype

from .helpers import MICRO_EVAL_TOKENS

pytestmark = pytest.mark.timeout(600)

TORCHRUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    assert main(["train", *common(str(folder)), "--steps", "1", "--out", str(folder.parent / "warm")]) == 0
    return str(folder)


def common(cache: str) -> list[str]:
    return ["--preset", "llama-tiny", "--batch-size", "8", "--micro-batch-size", "2", "--seq-len", "32",
            "--bpe-vocab-size", "300", "--eval-batches", "1", "--cache-dir", cache, "--device", "cpu",
            "--log-every", "1", "--eval-every", "5", "--eval-tokens", str(MICRO_EVAL_TOKENS)]


def torchrun(nproc: int, *argv: str, timeout: float = TORCHRUN_TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_port", str(29500 + (os.getpid() % 500)), "-m", "gradpower", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)


def losses(run_dir: Path) -> list[tuple[int, float, float | None]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("val_loss")) for r in rows]


def assert_same_losses(a: Path, b: Path, rtol: float = 2e-5) -> None:
    la, lb = losses(a), losses(b)
    assert [s for s, _, _ in la] == [s for s, _, _ in lb] and len(la) >= 10
    for (step, x, vx), (_, y, vy) in zip(la, lb):
        assert y == pytest.approx(x, rel=rtol), f"step {step}: {x} vs {y}"
        assert (vx is None) == (vy is None) and (vx is None or vy == pytest.approx(vx, rel=rtol))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
@pytest.mark.parametrize("optim", ["adamw", "adampower"])
def test_data_parallel_matches_one_process_with_the_same_global_batch(tmp_path, cache, parallel, optim):
    argv = ["train", *common(cache), "--steps", "10", "--optim", optim]
    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    proc = torchrun(2, *argv, "--out", str(tmp_path / parallel), "--parallel", parallel)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_losses(tmp_path / "single", tmp_path / parallel)
    ckpt = tmp_path / parallel / "checkpoints" / "step_00000010"
    assert (ckpt.is_dir() and (ckpt / "extra.pt").exists()) if parallel == "fsdp" else ckpt.with_suffix(".pt").exists()


def test_muonpower_under_fsdp2_matches_one_process_and_resumes_across_process_counts(tmp_path, cache):
    argv = ["train", *common(cache), "--steps", "10", "--optim", "muonpower", "--ckpt-every", "5"]
    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    # 2 -> 1: saved by two processes (DCP shards), resumed by one.
    proc = torchrun(2, *argv, "--out", str(tmp_path / "two_one"), "--parallel", "fsdp", "--stop-after", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun(1, *argv, "--out", str(tmp_path / "two_one"), "--parallel", "fsdp", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Newton-Schulz runs in bf16 on this CPU (default_ns_dtype): bf16 GEMMs round differently with another
    # thread count (torchrun's ranks run one thread each), which the fp32 optimizers' 2e-5 would not allow.
    rtol = 2e-5 if default_ns_dtype(torch.device("cpu")) == "float32" else 2e-4
    assert_same_losses(tmp_path / "single", tmp_path / "two_one", rtol)
    # 1 -> 2.
    proc = torchrun(1, *argv, "--out", str(tmp_path / "one_two"), "--parallel", "fsdp", "--stop-after", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun(2, *argv, "--out", str(tmp_path / "one_two"), "--parallel", "fsdp", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_losses(tmp_path / "single", tmp_path / "one_two", rtol)


def test_a_batch_the_processes_do_not_divide_is_refused(tmp_path, cache):
    argv = ["train", *common(cache), "--steps", "2", "--batch-size", "7", "--out", str(tmp_path / "r"),
            "--parallel", "ddp"]
    proc = torchrun(2, *argv)
    assert proc.returncode != 0
    assert "batch_size 7 does not divide over 2 processes" in proc.stderr and "(e.g. 6 or 8)" in proc.stderr
    assert not (tmp_path / "r").exists()
    assert (
        "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr
    )  # (torchrun's own summary has one)


def test_parallel_modes_need_the_right_launcher(tmp_path, cache, capsys, monkeypatch):
    assert main(["train", *common(cache), "--steps", "2", "--out", str(tmp_path / "a"), "--parallel", "ddp"]) == 2
    assert "needs torchrun's environment" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", *common(cache), "--steps", "2", "--out", str(tmp_path / "b")]) == 2
    assert "but --parallel none" in capsys.readouterr().err


def test_killing_one_rank_stops_the_others_with_a_message_and_resume_continues(tmp_path, cache):
    out = tmp_path / "run"
    argv = ["train", *common(cache), "--steps", "400", "--ckpt-every", "5", "--out", str(out), "--parallel", "ddp",
            "--dist-timeout", "60"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "--master_port", str(30500 + (os.getpid() % 500)), "-m", "gradpower", *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / "checkpoints").glob("step_*.pt")):
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-f", f"gradpower train.*{out}"], capture_output=True, text=True)
        pids = [int(p) for p in workers.stdout.split() if int(p) != launcher.pid]
        assert len(pids) >= 2
        start = time.time()
        os.kill(max(pids), 9)
        _, err = launcher.communicate(timeout=90)
        assert time.time() - start < 90
    finally:
        launcher.kill()
    assert "another process of the run stopped or stopped answering" in err
    assert "continue with --resume from the last complete checkpoint" in err
    saved = max(int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("step_*.pt"))
    proc = torchrun(2, *argv, "--resume", "--stop-after", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert losses(out)[-1][0] == saved + 5


def test_a_single_process_checkpoint_resumes_under_fsdp2(tmp_path, cache):
    argv = ["train", *common(cache), "--steps", "10", "--ckpt-every", "5"]
    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    assert main([*argv, "--out", str(tmp_path / "mixed"), "--stop-after", "5"]) == 0
    proc = torchrun(2, *argv, "--out", str(tmp_path / "mixed"), "--parallel", "fsdp", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_losses(tmp_path / "single", tmp_path / "mixed")


def test_the_global_batch_is_split_over_the_processes_without_a_micro_batch_flag(tmp_path, cache):
    argv = ["train", "--preset", "llama-tiny", "--batch-size", "8", "--seq-len", "32", "--bpe-vocab-size", "300",
            "--eval-batches", "1", "--cache-dir", cache, "--device", "cpu", "--steps", "2", "--log-every", "1",
            "--parallel", "ddp", "--out", str(tmp_path / "r")]
    proc = torchrun(2, *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and rows[-1]["tokens"] == 2 * 8 * 32


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_p_auto_under_torchrun_chooses_the_one_process_p_on_every_rank(tmp_path, cache, parallel):
    """Both ranks measure the all-reduced gradient and share rank 0's p: the run then matches a one-process
    run with the same global batch step for step (a rank with another p would pull the mean loss away)."""
    argv = ["train", *common(cache), "--steps", "10", "--optim", "adampower", "--p", "auto", "--p-auto-steps", "4",
            "--noise-every", "5"]
    assert main([*argv, "--micro-batch-size", "8", "--out", str(tmp_path / "single")]) == 0
    proc = torchrun(2, *argv, "--out", str(tmp_path / parallel), "--parallel", parallel)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = [[r["p_auto"] for r in metrics(tmp_path / run) if "p_auto" in r] for run in ("single", parallel)]
    assert len(chosen[0]) == 1 and chosen[0] == chosen[1]
    assert json.loads((tmp_path / parallel / "config.json").read_text())["resolved"]["p"] == chosen[0][0]
    noise = [r["noise"] for r in metrics(tmp_path / parallel) if "noise" in r]
    assert len(noise) == 2 and all(n["p_star_gaussian"] > 0 for n in noise)
    # Train losses step for step (the regular evaluation's batches follow the micro-batch size, which differs).
    single, split = losses(tmp_path / "single"), losses(tmp_path / parallel)
    assert [s for s, _, _ in single] == [s for s, _, _ in split] and len(single) == 10
    for (step, x, _), (_, y, _) in zip(single, split):
        assert y == pytest.approx(x, rel=2e-5), f"step {step}: {x} vs {y}"


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_p_track_under_torchrun_follows_the_one_process_p_sequence(tmp_path, cache, parallel):
    """--p track re-chooses p from the all-reduced gradient (a sharded one read at its full value) and every rank
    takes rank 0's p: the p sequence and the losses are the one-process run's at the same global batch."""
    argv = ["train", *common(cache), "--steps", "10", "--optim", "adampower", "--p", "track", "--p-every", "4"]
    assert main([*argv, "--micro-batch-size", "8", "--out", str(tmp_path / "single")]) == 0
    proc = torchrun(2, *argv, "--out", str(tmp_path / parallel), "--parallel", parallel)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tracks = [[(r["step"], r["p_track"]) for r in metrics(tmp_path / run) if "p_track" in r]
              for run in ("single", parallel)]
    assert [s for s, _ in tracks[0]] == [4, 8] and tracks[0] == tracks[1]
    single, split = losses(tmp_path / "single"), losses(tmp_path / parallel)
    for (step, x, _), (_, y, _) in zip(single, split):
        assert y == pytest.approx(x, rel=2e-5), f"step {step}: {x} vs {y}"
