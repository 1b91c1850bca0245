"""The ``gradpower`` command: ``compare`` (the main job), ``sweep``, ``theory``, ``report`` and ``train``.

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
import dataclasses
import difflib
import importlib.metadata
import shlex
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .extras import EXTRA_MODULES, missing_extra_message

#: Settings ``compare`` and ``sweep`` take as flags (any other field: ``--set KEY=VALUE``).
EXPERIMENT_FLAGS = ("steps", "preset", "data", "schedule", "batch_size", "device")


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
    """``unrecognized arguments: --stepz 5; did you mean --steps?``"""
    message = f"unrecognized arguments: {' '.join(extras)}"
    known = [flag for flag in parser._option_string_actions if flag.startswith("--")]
    for extra in extras:
        if extra.startswith("-"):
            close = difflib.get_close_matches(extra.split("=")[0], known, n=1, cutoff=0.6)
            if close:
                return f"{message}; did you mean {close[0]}?"
    return message


def _flag_type(kind: Any) -> Any:
    """A field's parser for argparse: a custom parser's own message (e.g. what p accepts) is the error."""
    if isinstance(kind, type):
        return kind

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .train.config import config_fields, field_type

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
            parser.add_argument(flag, type=_flag_type(kind), default=None, metavar=field.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace) -> Any:
    """The ``TrainConfig`` of ``gradpower train``'s arguments (defaults < --config file < flags).

    With ``--resume`` the saved configuration of the run folder takes the
    place of the defaults, so ``gradpower train --out DIR --resume`` continues
    the run as it was started; the flags given change only what they name.
    """
    from .train.config import TrainConfig, config_fields, load_toml
    from .train.run_folder import resume_values

    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    for field in config_fields():
        value = getattr(args, field.name)
        if value is not None:
            values[field.name] = value
    return TrainConfig(**(resume_values(values) if values.get("resume") else values))


def _add_experiment_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    from .experiments.compare import DEFAULT_SEEDS
    from .train.config import field_type

    parser.add_argument("--config", metavar="FILE.toml", help="experiment file: shared TrainConfig keys, seeds, "
                        "tune_lr, and [[arm]] tables or a [grid] table; flags override it")
    for name in EXPERIMENT_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=_flag_type(field_type(name)), default=None,
                            metavar=name.upper(),
                            help=f"shared {name} of every run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other shared TrainConfig field (repeatable), e.g. --set lr=0.002")
    parser.add_argument("--seeds", type=_flag_type(_seeds_value), default=None, metavar="N|auto",
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
                        help="runs in parallel processes (default: 1 on CPU, one per visible GPU on CUDA)")
    _add_launcher_flags(parser)


def _add_launcher_flags(parser: argparse.ArgumentParser) -> None:
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


def _launcher(args: argparse.Namespace, table: dict[str, Any] | None = None) -> Any:
    """The launcher of an experiment command: its file's ``[launcher]`` table, then the flags."""
    from .experiments.launcher import LauncherConfig, check_available, launcher_config, parse_extra

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(LauncherConfig) if f.name != "slurm_extra"}
    flags["slurm_extra"] = parse_extra(args.slurm_extra)
    launcher = launcher_config(table, flags)
    check_available(launcher)
    if launcher.launcher == "submitit" and getattr(args, "jobs", None) is not None:
        raise ValueError("--jobs is for --launcher local: with submitit every run is its own SLURM job "
                         "(--slurm-array-parallelism caps how many run at once)")
    return launcher


def build_parser() -> argparse.ArgumentParser:
    from .experiments.compare import default_text

    parser = _OneLineErrors(prog="gradpower", description="GradPower and GPAS for language-model pre-training.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    compare = sub.add_parser(
        "compare", help="arms over seeds, paired, with tables, plots and a verdict (the main job)",
        description="Run arms that differ in any TrainConfig fields over seeds (same initial weights and batches "
        "within a seed) and report paired differences with 95% intervals. With no arguments: the embedded default, "
        f"{default_text()}.")
    compare.add_argument("--arm", action="append", default=[], metavar="'[NAME:] KEY=VALUE ...'",
                         help="an arm (repeatable; the first is the baseline), e.g. --arm 'optim=adamw'")
    compare.add_argument("--tune-lr", metavar="LR1,LR2,...", help="tune lr per arm over this grid first")
    compare.add_argument("--tune-seeds", action="store_true", help="tune on every seed (default: seed 0 only)")
    compare.add_argument("--baseline", metavar="ARM", help="the arm the others are compared with (default: first)")
    compare.add_argument("--plan", action="store_true",
                         help="run a pilot of --pilot-seeds seeds (reusing runs in --out), then print and write "
                         "plan.csv: diff_sd, mde_80, seeds_needed for --effect and the estimated wall time")
    compare.add_argument("--pilot-seeds", type=int, default=3, metavar="N", help="--plan: pilot seeds (default 3)")
    compare.add_argument("--max-seeds", type=int, default=None, metavar="N",
                         help="--seeds auto: at most this many seeds (default 20)")
    compare.add_argument("--effect", type=float, default=None, metavar="NATS",
                         help="the difference to size the design for: the report gives the seeds that would resolve "
                         "it (default 0.01)")
    _add_experiment_flags(compare, "runs/compare")

    sweep = sub.add_parser("sweep", help="a grid over TrainConfig fields, each point over seeds",
                           description="Train every grid point over seeds and report the best value of each field "
                           "per value of the others (e.g. the best p per batch size).")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="a grid axis (repeatable)")
    sweep.add_argument("--reference", metavar="'KEY=VALUE ...'",
                       help="the grid value(s) every point is paired against, by seed, in summary.csv (default: the "
                       "first value of the first grid field), e.g. --reference p=1.0")
    sweep.add_argument("--tokens", type=int, default=None, metavar="N",
                       help="hold the token budget fixed: each point trains N / (batch_size x seq_len) steps "
                       "(equal compute across batch sizes)")
    _add_experiment_flags(sweep, "runs/sweep")

    theory = sub.add_parser(
        "theory",
        help="the toy model of AdamPower's update, or AdagradPower on a noisy problem",
        description="'gradpower theory' (or 'theory adam'): AdamPower's update on g = mu + sigma*xi, "
        "xi ~ U[-1, 1], simulated and in closed form, with the optimal p per noise level. "
        "'gradpower theory adagrad': AdagradPower vs Adagrad on a noisy non-convex problem.",
    )
    theory.add_argument("which", nargs="?", choices=("adam", "adagrad"), default="adam")
    theory.add_argument("--mu", type=float, default=1e-6, help="mean gradient (default 1e-6)")
    theory.add_argument("--eps", type=float, default=1e-8, help="Adam eps (default 1e-8)")
    theory.add_argument("--beta1", type=float, default=0.9)
    theory.add_argument("--beta2", type=float, default=0.95)
    theory.add_argument("--ratios", default="0.5,2,5,10,50", help="sigma/mu values (default 0.5,2,5,10,50)")
    theory.add_argument("--p-grid", default="0.5:2.5:0.05", metavar="START:STOP:STEP or P1,P2,...",
                        help="exponents (at most 0.05 apart; default 0.5:2.5:0.05); for 'adagrad' a list")
    theory.add_argument("--steps", type=int, default=None, help="simulation steps (adam 20000, adagrad 500)")
    theory.add_argument("--seeds", type=int, default=3, help="adagrad: seeds per p (default 3)")
    theory.add_argument("--out", default="runs/theory", help="output folder (default runs/theory)")

    noise = sub.add_parser("noise", help="measure gradient noise and predict the best p per batch size",
                           description="Measure per-coordinate gradient means and noise on one set of weights and "
                           "predict the best GradPower exponent p* for each batch size (see docs/choosing-p.md).")
    noise.add_argument("--batch-sizes", default="8,32,128", help="batch sizes to predict p* for (default 8,32,128)")
    noise.add_argument("--steps-before", type=int, default=0, help="train this many steps first (default 0)")
    noise.add_argument("--from", dest="from_run", metavar="RUN_DIR", help="measure this run's newest checkpoint")
    noise.add_argument(
        "--micro-batch-size",
        "--micro-batch",
        type=int,
        default=None,
        help="sequences per measured micro-batch (default: the smallest batch size)",
    )
    noise.add_argument("--micro-batches", type=int, default=16, help="micro-batches measured (default 16)")
    noise.add_argument("--p", type=float, default=1.2, help="p for the share of |g|^p below eps (default 1.2)")
    noise.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="TrainConfig fields of the model/data/training before (e.g. --set lr=0.002)")
    for name in ("preset", "data", "device", "seed"):
        noise.add_argument("--" + name, default=None, help=f"{name} (TrainConfig)")
    noise.add_argument("--out", default="runs/noise", help="output folder (default runs/noise)")

    claims = sub.add_parser("claims", help="the papers' claims as planned, seeded comparisons with verdicts",
                            description="Run the claims declared in experiments/claims.toml (each a compare in "
                            "OUT/ID, resumable) and write claims.csv and claims.md with a verdict per claim.")
    claims.add_argument("--budget", default="quick", choices=("quick", "full", "micro"),
                        help="quick (planned <= 30 min on 2 cores), full (<= 90 min, seeds sized for 0.015 nats) "
                        "or micro (a few steps per run: the plumbing only); default quick")
    claims.add_argument("--only", metavar="C1,C3", help="run only these claims (comma-separated ids)")
    claims.add_argument("--file", metavar="FILE.toml", help="the claims file (default experiments/claims.toml)")
    claims.add_argument("--out", default="runs/claims", help="output folder (default runs/claims)")
    claims.add_argument("--jobs", type=int, default=None, help="runs at once (default as compare)")
    claims.add_argument("--data", default=None, help="data (TrainConfig; default the bundled corpus)")
    claims.add_argument("--cache-dir", default=None, help="tokenizer and token cache folder (TrainConfig)")
    _add_launcher_flags(claims)

    report = sub.add_parser("report", help="rebuild the tables and figures of a compare or sweep folder",
                            description="Rebuild runs.csv, results.csv, report.md and the figures from the runs "
                            "of a compare or sweep folder, without training.")
    report.add_argument("dir", help="a folder written by 'gradpower compare' or 'gradpower sweep'")
    report.add_argument("--baseline", metavar="ARM", help="compare against this arm instead of the first")

    train_parser = sub.add_parser(
        "train", help="train one model", description="Train a preset model. Flags override --config values."
    )
    train_parser.add_argument("--config", metavar="FILE.toml", help="TOML file of TrainConfig keys; flags override it")
    _add_config_flags(train_parser)
    return parser


#: ``--seeds auto`` without ``--max-seeds``.
DEFAULT_MAX_SEEDS = 20


def _seeds_value(text: str) -> int | str:
    """``--seeds``: a number of seeds, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--seeds takes a number of seeds or auto, got {text!r}") from None


def _version() -> str:
    """``gradpower 0.1.0 (torch 2.13.0, python 3.11.7)``, without importing torch."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"gradpower {__version__} (torch {torch_version}, python {sys.version.split()[0]})"


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` flags as typed TrainConfig values."""
    from .experiments.spec import parse_value

    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        if key in values:
            raise ValueError(f"--set {key} is given twice: give each field once")
        values[key] = parse_value(key, raw)
    return values


def _experiment_spec(args: argparse.Namespace, default: Any) -> Any:
    """The experiment of compare/sweep flags: --config file or the embedded default, then flags."""
    from .experiments.spec import load_experiment
    from .experiments.stats import sequential_looks

    spec = load_experiment(args.config) if args.config else default
    base = dict(spec.base)
    for name in EXPERIMENT_FLAGS:
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    base.update(_parse_sets(args.set))
    seeds, max_seeds = args.seeds if args.seeds is not None else spec.seeds, spec.max_seeds
    if seeds == "auto":
        if args.command != "compare":
            raise ValueError("--seeds auto is for compare; a sweep takes a number of seeds")
        max_seeds = getattr(args, "max_seeds", None) or max_seeds or DEFAULT_MAX_SEEDS
        seeds = sequential_looks(max_seeds)[0]
    elif getattr(args, "max_seeds", None) is not None:
        raise ValueError("--max-seeds goes with --seeds auto")
    horizons, unit = spec.horizons, spec.horizon_unit
    for flag, given, kind in (("--horizons", args.horizons, "steps"), ("--horizon-tokens", args.horizon_tokens,
                                                                      "tokens")):
        if given is not None:
            if args.steps is not None:
                raise ValueError(f"--steps and {flag} both set the runs' length: drop one of them")
            horizons, unit = _whole_numbers(given, flag), kind
    return dataclasses.replace(spec, base=base, seeds=seeds, max_seeds=max_seeds, horizons=horizons,
                               horizon_unit=unit,
                               first_seed=args.first_seed if args.first_seed is not None else spec.first_seed)


def _whole_numbers(text: str, flag: str) -> list[int]:
    """``"80,160,320"`` -> ``[80, 160, 320]``; anything else is refused naming ``flag``."""
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated whole numbers, e.g. {flag} 320,640, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} expects comma-separated whole numbers, e.g. {flag} 320,640, got {text!r}")
    return values


def _compare(args: argparse.Namespace, command: str) -> int:
    from .experiments import default_spec, parse_arm, run_compare
    from .experiments.execute import default_jobs
    from .experiments.spec import parse_numbers

    spec = _experiment_spec(args, default_spec())
    arms = [parse_arm(text) for text in args.arm] or spec.arms
    tune = parse_numbers(args.tune_lr, "--tune-lr") if args.tune_lr else spec.tune_lr
    spec = dataclasses.replace(spec, arms=arms, tune_lr=tune, tune_seeds=args.tune_seeds or spec.tune_seeds,
                               effect=args.effect if args.effect is not None else spec.effect)
    launcher = _launcher(args, spec.launcher)
    started = time.time()
    if args.plan:
        from .experiments.compare import plan_compare

        text = plan_compare(spec, Path(args.out), _jobs(args, default_jobs), args.baseline, args.pilot_seeds, command,
                            launcher=launcher)
        print(f"\n{text}\n\n{_written(Path(args.out), started)}")
        return 0
    table = run_compare(spec, Path(args.out), _jobs(args, default_jobs), args.baseline, command, launcher=launcher)
    print(f"\n{table}\n\n{_written(Path(args.out), started)}")
    return 0


def _sweep(args: argparse.Namespace, command: str) -> int:
    from .experiments import ExperimentSpec, parse_grid_axis, run_sweep
    from .experiments.execute import default_jobs
    from .experiments.spec import parse_assignments

    spec = _experiment_spec(args, ExperimentSpec())
    axes = [parse_grid_axis(text) for text in args.grid]
    twice = sorted({key for key, _ in axes if [k for k, _ in axes].count(key) > 1})
    if twice:
        raise ValueError(f"--grid {', '.join(twice)} is given twice: give each axis once, with all its values")
    grid = dict(axes) or spec.grid
    reference = parse_assignments(args.reference) if args.reference else spec.reference
    spec = dataclasses.replace(spec, grid=grid, reference=reference,
                               tokens=args.tokens if args.tokens is not None else spec.tokens)
    launcher = _launcher(args, spec.launcher)
    started = time.time()
    table = run_sweep(spec, Path(args.out), _jobs(args, default_jobs), command, launcher=launcher)
    print(f"\n{table}\n\n{_written(Path(args.out), started)}")
    return 0


def _claims(args: argparse.Namespace, command: str) -> int:
    from .experiments.claims import CLAIMS_FILE, run_claims
    from .experiments.execute import default_jobs

    only = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else None
    shared = {k: v for k, v in (("data", args.data), ("cache_dir", args.cache_dir)) if v is not None}
    launcher = _launcher(args)
    started = time.time()
    table = run_claims(Path(args.out), args.budget, only, Path(args.file) if args.file else CLAIMS_FILE,
                       _jobs(args, default_jobs), shared=shared, launcher=launcher, command=command)
    print(f"\n{table}\n\n{_written(Path(args.out), started)}")
    return 0


def _written(out: Path, since: float) -> str:
    """``written to OUT: runs.csv, ...``: the tables, report and figures this command wrote (or that none were)."""
    order = {".csv": 0, ".md": 1, ".png": 2}
    files = sorted((f for f in out.glob("*") if f.suffix in order and f.stat().st_mtime >= since - 1),
                   key=lambda f: (order[f.suffix], f.name))
    return f"written to {out}: {', '.join(f.name for f in files)}" if files else f"nothing written to {out}"


def _jobs(args: argparse.Namespace, default: Any) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    return args.jobs or default()


def _theory(args: argparse.Namespace) -> int:
    from .experiments.spec import parse_numbers
    from .theory import run_adagrad_comparison, run_toy
    from .theory.run import p_grid

    out = Path(args.out)
    if args.which == "adagrad":
        ps = parse_numbers(args.p_grid, "--p-grid") if "," in args.p_grid else [0.8, 1.0, 1.2, 1.5]
        text = run_adagrad_comparison(out, tuple(ps), seeds=args.seeds, steps=args.steps or 500)
        print(f"{text}\n\nwritten to {out}: adagrad.csv, adagrad.png")
        return 0
    if ":" in args.p_grid:
        start, stop, step = (float(v) for v in args.p_grid.split(":"))
        ps = p_grid(start, stop, step)
    else:
        ps = sorted(parse_numbers(args.p_grid, "--p-grid"))
    text = run_toy(out, args.mu, args.eps, args.beta1, args.beta2, tuple(parse_numbers(args.ratios, "--ratios")), ps,
                   steps=args.steps or 20000)
    print(f"AdamPower update in the toy model (mu={args.mu:g}, eps={args.eps:g}):\n{text}\n\n"
          f"written to {out}: theory.csv, optimal_p.csv, theory.png")
    return 0


def _noise(args: argparse.Namespace) -> int:
    from .experiments.noise import run_noise
    from .experiments.spec import parse_numbers, parse_value
    from .train.config import TrainConfig

    values: dict[str, Any] = {}
    for name in ("preset", "data", "device", "seed"):
        if getattr(args, name) is not None:
            values[name] = parse_value(name, getattr(args, name))
    values.update(_parse_sets(args.set))
    if args.steps_before < 0:
        raise ValueError(f"--steps-before must be >= 0, got {args.steps_before}")
    cfg = TrainConfig(**{"steps": max(1, args.steps_before), **values})
    sizes = [int(v) for v in parse_numbers(args.batch_sizes, "--batch-sizes")]
    text = run_noise(cfg, sizes, Path(args.out), steps_before=args.steps_before, micro_batch_size=args.micro_batch_size,
                     micro_batches=args.micro_batches, from_run=args.from_run, p=args.p)
    print(f"{text}\n\nwritten to {args.out}: noise.csv, noise_dp.png, noise_map.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line errors; exit codes 1 (runs of a compare or sweep failed; also an unexpected error,
    with its traceback), 2 (bad input), 3 (non-finite loss), 4 (storage, locks), 5 (another process of a
    distributed run died), 130 (interrupted).

    A missing harness dependency names the extra that provides it; Ctrl-C at
    any moment (start-up included) ends with a hint instead of a traceback.
    """
    from . import interrupts
    from .invocation import program, record_program

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


#: What ends in ``error: ...`` and exit 2: the project's errors of bad input all derive from ``ValueError``
#: (CheckpointError, DataError, RunReadError, RunFolderError, MissingExtraError), and a missing file is
#: ``FileNotFoundError``. Anything else (a TypeError, say) is a bug: it keeps its traceback and exits 1.
BAD_INPUT = (ValueError, FileNotFoundError)


def _report(args: argparse.Namespace) -> int:
    from .experiments import rebuild_report

    print(rebuild_report(args.dir, args.baseline))
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import train

    train(config_from_args(args))
    return 0


def _run(argv: list[str], command: str) -> int:
    from . import interrupts
    from .experiments.execute import RunsFailedError
    from .experiments.launcher import JobsSubmitted
    from .fileio import StorageError
    from .invocation import program
    from .train import InterruptedRun, NonFiniteLossError
    from .train.distributed import PeerLostError

    interrupts.raise_if_requested()  # Ctrl-C while the libraries were loading
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[], int]] = {
        "compare": lambda: _compare(args, command), "sweep": lambda: _sweep(args, command),
        "theory": lambda: _theory(args), "noise": lambda: _noise(args), "report": lambda: _report(args),
        "claims": lambda: _claims(args, command),
        "train": lambda: _train(args),
    }
    # The exit code tells scripts the kind (docs/troubleshooting.md).
    stops = {NonFiniteLossError: ("stopped", 3), StorageError: ("error", 4), PeerLostError: ("stopped", 5)}
    started = time.time()
    try:
        return handlers[args.command]()
    except (*BAD_INPUT, *stops) as exc:
        word, code = stops.get(type(exc), ("error", 2))
        print(f"gradpower: {word}: {exc}", file=sys.stderr)
        return code
    except RunsFailedError as exc:  # the report of the other runs is written; the command still fails
        if exc.report:
            print(f"\n{exc.report}\n\n{_written(Path(args.out), started)}")
        print(f"gradpower: error: {exc}; each run's own message is above (or in its train.log)", file=sys.stderr)
        return 1
    except JobsSubmitted as exc:  # --detach: the jobs run on; the tables come once they are done
        waits = f"{program()} " + shlex.join(a for a in argv if a != "--detach")
        report = "" if args.command == "claims" else f"'{program()} report {shlex.quote(args.out)}' builds the tables; "
        print(f"gradpower: {exc}\nwhen they are done, {report}this waits for jobs still running, submits only missing "
              f"or failed runs and writes the tables: {waits}")
        return 0
    except InterruptedRun as exc:
        if args.command in ("compare", "sweep", "claims"):  # the same command resumes an experiment
            print(f"gradpower: interrupted by {exc.what}; run the same command again to continue (finished runs "
                  f"are reused, interrupted ones resume): {command}", file=sys.stderr)
        else:
            print(f"gradpower: interrupted by {exc}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
