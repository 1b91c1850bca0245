"""Training length as an axis: the settings of a horizon ladder, and wsd runs that share their stable phase.

A ladder trains the same arms to several horizons (``--horizons 320,640,1280``). Its horizons share one
warm-up (``warmup`` if set, else the shortest horizon's default), one evaluation cadence (:func:`eval_every`),
so every horizon is evaluated at its half and at its end, and for a ``--p track`` arm one interval between its
updates of p (:func:`ladder_p_every`).

A wsd run of H steps with warm-up W holds the lr at its peak from W to its decay start
D = max(W, round(stable_frac x H)) (:mod:`gradpower.train.schedules`). A longer run with the same warm-up and
every other defining field equal holds it there at least as long, starts from the same weights and sees the
same batches in the same order: up to step D the two are one run. So :func:`chains` makes the longest run of
such a group its *trunk*, and each shorter run a *branch*: the trunk stops at the branch's decay start and
checkpoints, :func:`seed_branch` copies that checkpoint (and the metrics so far) into the branch's folder, and
the branch resumes from it with its own schedule. The result equals a fresh run of that horizon exactly (the
tests check it to the bit on CPU); the cost is the trunk plus the decays of the shorter runs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..fileio import TMP_MARK, atomic_write_text, folder_lock
from ..train.checkpoint import checkpoint_path, list_checkpoints, step_of
from ..train.config import TrainConfig
from ..train.metrics import read_metrics

#: Fields a branch may differ in from its trunk (besides those that never change a result): its length and
#: how often it evaluates. A resumed run may change exactly these (``RESUMABLE``).
BRANCH_FREE = ("steps", "eval_every")


def ladder_warmup(horizon_steps: Sequence[int], warmup: int | None) -> int:
    """The one warm-up of every horizon: ``warmup`` if set, else the shortest horizon's default."""
    return warmup if warmup is not None else TrainConfig(steps=min(horizon_steps)).warmup_steps


def ladder_p_every(horizon_steps: Sequence[int], p_every: int | None) -> int:
    """The one update interval of a ``--p track`` arm on every horizon: ``p_every`` if set, else the shortest
    horizon's default (10% of its steps). The horizons' stable phases are then one run, p updates included, so a
    wsd branch sees the p sequence its trunk had up to its decay."""
    return p_every if p_every is not None else TrainConfig(steps=min(horizon_steps)).p_every_steps


def eval_every(horizon_steps: Sequence[int]) -> int:
    """One evaluation cadence for a ladder: it divides half of every horizon (so each run is evaluated at its
    half and at its end: how much the loss still fell over its last doubling of steps), and is the largest such
    cadence that gives the longest horizon at least 10 evaluations."""
    common = 0
    for steps in horizon_steps:
        common = math.gcd(common, max(1, steps // 2))
    longest = max(horizon_steps)
    return max(d for d in range(1, common + 1) if common % d == 0 and (longest // d >= 10 or d == 1))


def decay_start(cfg: TrainConfig) -> int:
    """The first step of a wsd run whose lr is below the peak (the schedule's D)."""
    return max(cfg.warmup_steps, round(cfg.stable_frac * cfg.steps))


def _shared_key(cfg: TrainConfig) -> str:
    """What two runs must share to share a stable phase: every defining field but ``BRANCH_FREE``, with the
    warm-up as resolved (its default depends on ``steps``)."""
    fields = {k: v for k, v in cfg.defining().items() if k not in BRANCH_FREE}
    fields["warmup"] = cfg.warmup_steps
    fields["p_every"] = cfg.p_every_steps if cfg.p_track else None  # its default depends on ``steps`` too
    return json.dumps(fields, sort_keys=True, default=str)


def chains(configs: Sequence[TrainConfig]) -> list[tuple[int, list[tuple[int, int]]]]:
    """Group runs into (trunk index, [(branch index, branch step), ...] by ascending step).

    Only wsd runs branch, and only where the branch's decay start is a step both runs train identically (at
    least 1, before the branch's end). Every other run is its own chain with no branches."""
    groups: dict[str, list[int]] = {}
    for index, cfg in enumerate(configs):
        key = _shared_key(cfg) if cfg.schedule == "wsd" else f"alone:{index}"
        groups.setdefault(key, []).append(index)
    out = []
    for members in groups.values():
        by_length = sorted(members, key=lambda i: configs[i].steps)
        trunk = by_length[-1]
        branches, alone = [], []
        for index in by_length[:-1]:
            step = decay_start(configs[index])
            if configs[index].steps == configs[trunk].steps or not 1 <= step < configs[index].steps:
                alone.append(index)
            else:
                branches.append((index, step))
        out.append((trunk, branches))
        out += [(index, []) for index in alone]
    return sorted(out, key=lambda chain: min([chain[0]] + [i for i, _ in chain[1]]))


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the newest checkpoint in ``run_dir`` (None without one)."""
    found = list_checkpoints(run_dir / "checkpoints")
    return step_of(found[-1]) if found else None


def seed_branch(trunk_dir: Path, branch_dir: Path, step: int) -> None:
    """Start ``branch_dir`` from the trunk's checkpoint at ``step``: its metrics up to that step, then the
    checkpoint (copied under a temporary name and renamed, so a kill leaves either none or a whole one). The
    branch's own configuration is written when it resumes."""
    source = checkpoint_path(trunk_dir / "checkpoints", step)
    if not source.exists():
        source = source.with_suffix("")  # an FSDP2 checkpoint is a folder
    records, _ = read_metrics(trunk_dir / "metrics.jsonl")
    target = branch_dir / "checkpoints" / source.name
    branch_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(branch_dir):
        atomic_write_text(branch_dir / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in records if r["step"] <= step))
        target.parent.mkdir(exist_ok=True)
        partial = target.with_name(target.name + TMP_MARK)
        if source.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(source, partial)
        else:
            shutil.copyfile(source, partial)
        os.replace(partial, target)


def shared_seconds(records: list[dict[str, Any]], step: int) -> float:
    """The wall time a branch inherited from its trunk: ``elapsed_s`` at its branch step."""
    times = [r.get("elapsed_s") for r in records if r.get("step") == step and r.get("elapsed_s") is not None]
    return float(times[-1]) if times else 0.0
