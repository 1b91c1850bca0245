"""The ``gradpower`` command: ``train`` and ``demo``.

``gradpower train`` flags are generated from :class:`TrainConfig`'s fields
(``--batch-size`` for ``batch_size``; ``--flag/--no-flag`` for booleans), so
the command line, TOML files and run folders always agree. Precedence:
defaults < ``--config FILE.toml`` < flags. Bad input exits with status 2 and
a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from typing import Any

#: Top-level modules of the ``gradpower[train]`` extra (the optimizers need none of them).
TRAIN_EXTRA_MODULES = ("tokenizers", "datasets", "pyarrow", "tqdm", "matplotlib", "safetensors")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .train.config import config_fields, field_type

    for field in config_fields():
        flag = "--" + field.name.replace("_", "-")
        kind = field_type(field.name)
        help_text = f"{field.metadata.get('help', '')} (default: {field.default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, metavar=field.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace) -> Any:
    """The ``TrainConfig`` of ``gradpower train``'s arguments (defaults < --config file < flags)."""
    from .train.config import TrainConfig, config_fields, load_toml

    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    for field in config_fields():
        value = getattr(args, field.name)
        if value is not None:
            values[field.name] = value
    return TrainConfig(**values)


def _demo(args: argparse.Namespace) -> int:
    """AdamW vs AdamPower on the bundled corpus, same seed and hyper-parameters."""
    from .train import TrainConfig, train

    results = {}
    for optim in ("adamw", "adampower"):
        cfg = TrainConfig(
            preset="llama-tiny", optim=optim, steps=args.steps, batch_size=16, warmup=args.steps // 10,
            eval_every=max(1, args.steps // 4), log_every=max(1, args.steps // 10), out=f"{args.out}/{optim}",
            seed=args.seed, device=args.device,
        )
        print(f"== {optim} ==", flush=True)
        results[optim] = train(cfg).final_val_loss
    print("\noptimizer   final val loss")
    for name, loss in results.items():
        print(f"{name:11s} {loss:.4f}")
    print(f"AdamPower - AdamW: {results['adampower'] - results['adamw']:+.4f} (one seed: not evidence on its own)")
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="gradpower", description="GradPower and GPAS for language-model pre-training.")
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser(
        "train", help="train a model", description="Train a preset model. Flags override --config values."
    )
    train_parser.add_argument("--config", metavar="FILE.toml", help="TOML file of TrainConfig keys; flags override it")
    _add_config_flags(train_parser)
    demo = sub.add_parser("demo", help="train llama-tiny with AdamW and AdamPower on the bundled corpus")
    demo.add_argument("--steps", type=int, default=300)
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a missing harness dependency is reported with the extra that provides it."""
    try:
        return _run(argv)
    except ModuleNotFoundError as exc:
        module = (exc.name or "").split(".")[0]
        if module not in TRAIN_EXTRA_MODULES:
            raise
        print(f"gradpower: error: the training harness needs the 'train' extra (module {module!r} is not "
              "installed): pip install 'gradpower[train]'", file=sys.stderr)
        return 2


def _run(argv: Sequence[str] | None) -> int:
    from .data.corpus import DataError
    from .train import CheckpointError, NonFiniteLossError, train

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if args.steps < 10:
                parser.error("demo --steps must be at least 10")
            return _demo(args)
        train(config_from_args(args))
        return 0
    except (ValueError, TypeError, CheckpointError, DataError, FileNotFoundError) as exc:
        print(f"gradpower: error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"gradpower: stopped: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("gradpower: interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
