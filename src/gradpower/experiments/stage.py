"""Where in training an answer stands: tokens per parameter, and how fast the loss was still falling.

The papers' claims are about the terminal loss of models trained on about 20 tokens per parameter
(Chinchilla). A verdict from a run that stopped far short of that, while its loss was still falling fast,
speaks of early training. Every verdict line, report and claims table says so through :func:`stage_of`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models.proxy import MAX_PASSES
from .runs import Run

#: Training tokens per parameter of the papers' runs (the Chinchilla ratio; all parameters counted).
PAPERS_TOKENS_PER_PARAM = 20


@dataclass(frozen=True)
class Stage:
    """Where a set of runs (one arm's seeds, usually the baseline's) ended."""

    tokens: int
    params: int
    #: Passes over the training split (nan where unknown).
    epochs: float
    #: Seed mean of (the regular evaluation at half the steps) - (at the last step), in nats.
    drop: float
    half: int
    steps: int
    #: Seed mean of (the final evaluation) - (the regular evaluation at the last step), in nats: how far the
    #: regular evaluation the drop is read from ended from the number the verdict uses (nan without a final one).
    gap: float = math.nan

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params if self.params else math.nan

    def text(self) -> str:
        """``at 0.06 tokens per parameter (...; the papers: ~20); the baseline's val loss fell 0.312 nats ...``"""
        line = (f"at {self.tokens_per_param:.3g} tokens per parameter ({self.tokens:,} training tokens, "
                f"{_params_text(self.params)} parameters; the papers' claims: ~{PAPERS_TOKENS_PER_PARAM})")
        if math.isfinite(self.epochs):
            line += f", {self.epochs:.2g} epochs" + (f" (more than {MAX_PASSES} passes over the data)"
                                                      if self.epochs > MAX_PASSES else "")
        if math.isfinite(self.drop):
            line += (f"; the baseline's val loss fell {self.drop:.3f} nats over its last doubling of steps "
                     f"({self.half} -> {self.steps}, regular evaluation"
                     + (f", which ended {self.gap:+.3f} nats from the final one)" if math.isfinite(self.gap) else ")"))
        return line

    def columns(self) -> dict[str, Any]:
        """The CSV columns of a stage."""
        return {"tokens": self.tokens, "tokens_per_param": self.tokens_per_param, "epochs": self.epochs,
                "baseline_drop": self.drop}


def _params_text(params: int) -> str:
    """``2.1M`` or ``262k``: a proxy's count keeps its digits."""
    return f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params / 1e3:.0f}k"


def stage_of(runs: list[Run]) -> Stage | None:
    """The stage of finished runs of one length (None for none)."""
    runs = [run for run in runs if run.finished]
    if not runs:
        return None
    steps = runs[0].steps
    half = steps // 2
    drops = [run.val_near(half) - float(run.val_loss[-1]) for run in runs]
    drop = float(np.mean(drops)) if all(math.isfinite(d) for d in drops) else math.nan
    return Stage(tokens=runs[0].tokens, params=runs[0].params, epochs=runs[0].epochs, drop=drop, half=half, steps=steps,
                 gap=regular_gap(runs))


def regular_gap(runs: list[Run]) -> float:
    """Seed mean of (final evaluation) - (regular evaluation at the last step) over finished runs that have both."""
    gaps = [run.final_val_loss - float(run.val_loss[-1]) for run in runs
            if run.finished and run.val_tokens and run.val_loss.size]
    return float(np.mean(gaps)) if gaps else math.nan
