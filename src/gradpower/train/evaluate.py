"""Evaluation during a run: the regular evaluation on a few fixed held-out batches (the curves), and the final one
on a fixed set of held-out tokens (the number every verdict uses), with the time each took.

:class:`Evaluations` is the trainer's: it says which steps evaluate, runs them, and keeps what the run's done line
reports (the last regular loss, the final evaluation, the seconds spent evaluating, which are not training time).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .distributed import Runtime


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[torch.Tensor], runtime: Runtime) -> float:
    """Mean LM loss over the fixed validation batches (every rank evaluates all of them)."""
    was_training = model.training
    model.eval()
    losses = []
    for batch in batches:
        x = batch.to(runtime.device)
        with runtime.autocast():
            losses.append(model(x, labels=x).loss.float())
    model.train(was_training)
    return torch.stack(losses).mean().item()


@dataclass(frozen=True)
class FinalEval:
    """The final evaluation: mean LM loss over ``tokens`` predicted held-out tokens, and its standard error
    over tokens (sd of the per-token losses / sqrt(tokens))."""

    loss: float
    se: float
    tokens: int


@torch.no_grad()
def evaluate_tokens(model: nn.Module, batches: list[torch.Tensor], runtime: Runtime) -> FinalEval:
    """Per-token losses on ``batches`` (every next-token prediction inside each sequence), pooled."""
    was_training = model.training
    model.eval()
    total, squares, count = 0.0, 0.0, 0
    for batch in batches:
        x = batch.to(runtime.device)
        with runtime.autocast():
            logits = model(x).logits
        losses = nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), x[:, 1:].flatten(),
                                             reduction="none").double()
        total, squares, count = total + losses.sum().item(), squares + (losses**2).sum().item(), count + losses.numel()
    model.train(was_training)
    if count == 0:
        return FinalEval(math.nan, math.nan, 0)
    mean = total / count
    variance = max(0.0, (squares - count * mean * mean) / (count - 1)) if count > 1 else math.nan
    return FinalEval(mean, math.sqrt(variance / count), count)


class Evaluations:
    """Which steps of a run evaluate, and what they measured so far."""

    def __init__(self, model: nn.Module, val: list[torch.Tensor], final_val: list[torch.Tensor], runtime: Runtime,
                 every: int, steps: int) -> None:
        self.model, self.val, self.final_val, self.runtime = model, val, final_val, runtime
        self.every, self.steps = every, steps
        #: The last regular evaluation's loss (the curves' last point).
        self.last: float | None = None
        #: The final evaluation, at the last step.
        self.final: FinalEval | None = None
        self.final_seconds: float | None = None
        #: Seconds spent evaluating in this session (the done line's throughput leaves them out).
        self.seconds = 0.0

    def due(self, step: int) -> bool:
        """Whether ``step`` runs the regular evaluation: every ``every`` steps, and the last."""
        return bool(self.every and step % self.every == 0) or step == self.steps

    def after_step(self, step: int) -> dict[str, Any]:
        """The evaluations ``step`` runs, as its metrics record's fields (none when it runs none)."""
        started = time.perf_counter()
        record: dict[str, Any] = {}
        if self.due(step):
            record["val_loss"] = self.last = evaluate(self.model, self.val, self.runtime)
        if step == self.steps and self.final_val:
            final_start = time.perf_counter()
            self.final = evaluate_tokens(self.model, self.final_val, self.runtime)
            self.final_seconds = time.perf_counter() - final_start
            record.update(final_val_loss=self.final.loss, val_loss_se=self.final.se, val_tokens=self.final.tokens,
                          final_eval_s=self.final_seconds)
        if record:
            record["eval_s"] = time.perf_counter() - started  # this step's evaluations, final one included
            self.seconds += record["eval_s"]
        return record
