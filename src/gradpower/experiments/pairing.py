"""What every command that reads an experiment's runs checks before it pairs them.

A paired difference is only the arms' difference when the two runs of a seed differ in nothing else. So before
any table is written (``report``, ``compare``, ``sweep``, ``claims``), each listed run is held to three rules:

- it is the run the experiment planned: its configuration equals the one the experiment's kind (:mod:`.kinds`)
  plans for its arm (or grid point), seed, horizon and tuned lr, so two arms differ only in what the arms declare.
  A run extended or changed after it was planned (``gradpower train --out RUN --resume --steps N``) is refused,
  naming the change;
- every power optimizer's ``|g|^p`` kernel is the same (the kernels round differently);
- every CPU run used the same torch thread count (a CPU's reductions can round differently per count).

A mismatch is one :class:`~gradpower.errors.BadInput` line naming the runs and the difference. Finished at the
planned step follows from the first rule: a run is finished when it reached its configuration's ``steps``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..train.config import TrainConfig, config_differences
from .runs import Run


def check_pairing(out: Path, record: dict[str, Any], loaded: list[tuple[dict[str, Any], Run | None]]) -> None:
    """Refuse (one ``BadInput`` line) a folder whose listed runs would not pair: see the module's rules."""
    from .kinds import spec_of

    runs = [run for _, run in loaded if run is not None]
    if "spec" in record:
        experiment, spec = spec_of(record)
        for entry, run in loaded:
            if run is not None:
                _check_planned(out, experiment, spec, entry, run)
    _check_one_value(out, runs, _kernel, "|g|^p kernels", "they round differently, so their paired differences "
                     "would mix the kernels in; train every run on one kind of machine")
    _check_one_value(out, runs, cpu_threads, "torch thread counts", "a CPU's reductions can round differently per "
                     "count; move the runs of the other count away and run the experiment's command again with one "
                     "--jobs setting")


def _check_planned(out: Path, experiment: Any, spec: Any, entry: dict[str, Any], run: Run) -> None:
    try:
        planned = experiment.planned_config(spec, entry)
    except ValueError:
        planned = None
    label = entry.get("arm") or " ".join(f"{k}={v}" for k, v in entry.get("point", {}).items())
    if planned is None:
        raise BadInput(f"{out}: the run {run.path} is listed as {label} seed {entry['seed']}, which the "
                       f"experiment's spec does not plan; rerun the experiment's command into a new --out")
    changed = config_differences(planned.defining(), TrainConfig.from_dict(run.config).defining())
    if changed:
        raise BadInput(f"{out}: the run {run.path} ({label} seed {entry['seed']}) is not the run the experiment "
                       f"planned ({'; '.join(changed)}), so it would not pair with the others; move it away and "
                       f"run the experiment's command again to retrain it as planned")


def _kernel(run: Run) -> Any:
    """The run's recorded ``|g|^p`` kernel (None for AdamW, or a run written before it was recorded)."""
    return run.resolved.get("power_kernel")


def cpu_threads(run: Run) -> Any:
    """The torch thread count of a CPU run (its ``env.json``); None for a GPU run or where it is not recorded."""
    try:
        env = json.loads((run.path / "env.json").read_text())
    except (OSError, ValueError):
        return None
    return int(env["threads"]) if str(env.get("device", "cpu")).startswith("cpu") and "threads" in env else None


def _check_one_value(out: Path, runs: list[Run], value_of, what: str, why: str) -> None:
    """Refuse runs whose ``value_of`` differs (None passes), naming one run of each value."""
    first: dict[Any, Path] = {}
    for run in runs:
        value = value_of(run)
        if value is not None:
            first.setdefault(value, run.path)
    if len(first) > 1:
        named = "; ".join(f"{value} in {path}" for value, path in first.items())
        raise BadInput(f"{out} pairs runs of different {what} ({named}): {why}")
