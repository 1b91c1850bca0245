"""Reading run folders back: the one reader every experiment command goes through.

A run folder (written by :func:`gradpower.train.train`) holds ``config.json``
(``{"train": TrainConfig, "model": model config}``) and ``metrics.jsonl`` (one
record per logged step). :func:`load_run` turns them into a :class:`Run` of
numpy arrays, so tables, statistics and plots never parse files themselves.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..train.metrics import MetricsFileError, read_metrics
from .stats import count_spikes


class RunReadError(BadInput):
    """A run folder that cannot be read (missing or damaged files); the message names the file."""


@dataclass
class Run:
    """One training run: its resolved config and its per-step metrics."""

    path: Path
    config: dict[str, Any]
    model: dict[str, Any]
    resolved: dict[str, Any]  # values the run derived (peak lr, warm-up steps)
    step: np.ndarray = field(repr=False)  # logged steps
    loss: np.ndarray = field(repr=False)  # train loss at those steps
    lr: np.ndarray = field(repr=False)  # lr the scheduler applied at those steps
    tokens_per_s: np.ndarray = field(repr=False)
    elapsed_s: np.ndarray = field(repr=False)  # cumulative wall time (across resumed sessions)
    val_step: np.ndarray = field(repr=False)
    val_loss: np.ndarray = field(repr=False)
    records: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def steps(self) -> int:
        """Optimizer steps done (the last logged step)."""
        return int(self.step[-1]) if self.step.size else 0

    @property
    def planned_steps(self) -> int:
        return int(self.config["steps"])

    @property
    def finished(self) -> bool:
        """All planned steps done and the final validation loss recorded."""
        return self.steps == self.planned_steps and self.val_step.size > 0 and self.val_step[-1] == self.steps

    @property
    def final_val_loss(self) -> float:
        """The loss verdicts use: the final evaluation on ``eval_tokens`` held-out tokens (the last regular
        evaluation for runs without one); nan until the run is finished."""
        if not self.finished:
            return float("nan")
        final = self.records[-1].get("final_val_loss")
        return float(final) if final is not None else float(self.val_loss[-1])

    @property
    def val_tokens(self) -> int | None:
        """Predicted tokens of the final evaluation (None without one)."""
        value = self.records[-1].get("val_tokens") if self.finished else None
        return int(value) if value is not None else None

    @property
    def val_loss_se(self) -> float:
        """Standard error of the final val loss over its tokens (nan without a final evaluation)."""
        value = self.records[-1].get("val_loss_se") if self.finished else None
        return float(value) if value is not None else float("nan")

    @property
    def best_val_loss(self) -> float:
        return float(np.min(self.val_loss)) if self.val_loss.size else float("nan")

    @property
    def tokens(self) -> int:
        return int(self.records[-1]["tokens"]) if self.records else 0

    @property
    def wall_s(self) -> float:
        return float(self.elapsed_s[-1]) if self.elapsed_s.size else 0.0

    @property
    def mean_tokens_per_s(self) -> float:
        """Training throughput: tokens over wall time after the first logged step, evaluation time left out.

        The first step pays one-off compiles (AdamPower's kernel, ``--compile``)
        and warm-up, which would make a short run of a compiling optimizer look
        slower than it trains; the evaluations (``eval_s``, the final one's
        included) are not training. Runs logged before ``eval_s`` existed count
        their evaluations in.
        """
        if self.elapsed_s.size < 2:
            return self.tokens / self.wall_s if self.wall_s > 0 else float("nan")
        evaluating = sum(float(r.get("eval_s") or 0.0) for r in self.records[1:])
        seconds = float(self.elapsed_s[-1] - self.elapsed_s[0]) - evaluating
        tokens = int(self.records[-1]["tokens"]) - int(self.records[0]["tokens"])
        return tokens / seconds if seconds > 0 else float("nan")

    @property
    def final_eval_s(self) -> float:
        """Seconds the final evaluation took (nan for a run without one, or logged before it was timed)."""
        value = self.records[-1].get("final_eval_s") if self.records else None
        return float(value) if value is not None else float("nan")

    @property
    def spikes(self) -> int:
        """Loss spikes in the per-step train loss (see :func:`gradpower.experiments.stats.count_spikes`)."""
        return count_spikes(self.loss)

    @property
    def params(self) -> int:
        """The model's total parameter count (every parameter, embeddings and all experts included: the count
        the papers' ~20 tokens per parameter uses)."""
        return _param_count(json.dumps(self.model, sort_keys=True))

    @property
    def tokens_per_param(self) -> float:
        """Training tokens over :attr:`params`: where in training the run ended."""
        return self.tokens / self.params if self.params else float("nan")

    @property
    def epochs(self) -> float:
        """Passes over the training split: training tokens over the split's tokens (nan for a stream, or a run
        written before the split's size was recorded)."""
        split = self.resolved.get("train_split_tokens")
        return self.tokens / split if split else float("nan")

    def val_near(self, step: float) -> float:
        """The regular evaluation's loss at ``step``, linearly interpolated between evaluations (nan outside)."""
        if not self.val_step.size or step < self.val_step[0] or step > self.val_step[-1]:
            return float("nan")
        return float(np.interp(step, self.val_step, self.val_loss))

    @property
    def p_trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``--p track``: (step, the p in force from that step's update on), from step 1 at ``p_start`` through each
        logged update to the last step; None for a run with a fixed p."""
        if not self.config.get("p_track"):
            return None
        updates = [(int(r["step"]), float(r["p_track"])) for r in self.records if "p_track" in r]
        steps = [1] + [s for s, _ in updates] + [self.steps]
        ps = [float(self.config.get("p_start", 1.0))] + [p for _, p in updates]
        return np.array(steps), np.array(ps + ps[-1:])

    @property
    def peak_lr(self) -> float:
        """The peak lr the run used (its ``lr``, or the preset's default it resolved to)."""
        return float(self.config.get("lr") or self.resolved.get("lr", float("nan")))


@functools.cache
def _param_count(model_json: str) -> int:
    """Parameters of a run's model config (built on the meta device, once per config)."""
    from ..models import config_from_dict, count_params

    return count_params(config_from_dict(json.loads(model_json))).total


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunReadError(f"{path}: missing (is {path.parent} a gradpower run folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunReadError(f"{path}: not valid JSON ({exc})") from None


def load_run(directory: str | Path) -> Run:
    """Read ``config.json`` and ``metrics.jsonl`` of a run folder into a :class:`Run`."""
    path = Path(directory)
    config = _read_json(path / "config.json")
    if not isinstance(config, dict) or "train" not in config:
        raise RunReadError(f"{path / 'config.json'}: not a gradpower run config (no 'train' section)")
    try:
        records, _ = read_metrics(path / "metrics.jsonl")
    except MetricsFileError as exc:
        raise RunReadError(str(exc)) from None

    def column(key: str, rows: list[dict[str, Any]]) -> np.ndarray:
        return np.array([float(r[key]) if r.get(key) is not None else np.nan for r in rows], dtype=float)

    evaluated = [r for r in records if "val_loss" in r]
    return Run(
        path=path, config=config["train"], model=config.get("model", {}), resolved=config.get("resolved", {}),
        records=records,
        step=np.array([int(r["step"]) for r in records], dtype=int), loss=column("loss", records),
        lr=column("lr", records), tokens_per_s=column("tokens_per_s", records),
        elapsed_s=column("elapsed_s", records), val_step=np.array([int(r["step"]) for r in evaluated], dtype=int),
        val_loss=column("val_loss", evaluated),
    )
