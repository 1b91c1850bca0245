"""``gradpower train``: its flags (:func:`add_arguments`) and what it does (:func:`run`)."""

from __future__ import annotations

import argparse
from typing import Any

from .options import add_config_flags, config_from_args


def parser_options() -> dict[str, Any]:
    """The subparser's ``help`` and ``description``."""
    return dict(help="train one model", description="Train a preset model. Flags override --config values.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file of TrainConfig keys; flags override it")
    add_config_flags(parser)


def run(args: argparse.Namespace, command: str) -> int:
    from ..train import train

    train(config_from_args(args))
    return 0
