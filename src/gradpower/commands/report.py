"""``gradpower report``: its flags (:func:`add_arguments`) and what it does (:func:`run`)."""

from __future__ import annotations

import argparse
from typing import Any


def parser_options() -> dict[str, Any]:
    """The subparser's ``help`` and ``description``."""
    return dict(help="rebuild the tables and figures of an experiment folder (compare, sweep, claims, noise)",
                description="Rebuild the tables, report and figures of an experiment folder from what it holds (its "
                "runs, or noise's saved measurement), without training: the folder's kind, recorded in its "
                "experiment.json, says how.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a folder written by 'gradpower compare', 'sweep', 'claims' or 'noise'")
    parser.add_argument("--baseline", metavar="ARM", help="compare against this arm instead of the first")


def run(args: argparse.Namespace, command: str) -> int:
    from ..experiments import rebuild_report

    options = {"baseline": args.baseline} if args.baseline is not None else {}
    print(rebuild_report(args.dir, **options))
    return 0
