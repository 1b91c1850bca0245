"""``gradpower claims``: its flags (:func:`add_arguments`) and what it does (:func:`run`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .options import add_launcher_flags, jobs_from_args, launcher_from_args, written

#: An interrupted experiment continues when the same command is run again (finished runs reused).
RESUMES = True

def parser_options() -> dict[str, Any]:
    """The subparser's ``help`` and ``description``."""
    return dict(help="the papers' claims as planned, seeded comparisons with verdicts",
                            description="Run the claims declared in the package's claims.toml (each a compare in "
                            "OUT/ID, resumable) and write claims.csv and claims.md with a verdict per claim.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", default="quick", choices=("quick", "full", "micro", "paper", "sizes"),
                        help="quick (every claim at 20 tokens per parameter, 3 seeds), full (<= 120 min on 2 cores, "
                        "seeds sized for 0.015 nats; 33 min measured), micro (a few steps per run: the "
                        "plumbing only), paper (the papers' own setting, for GPU clusters: see --plan) or sizes "
                        "(C12, the effect against model size at 20 tokens per parameter, <= 2 h); default quick")
    parser.add_argument("--plan", action="store_true",
                        help="print each claim's runs, tokens, steps and GPU-hours at the budget, and the total; run "
                        "nothing")
    parser.add_argument("--only", metavar="C1,C3", help="run only these claims (comma-separated ids)")
    parser.add_argument("--file", metavar="FILE.toml",
                        help="the claims file (default: the one shipped in the package, "
                        "src/gradpower/experiments/claims.toml in a clone)")
    parser.add_argument("--out", default="runs/claims", help="output folder (default runs/claims)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default as compare)")
    parser.add_argument("--data", default=None, help="data (TrainConfig; default the bundled corpus)")
    parser.add_argument("--cache-dir", default=None, help="tokenizer and token cache folder (TrainConfig)")
    add_launcher_flags(parser)


def run(args: argparse.Namespace, command: str) -> int:
    from ..experiments.claims import CLAIMS_FILE, run_claims
    from ..experiments.execute import default_jobs

    only = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else None
    if args.plan:
        from ..experiments.claims import plan_claims

        print(plan_claims(args.budget, only, Path(args.file) if args.file else CLAIMS_FILE))
        return 0
    shared = {k: v for k, v in (("data", args.data), ("cache_dir", args.cache_dir)) if v is not None}
    launcher = launcher_from_args(args)
    started = time.time()
    table = run_claims(Path(args.out), args.budget, only, Path(args.file) if args.file else CLAIMS_FILE,
                       jobs_from_args(args, default_jobs), shared=shared, launcher=launcher, command=command)
    print(f"\n{table}\n\n{written(Path(args.out), started)}")
    return 0
