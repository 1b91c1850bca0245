"""Runs of a comparison on a small CPU: one at a time with every core, or several at once with one core each?

Trains the same comparison (``--preset``, default llama-tiny; AdamW vs AdamPower, 8 x 128, wsd) twice in fresh
folders: ``--jobs 1`` (one process, torch's default thread count) and ``--jobs N`` (N processes, cores / N threads
each), and prints each design's wall time and its ratio to the one-at-a-time baseline measured in the same
invocation. It also says whether the thread count changed any run's numbers (the final val loss of every run,
compared to the bit): if it does, every run of one comparison must use one thread count, and the harness records
which.

    python benchmarks/cpu_jobs.py [--steps 160] [--seeds 2] [--jobs 2] [--preset llama-tiny] [--out runs/bench-jobs]

The token cache is shared and built before the timing, so neither design pays for it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gradpower.experiments.folder import read_experiment
from gradpower.experiments.runs import load_run


def run(out: Path, jobs: int, steps: int, seeds: int, preset: str = "llama-tiny"
        ) -> tuple[float, dict[tuple[str, int], float], set[int]]:
    """Wall time of one compare, its runs' final val losses, and the torch thread counts its runs recorded."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "gradpower", "compare", "--arm", "optim=adamw", "--arm", "optim=adampower p=1.2",
               "--preset", preset, "--schedule", "wsd", "--batch-size", "8", "--set", "seq_len=128",
               "--steps", str(steps), "--seeds", str(seeds), "--jobs", str(jobs), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    record = read_experiment(out)
    losses, threads = {}, set()
    for entry in record["runs"]:
        folder = out / entry["dir"]
        losses[(entry["arm"], int(entry["seed"]))] = load_run(folder).final_val_loss
        env = (folder / "env.json").read_text()
        threads.add(int(env.split('"threads": ')[1].split(",")[0]))
    return wall, losses, threads


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="processes of the parallel design")
    parser.add_argument("--preset", default="llama-tiny", help="the model of every run (e.g. llama-nano, the proxy)")
    parser.add_argument("--out", default="runs/bench-jobs")
    args = parser.parse_args()
    root = Path(args.out)
    cores = os.cpu_count() or 1
    run(root / "warm", 1, 2, 1, args.preset)  # builds the tokenizer, the shards and the C++ kernel outside the timing
    serial, serial_losses, serial_threads = run(root / "jobs1", 1, args.steps, args.seeds, args.preset)
    parallel, parallel_losses, parallel_threads = run(root / f"jobs{args.jobs}", args.jobs, args.steps, args.seeds,
                                                      args.preset)
    runs = len(serial_losses)
    print(f"cores={cores} runs={runs} ({args.preset}: 2 arms x {args.seeds} seeds, {args.steps} steps each)")
    print(f"--jobs 1  ({sorted(serial_threads)} thread(s) per run) [baseline]  {serial:7.1f} s   1.00x")
    print(f"--jobs {args.jobs}  ({sorted(parallel_threads)} thread(s) per run)             {parallel:7.1f} s   "
          f"{parallel / serial:.2f}x the baseline's wall time")
    same = all(serial_losses[k] == parallel_losses[k] for k in serial_losses)
    print("thread count changes the numbers: " + ("no (every final val loss equal to the bit)" if same else
          "yes: " + ", ".join(f"{a} seed {s}: {serial_losses[(a, s)]:.6f} vs {parallel_losses[(a, s)]:.6f}"
                              for a, s in serial_losses)))


if __name__ == "__main__":
    main()
