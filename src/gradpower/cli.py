"""The ``gradpower`` command, a dispatcher: each subcommand is a module of :mod:`gradpower.commands` (``compare``,
the main job, ``sweep``, ``claims``, ``noise``, ``theory``, ``report`` and ``train``) with its own flags and ``run``.

``gradpower train`` flags are generated from :class:`TrainConfig`'s fields
(``--batch-size`` for ``batch_size``; ``--flag/--no-flag`` for booleans), so
the command line, TOML files and run folders always agree. Precedence:
defaults < ``--config FILE.toml`` < flags. ``compare`` and ``sweep`` take the
common settings as flags, any other field with ``--set KEY=VALUE``, and arms
(``--arm``) or grid axes (``--grid``). Bad input exits with status 2 and a
one-line reason; a missing harness dependency names the extra to install.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import shlex
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .commands import claims, compare, noise, report, sweep, theory, train
from .commands.options import config_from_args, written
from .errors import BadInput
from .extras import EXTRA_MODULES, missing_extra_message

__all__ = ["COMMANDS", "build_parser", "config_from_args", "main"]

#: Each subcommand's module: ``parser_options()``, ``add_arguments(parser)`` and ``run(args, command)``; a module
#: whose ``RESUMES`` is true runs an experiment that the same command line continues after an interruption.
COMMANDS = {"compare": compare, "sweep": sweep, "theory": theory, "noise": noise, "claims": claims, "report": report,
            "train": train}


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line naming the subcommand's help; an unknown flag gets its closest match."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # argparse reports a subcommand's unknown flags from the top-level parser: report them from the
            # subcommand's, so the hint names its help and its flags.
            commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            target = commands.get(getattr(parsed, "command", None), self)
            target.error(_unrecognized(target, extras))
        return parsed


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments: --stepz 5; did you mean --steps?``, with a hint at what the user was doing: a
    TrainConfig field given to ``compare`` or ``sweep`` (``--set FIELD=VALUE``, an arm or a grid axis), or
    ``train --set KEY=VALUE`` (train spells every field as its own flag). Abbreviations are never expanded."""
    from .train.config import config_fields

    message = f"unrecognized arguments: {' '.join(extras)}"
    flags = parser._option_string_actions
    known = [flag for flag in flags if flag.startswith("--")]
    fields = {f.name for f in config_fields()}
    for index, extra in enumerate(extras):
        if not extra.startswith("--"):
            continue
        flag = extra.split("=")[0]
        name = flag[2:].replace("-", "_")
        if flag == "--set" and "--set" not in flags:  # train: --set seq_len=64 means --seq-len 64
            key, _, value = (extras[index + 1] if index + 1 < len(extras) else "KEY=VALUE").partition("=")
            spelled = "--" + key.replace("_", "-")
            if spelled in flags:
                return f"{message}; {parser.prog} takes each field as its own flag: {spelled} {value or 'VALUE'}"
        starts = [k for k in known if k.startswith(flag)]
        abbreviates = starts[0] if len(starts) == 1 else None  # argparse would have expanded it
        if abbreviates and (name not in fields or len(abbreviates) - len(flag) <= 2):  # --seed: --seeds, not seed
            return f"{message}; did you mean {abbreviates}? (flags are never abbreviated)"
        if name in fields and "--set" in flags:  # compare/sweep: a training field is set for every arm or per arm
            per = ("or as a grid axis --grid '" + name + "=V1,V2'" if "--grid" in flags
                   else "or per arm --arm 'NAME: ... " + name + "=VALUE'")
            return (f"{message}; {parser.prog} sets {name} for every run with --set {name}=VALUE, {per}")
        close = [abbreviates] if abbreviates else difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean {close[0]}?"
    return message


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: one subparser per module of :data:`COMMANDS`, each adding its own flags."""
    parser = _OneLineErrors(prog="gradpower", description="GradPower and GPAS for language-model pre-training.",
                            allow_abbrev=False)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, allow_abbrev=False, **module.parser_options()))
    return parser


def _version() -> str:
    """``gradpower 0.1.0 (torch 2.13.0, python 3.11.7)``, without importing torch."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"gradpower {__version__} (torch {torch_version}, python {sys.version.split()[0]})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line errors; exit codes 1 (runs of a compare or sweep failed; also an unexpected error,
    a bug, with its traceback), 2 (bad input: :class:`gradpower.errors.BadInput`), 3 (non-finite loss), 4
    (storage, locks), 5 (another process of a distributed run died), 130 (interrupted).

    A missing harness dependency names the extra that provides it; Ctrl-C at
    any moment (start-up included) ends with a hint instead of a traceback.
    """
    from . import interrupts
    from .invocation import program, record_program
    from .logs import show_library_log

    show_library_log()
    if argv is None:  # started from a shell: hints name the program as it was typed
        record_program(sys.argv[0])
    argv = list(sys.argv[1:] if argv is None else argv)
    command = f"{program()} {shlex.join(argv)}"
    try:
        with interrupts.deferred():
            return _run(argv, command)
    except ModuleNotFoundError as exc:
        module = (exc.name or "").split(".")[0]
        if module not in EXTRA_MODULES["train"]:
            raise
        print(f"gradpower: error: {missing_extra_message('the training harness', module)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gradpower: interrupted before a checkpoint could be written; run the same command again: {command}",
              file=sys.stderr)
        return 130


def _run(argv: list[str], command: str) -> int:
    from . import interrupts

    args = build_parser().parse_args(argv)  # --version and --help end here, before the harness loads
    from .experiments.execute import RunsFailedError
    from .experiments.launcher import JobsSubmitted
    from .fileio import StorageError
    from .invocation import program
    from .train import InterruptedRun, NonFiniteLossError
    from .train.distributed import PeerLostError

    interrupts.raise_if_requested()  # Ctrl-C while the libraries were loading
    # The exit code tells scripts the kind (docs/troubleshooting.md).
    stops = {NonFiniteLossError: ("stopped", 3), StorageError: ("error", 4), PeerLostError: ("stopped", 5)}
    started = time.time()
    try:
        return COMMANDS[args.command].run(args, command)
    except (BadInput, *stops) as exc:  # what the user got wrong; anything else is a bug and keeps its traceback
        word, code = stops.get(type(exc), ("error", 2))
        print(f"gradpower: {word}: {exc}", file=sys.stderr)
        return code
    except RunsFailedError as exc:  # the report of the other runs is written; the command still fails
        if exc.report:
            print(f"\n{exc.report}\n\n{written(Path(args.out), started)}")
        print(f"gradpower: error: {exc}; each run's own message is above (or in its train.log)", file=sys.stderr)
        return 1
    except JobsSubmitted as exc:  # --detach: the jobs run on; the tables come once they are done
        waits = f"{program()} " + shlex.join(a for a in argv if a != "--detach")
        from .experiments.kinds import kinds

        rebuilds = args.command in kinds()  # a registered kind's folder: 'gradpower report' rebuilds its tables
        report = f"'{program()} report {shlex.quote(args.out)}' builds the tables; " if rebuilds else ""
        print(f"gradpower: {exc}\nwhen they are done, {report}this waits for jobs still running, submits only missing "
              f"or failed runs and writes the tables: {waits}")
        return 0
    except InterruptedRun as exc:
        if getattr(COMMANDS[args.command], "RESUMES", False):  # the same command resumes an experiment
            print(f"gradpower: interrupted by {exc.what}; run the same command again to continue (finished runs "
                  f"are reused, interrupted ones resume): {command}", file=sys.stderr)
        else:
            print(f"gradpower: interrupted by {exc}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
