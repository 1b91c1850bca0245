"""``gradpower noise``: its flags (:func:`add_arguments`) and what it does (:func:`run`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .options import parse_sets


def parser_options() -> dict[str, Any]:
    """The subparser's ``help`` and ``description``."""
    return dict(help="measure gradient noise and predict the best p per batch size",
                           description="Measure per-coordinate gradient means and noise on one set of weights and "
                           "predict the best GradPower exponent p* for each batch size (see docs/choosing-p.md).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", default="8,32,128", help="batch sizes to predict p* for (default 8,32,128)")
    parser.add_argument("--steps-before", type=int, default=0, help="train this many steps first (default 0)")
    parser.add_argument("--from", dest="from_run", metavar="RUN_DIR", help="measure this run's newest checkpoint")
    parser.add_argument(
                        "--micro-batch-size",
                        "--micro-batch",
                        type=int,
        default=None,
                        help="sequences per measured micro-batch (default: the smallest batch size)",
    )
    parser.add_argument("--micro-batches", type=int, default=16, help="micro-batches measured (default 16)")
    parser.add_argument("--p", type=float, default=1.2, help="p for the share of |g|^p below eps (default 1.2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="TrainConfig fields of the model/data/training before (e.g. --set lr=0.002)")
    for name in ("preset", "data", "device", "seed"):
        parser.add_argument("--" + name, default=None, help=f"{name} (TrainConfig)")
    parser.add_argument("--out", default="runs/noise", help="output folder (default runs/noise)")


def run(args: argparse.Namespace, command: str) -> int:
    from ..experiments.noise import run_noise
    from ..experiments.spec import parse_numbers, parse_value
    from ..invocation import program
    from ..train.config import TrainConfig

    values: dict[str, Any] = {}
    for name in ("preset", "data", "device", "seed"):
        if getattr(args, name) is not None:
            values[name] = parse_value(name, getattr(args, name))
    values.update(parse_sets(args.set))
    if args.steps_before < 0:
        raise BadInput(f"--steps-before must be >= 0, got {args.steps_before}")
    cfg = TrainConfig(**{"steps": max(1, args.steps_before), **values})
    sizes = [int(v) for v in parse_numbers(args.batch_sizes, "--batch-sizes")]
    text = run_noise(cfg, sizes, Path(args.out), steps_before=args.steps_before, micro_batch_size=args.micro_batch_size,
                     micro_batches=args.micro_batches, from_run=args.from_run, p=args.p, command=command)
    print(f"{text}\n\nwritten to {args.out}: noise.csv, noise_dp.png, noise_map.png, measurement.npz "
          f"('{program()} report {shlex.quote(args.out)}' rebuilds the tables from it)")
    return 0
