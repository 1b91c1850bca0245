"""``gradpower sweep``: its flags (:func:`add_arguments`) and what it does (:func:`run`)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .options import add_experiment_flags, experiment_spec, jobs_from_args, launcher_from_args, written

#: An interrupted experiment continues when the same command is run again (finished runs reused).
RESUMES = True

def parser_options() -> dict[str, Any]:
    """The subparser's ``help`` and ``description``."""
    return dict(help="a grid over TrainConfig fields, each point over seeds",
                           description="Train every grid point over seeds and report the best value of each field "
                           "per value of the others (e.g. the best p per batch size).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="a grid axis (repeatable)")
    parser.add_argument("--reference", metavar="'KEY=VALUE ...'",
                        help="the grid value(s) every point is paired against, by seed, in summary.csv (default: the "
                        "first value of the first grid field), e.g. --reference p=1.0")
    parser.add_argument("--tokens", type=int, default=None, metavar="N",
                        help="hold the token budget fixed: each point trains N / (batch_size x seq_len) steps "
                        "(equal compute across batch sizes)")
    add_experiment_flags(parser, "runs/sweep")


def run(args: argparse.Namespace, command: str) -> int:
    from ..experiments import SweepSpec, parse_grid_axis, run_sweep
    from ..experiments.execute import default_jobs
    from ..experiments.spec import parse_assignments

    spec = experiment_spec(args, SweepSpec())
    axes = [parse_grid_axis(text) for text in args.grid]
    twice = sorted({key for key, _ in axes if [k for k, _ in axes].count(key) > 1})
    if twice:
        raise BadInput(f"--grid {', '.join(twice)} is given twice: give each axis once, with all its values")
    grid = dict(axes) or spec.grid
    reference = parse_assignments(args.reference) if args.reference else spec.reference
    spec = dataclasses.replace(spec, grid=grid, reference=reference,
                               tokens=args.tokens if args.tokens is not None else spec.tokens)
    launcher = launcher_from_args(args, spec.launcher)
    started = time.time()
    table = run_sweep(spec, Path(args.out), jobs_from_args(args, default_jobs), command, launcher=launcher)
    print(f"\n{table}\n\n{written(Path(args.out), started)}")
    return 0
