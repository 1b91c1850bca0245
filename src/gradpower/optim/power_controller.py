"""A p that follows the measured gradient noise: ``AdamPower(params, p=PowerController(every=100))``.

The papers fix p for a run and show that its best value depends on the gradient noise (low noise: p < 1,
strong noise: p > 1); the noise of a run changes as it trains. A :class:`PowerController` given as ``p``
re-chooses p from the gradients the optimizer steps on. At every ``step()`` of its optimizer it updates moving
averages of g and g^2 at a fixed sample of coordinates (:class:`gradpower.diagnostics.MovingAverageProbe`, decay
0.95: about 40 steps), before phi_p touches them. Every ``every`` steps it applies its rule:

1. ``p*`` = the p that ``--p auto`` predicts from those averages (:func:`gradpower.diagnostics.predict.choose_p`);
2. ``smoothed = (1 - smoothing) * smoothed + smoothing * p*`` (``smoothed`` starts at ``start``);
3. ``target = clip(smoothed, p_min, p_max)``;
4. ``p = p + clip(target - p, -max_change, +max_change)``.

The new p is set on every param group and is in force from that step's update on, until the next update.

Why the defaults are what they are (chosen by reasoning, noise and cost, never by a loss):

- ``start = 1.0``: the base optimizer; before any noise is measured there is no reason to prefer p != 1.
- ``p_min, p_max = 0.5, 2.0``: the range of p the papers study, inside the prediction's grid (0.3-2.5), so a
  bound is not an artefact of the grid's edge; below 0.5 phi_p lifts pure-noise coordinates towards the size of
  real ones, above 2 ``|g|^p`` of typical gradients falls under Adam's eps.
- ``max_change = 0.1``: the spacing of the papers' p grids; one noisy estimate moves p one grid step at most.
- ``smoothing = 0.5``: each estimate counts half, so an outlier's effect halves at each later update, while a
  real shift of p* is reached within a few updates.
- ``every`` (``--p-every``, default 10% of a run's steps): the averages span about 40 steps, so updates further
  apart see independent windows; ten updates per run bound the prediction's cost (``benchmarks/train_step.py``
  times it and the per-step averaging; docs/performance.md has its output).

Distributed runs: ``read`` turns a sharded gradient into its full value (FSDP2), and ``broadcast`` makes every rank
take rank 0's p* (the ``gradpower`` harness passes both). Checkpoints: :meth:`state_dict` holds the averages, the
smoothed estimate, p and the step count; a run resumed from it chooses the same p at the same steps. The optimizer's
own state dict does not hold it, so save it beside the optimizer's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import BadInput
from ..transform import check_p

#: Coordinates sampled per tensor (a few kB of state per tensor).
SAMPLE = 512


#: The noise models the prediction of p knows (:func:`gradpower.diagnostics.predict.choose_p`).
NOISE_MODELS = ("gaussian", "uniform")


def check_noise_model(noise: str, what: str = "noise") -> None:
    """Refuse a noise model the prediction does not know, naming ``what`` was given it."""
    if noise not in NOISE_MODELS:
        raise BadInput(f"{what} must be {' or '.join(NOISE_MODELS)}, got {noise!r}")


class PowerController:
    """The p of a run re-chosen every ``every`` optimizer steps from the measured gradient noise (module docstring).

    Give it as an optimizer's ``p`` (:class:`~gradpower.optim.AdamPower`, :class:`~gradpower.optim.MuonPower`,
    :class:`~gradpower.optim.AdagradPower`, :class:`~gradpower.optim.GradPower`); one controller serves one
    optimizer. :attr:`p` is the power in force; :meth:`take_update` returns the latest update's record once.

    Args:
        every: optimizer steps between updates of p.
        start: the p of the first steps (1: the base optimizer).
        p_min: the smallest p it may choose.
        p_max: the largest p it may choose.
        max_change: the most p changes at one update.
        smoothing: weight of the newest estimate of p* in the smoothed one (1: none).
        eps: the optimizer's eps, which the prediction of p* needs.
        noise: the noise model of the prediction, ``gaussian`` or ``uniform``.
        sample: coordinates of the gradient it follows.
        read: turns a (sharded) gradient into its full value (FSDP2).
        broadcast: makes every rank take rank 0's p*.
    """

    def __init__(self, every: int, start: float = 1.0, p_min: float = 0.5, p_max: float = 2.0,
                 max_change: float = 0.1, smoothing: float = 0.5, *, eps: float = 1e-8, noise: str = "gaussian",
                 sample: int = SAMPLE, read: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 broadcast: Callable[[float], float] | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise BadInput(f"PowerController: every must be a whole number of steps >= 1, got {every!r}")
        check_p(start)
        if not 0 < p_min <= start <= p_max:
            raise BadInput(f"PowerController: need 0 < p_min <= start <= p_max, got p_min={p_min}, start={start}, "
                           f"p_max={p_max}")
        check_p(p_max)
        if not max_change > 0:
            raise BadInput(f"PowerController: max_change must be > 0, got {max_change!r}")
        if not 0 < smoothing <= 1:
            raise BadInput(f"PowerController: smoothing must be in (0, 1], got {smoothing!r}")
        check_noise_model(noise, "PowerController: noise")
        self.every, self.start, self.p_min, self.p_max = every, float(start), float(p_min), float(p_max)
        self.max_change, self.smoothing, self.eps, self.noise = float(max_change), float(smoothing), eps, noise
        self.sample, self.read, self.broadcast = sample, read, broadcast
        self.p = self.start
        self.smoothed = self.start
        self.steps = 0
        self._probe: Any = None
        self._pending: dict[str, Any] | None = None  # averages loaded before the probe exists
        self._update: dict[str, Any] | None = None

    def next_p(self, p_star: float) -> float:
        """Steps 2-4 of the rule for one estimate ``p_star``: updates the smoothed estimate and :attr:`p`, and
        returns the new p (it does not touch any optimizer; :meth:`observe_step` does)."""
        self.smoothed = (1 - self.smoothing) * self.smoothed + self.smoothing * float(p_star)
        target = min(max(self.smoothed, self.p_min), self.p_max)
        self.p = round(self.p + min(max(target - self.p, -self.max_change), self.max_change), 10)  # no float dust
        return self.p

    def bind(self, param_groups: list[dict[str, Any]]) -> None:
        """Sample the coordinates of the groups' parameters (once; the first :meth:`observe_step` does it)."""
        from ..diagnostics.gradstats import MovingAverageProbe  # diagnostics imports optim: not at module level

        if self._probe is not None:
            return
        named = [(f"group{g}.{i}", param) for g, group in enumerate(param_groups)
                 for i, param in enumerate(group["params"])]
        self._probe = MovingAverageProbe(named, self.sample, read=self.read)
        if self._pending is not None:
            self._probe.load_state_dict(self._pending)
            self._pending = None

    def predict(self) -> tuple[float, dict[str, Any]]:
        """Step 1 of the rule: p* and the noise summary from the current averages (``--p auto``'s prediction)."""
        from ..diagnostics.predict import choose_p

        if self._probe is None:
            raise RuntimeError("PowerController.predict: no gradient observed yet")
        return choose_p(self._probe.measurement(), 1, self.eps, self.noise)

    @torch.no_grad()
    def observe_step(self, param_groups: list[dict[str, Any]]) -> None:
        """Called by the optimizer once per ``step()``, on the raw gradients, before its update: averages them and,
        at every ``every``-th step, chooses p and sets it on every group."""
        self.bind(param_groups)
        self.steps += 1
        self._probe.observe(1)  # the averages are of the gradient the optimizer steps on, whatever its batch
        if self.steps % self.every:
            return
        from ..diagnostics.predict import json_safe

        p_star, stats = self.predict()
        if self.broadcast is not None:
            p_star = self.broadcast(p_star)  # the same p on every rank, whatever the rounding
        before = self.p
        self.next_p(p_star)
        for group in param_groups:
            group["p"] = self.p
        self._update = {"step": self.steps, "p_track": self.p, "p_before": before, "p_star": p_star,
                        "p_smoothed": self.smoothed,
                        **json_safe({k: stats[k] for k in ("p_flat_low", "p_flat_high", "noise_ratio_median",
                                                           "frac_no_mean")})}

    def take_update(self) -> dict[str, Any] | None:
        """The record of the update made since the last call (``step``, ``p_track``, ``p_star``, the noise
        summary), or None."""
        update, self._update = self._update, None
        return update

    def configure(self, param_groups: Iterable[dict[str, Any]]) -> None:
        """Give every group the p in force (the optimizer calls it when it is built and after a state-dict load)."""
        for group in param_groups:
            group["p"] = self.p

    def state_dict(self) -> dict[str, Any]:
        averages = self._probe.state_dict() if self._probe is not None else self._pending
        return {"p": self.p, "smoothed": self.smoothed, "steps": self.steps, "averages": averages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.smoothed, self.steps = float(state["p"]), float(state["smoothed"]), int(state["steps"])
        if state.get("averages") is not None:
            if self._probe is not None:
                self._probe.load_state_dict(state["averages"])
            else:
                self._pending = state["averages"]

    def __repr__(self) -> str:
        return (f"PowerController(every={self.every}, start={self.start:g}, p_min={self.p_min:g}, "
                f"p_max={self.p_max:g}, max_change={self.max_change:g}, smoothing={self.smoothing:g}; p={self.p:g})")
