"""``gradpower compare``: its flags (:func:`add_arguments`) and what it does (:func:`run`)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from .options import add_experiment_flags, experiment_spec, jobs_from_args, launcher_from_args, written

#: An interrupted experiment continues when the same command is run again (finished runs reused).
RESUMES = True

def parser_options() -> dict[str, Any]:
    """The subparser's ``help`` and ``description`` (the embedded default's settings from the code)."""
    from ..experiments.defaults import default_text

    return dict(
        help="arms over seeds, paired, with tables, plots and a verdict (the main job)",
        description="Run arms that differ in any TrainConfig fields over seeds (same initial weights and batches "
        "within a seed) and report paired differences with 95% intervals. With no arguments: the embedded default, "
        f"{default_text()}.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arm", action="append", default=[], metavar="'[NAME:] KEY=VALUE ...'",
                        help="an arm (repeatable; the first is the baseline), e.g. --arm 'optim=adamw'")
    parser.add_argument("--tune-lr", metavar="LR1,LR2,...", help="tune lr per arm over this grid first")
    parser.add_argument("--tune-seeds", action="store_true", help="tune on every seed (default: seed 0 only)")
    parser.add_argument("--baseline", metavar="ARM", help="the arm the others are compared with (default: first)")
    parser.add_argument("--plan", action="store_true",
                        help="run a pilot of --pilot-seeds seeds (reusing runs in --out), then print and write "
                        "plan.csv: diff_sd, mde_80, seeds_needed for --effect and the estimated wall time")
    parser.add_argument("--pilot-seeds", type=int, default=3, metavar="N", help="--plan: pilot seeds (default 3)")
    parser.add_argument("--max-seeds", type=int, default=None, metavar="N",
                        help="--seeds auto: at most this many seeds (default 20)")
    parser.add_argument("--effect", type=float, default=None, metavar="NATS",
                        help="the difference to size the design for: the report gives the seeds that would resolve "
                        "it (default 0.01)")
    add_experiment_flags(parser, "runs/compare")


def run(args: argparse.Namespace, command: str) -> int:
    from ..experiments import default_spec, parse_arm, run_compare
    from ..experiments.execute import default_jobs
    from ..experiments.spec import parse_numbers

    spec = experiment_spec(args, default_spec())
    arms = [parse_arm(text) for text in args.arm] or spec.arms
    tune = parse_numbers(args.tune_lr, "--tune-lr") if args.tune_lr else spec.tune_lr
    spec = dataclasses.replace(spec, arms=arms, tune_lr=tune, tune_seeds=args.tune_seeds or spec.tune_seeds,
                               effect=args.effect if args.effect is not None else spec.effect)
    launcher = launcher_from_args(args, spec.launcher)
    started = time.time()
    if args.plan:
        from ..experiments.compare import plan_compare

        text = plan_compare(spec, Path(args.out), jobs_from_args(args, default_jobs), args.baseline,
                            args.pilot_seeds, command, launcher=launcher)
        print(f"\n{text}\n\n{written(Path(args.out), started)}")
        return 0
    table = run_compare(spec, Path(args.out), jobs_from_args(args, default_jobs), args.baseline, command,
                        launcher=launcher)
    print(f"\n{table}\n\n{written(Path(args.out), started)}")
    return 0
