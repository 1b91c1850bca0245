"""What several commands share: ``train``'s flags generated from :class:`gradpower.train.TrainConfig`, the
experiment flags of ``compare`` and ``sweep`` (their common settings spelled as ``train`` spells them), the
launcher flags, and the parsing of their values."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..errors import BadInput

#: Settings ``compare`` and ``sweep`` take as flags (any other field: ``--set KEY=VALUE``).
EXPERIMENT_FLAGS = ("steps", "preset", "data", "schedule", "batch_size", "device")
#: ``--seeds auto`` without ``--max-seeds``.
DEFAULT_MAX_SEEDS = 20


def flag_type(kind: Any) -> Any:
    """A field's parser for argparse: a custom parser's own message (e.g. what p accepts) is the error."""
    if isinstance(kind, type):
        return kind

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    from ..train.config import config_fields, field_type

    for field in config_fields():
        flag = "--" + field.name.replace("_", "-")
        kind = field_type(field.name)
        help_text = field.metadata.get("help", "")
        if "default" not in help_text and field.default is not None:  # a default the help does not state
            help_text += f" (default: {field.default})"
        help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=flag_type(kind), default=None, metavar=field.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace) -> Any:
    """The ``TrainConfig`` of ``gradpower train``'s arguments (defaults < --config file < flags).

    With ``--resume`` the saved configuration of the run folder takes the
    place of the defaults, so ``gradpower train --out DIR --resume`` continues
    the run as it was started; the flags given change only what they name.
    """
    from ..train.config import TrainConfig, config_fields, load_toml
    from ..train.run_folder import resume_values

    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    for field in config_fields():
        value = getattr(args, field.name)
        if value is not None:
            values[field.name] = value
    return TrainConfig(**(resume_values(values) if values.get("resume") else values))


def add_experiment_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    from ..experiments.defaults import DEFAULT_SEEDS
    from ..train.config import field_type

    parser.add_argument("--config", metavar="FILE.toml", help="experiment file: shared TrainConfig keys, seeds, "
                        "tune_lr, and [[arm]] tables or a [grid] table; flags override it")
    for name in EXPERIMENT_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=flag_type(field_type(name)), default=None,
                            metavar=name.upper(),
                            help=f"shared {name} of every run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other shared TrainConfig field (repeatable), e.g. --set lr=0.002")
    parser.add_argument("--seeds", type=flag_type(seeds_value), default=None, metavar="N|auto",
                        help=f"seeds per arm / point (default 3; {DEFAULT_SEEDS} for compare's embedded default); "
                        "compare also takes auto: seeds in rounds (3, 6, 12, ...) until the sequential rule stops "
                        "(see docs/experiments.md)")
    parser.add_argument("--first-seed", type=int, default=None,
                        help="seeds are FIRST_SEED, FIRST_SEED+1, ... (default 0); add seeds to a finished experiment "
                        "with a larger --seeds, its earlier runs are reused")
    ladder = parser.add_mutually_exclusive_group()
    ladder.add_argument("--horizons", metavar="S1,S2,...",
                        help="training length as an axis: every arm/point and seed trains to each of these step "
                        "counts, paired by seed within each (one warm-up for all; wsd runs branch their decays from "
                        "one stable run); replaces --steps")
    ladder.add_argument("--horizon-tokens", metavar="T1,T2,...",
                        help="the same in training tokens (steps = tokens / (batch_size x seq_len))")
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel processes (default: one per visible GPU on CUDA; on CPU one per core, "
                             "each with one torch thread: measured faster for small models, docs/performance.md)")
    add_launcher_flags(parser)


def add_launcher_flags(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and the SLURM settings of each run's job (also the ``[launcher]`` table of a file)."""
    group = parser.add_argument_group("cluster (--launcher submitit; needs the 'cluster' extra)")
    group.add_argument("--launcher", choices=("local", "submitit"), default=None,
                       help="local: runs here (--jobs at a time; the default); submitit: one SLURM job per run, "
                       "submitted as a job array")
    group.add_argument("--slurm-partition", default=None, metavar="NAME", help="the partition of the jobs")
    group.add_argument("--gpus-per-run", type=int, default=None, metavar="N",
                       help="GPUs of each run in all (default 1; 0: a CPU job); more than 1 runs torchrun with "
                       "train --parallel fsdp")
    group.add_argument("--nodes-per-run", type=int, default=None, metavar="N",
                       help="nodes of each run (default 1); --gpus-per-run is split evenly over them")
    group.add_argument("--cpus-per-gpu", type=int, default=None, metavar="N", help="CPUs per GPU (default 8)")
    group.add_argument("--timeout-min", type=int, default=None, metavar="MIN",
                       help="time limit of each job (default 240); a job that reaches it checkpoints and is "
                       "requeued")
    group.add_argument("--slurm-array-parallelism", type=int, default=None, metavar="N",
                       help="jobs of the array running at once (default 256)")
    group.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line the job runs first (repeatable), e.g. --slurm-setup 'module load cuda'")
    group.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option (repeatable), e.g. --slurm-extra account=myproj")
    group.add_argument("--detach", action="store_true", default=None,
                       help="submit and return at once, printing the job ids; 'gradpower report OUT' (or the same "
                       "command without --detach) once they are done")
    group.add_argument("--submitit-executor", choices=("slurm", "local"), default=None,
                       help="slurm (default) or local: submitit's LocalExecutor runs the same jobs as processes of "
                       "this machine (for tests, and to try a launch without a cluster)")


def launcher_from_args(args: argparse.Namespace, table: dict[str, Any] | None = None) -> Any:
    """The launcher of an experiment command: its file's ``[launcher]`` table, then the flags."""
    from ..experiments.launcher import LauncherConfig, check_available, launcher_config, parse_extra

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(LauncherConfig) if f.name != "slurm_extra"}
    flags["slurm_extra"] = parse_extra(args.slurm_extra)
    launcher = launcher_config(table, flags)
    check_available(launcher)
    if launcher.launcher == "submitit" and getattr(args, "jobs", None) is not None:
        raise BadInput("--jobs is for --launcher local: with submitit every run is its own SLURM job "
                       "(--slurm-array-parallelism caps how many run at once)")
    return launcher


def seeds_value(text: str) -> int | str:
    """``--seeds``: a number of seeds, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"--seeds takes a number of seeds or auto, got {text!r}") from None


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` flags as typed TrainConfig values."""
    from ..experiments.spec import parse_value

    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise BadInput(f"--set expects KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        if key in values:
            raise BadInput(f"--set {key} is given twice: give each field once")
        values[key] = parse_value(key, raw)
    return values


def experiment_spec(args: argparse.Namespace, default: Any) -> Any:
    """The experiment of compare/sweep flags: --config file or the embedded default, then flags."""
    from ..experiments.spec import load_experiment
    from ..experiments.stats import sequential_looks

    spec = load_experiment(args.config, type(default)) if args.config else default
    base = dict(spec.base)
    for name in EXPERIMENT_FLAGS:
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    base.update(parse_sets(args.set))
    seeds, max_seeds = args.seeds if args.seeds is not None else spec.seeds, getattr(spec, "max_seeds", None)
    if seeds == "auto":
        if not hasattr(spec, "max_seeds"):
            raise BadInput("--seeds auto is for compare; a sweep takes a number of seeds")
        max_seeds = getattr(args, "max_seeds", None) or max_seeds or DEFAULT_MAX_SEEDS
        seeds = sequential_looks(max_seeds)[0]
    elif getattr(args, "max_seeds", None) is not None:
        raise BadInput("--max-seeds goes with --seeds auto")
    horizons, unit = spec.horizons, spec.horizon_unit
    for flag, given, kind in (("--horizons", args.horizons, "steps"), ("--horizon-tokens", args.horizon_tokens,
                                                                      "tokens")):
        if given is not None:
            if args.steps is not None:
                raise BadInput(f"--steps and {flag} both set the runs' length: drop one of them")
            horizons, unit = whole_numbers(given, flag), kind
    sequential = {"max_seeds": max_seeds} if hasattr(spec, "max_seeds") else {}
    return dataclasses.replace(spec, base=base, seeds=seeds, horizons=horizons, horizon_unit=unit, **sequential,
                               first_seed=args.first_seed if args.first_seed is not None else spec.first_seed)


def whole_numbers(text: str, flag: str) -> list[int]:
    """``"80,160,320"`` -> ``[80, 160, 320]``; anything else is refused naming ``flag``."""
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"{flag} expects comma-separated whole numbers, e.g. {flag} 320,640, got {text!r}") from None
    if not values:
        raise BadInput(f"{flag} expects comma-separated whole numbers, e.g. {flag} 320,640, got {text!r}")
    return values


def written(out: Path, since: float) -> str:
    """``written to OUT: runs.csv, ...``: the tables, report and figures this command wrote, and the folders below
    OUT whose ``report.md`` it wrote (``claims``' per-claim comparisons), or that nothing was."""
    order = {".csv": 0, ".md": 1, ".png": 2}

    def new(path: Path) -> bool:
        return path.stat().st_mtime >= since - 1

    files = sorted((f for f in out.glob("*") if f.suffix in order and f.is_file() and new(f)),
                   key=lambda f: (order[f.suffix], f.name))
    reports = sorted(str(f.parent.relative_to(out)) for f in out.glob("*/**/report.md")
                     if "runs" not in f.relative_to(out).parts and new(f))
    names = [f.name for f in files] + ([f"the reports of {', '.join(reports)}"] if reports else [])
    return f"written to {out}: {', '.join(names)}" if names else f"nothing written to {out}"


def jobs_from_args(args: argparse.Namespace, default: Any) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs must be >= 1, got {args.jobs}")
    return args.jobs or default()
