"""Gradient noise inside a training run: ``--noise-every N``, ``--p auto`` and ``--p track``.

Both observe gradients through :mod:`gradpower.diagnostics` and never change
them, so the run's losses are the same with the probe on or off. With several
micro-batches per step a probed step's micro-batch gradients are measured;
with one, moving averages of g and g^2 are kept (at a fixed sample of
coordinates: ``SAMPLE`` per tensor, a few kB). Off (the default) they cost
nothing: no probe object exists.

Under torchrun (DDP or FSDP2) the statistics are the moving averages of the
all-reduced gradient, the same on every rank (a sharded gradient is read at
its full value), and rank 0's p is broadcast, so every rank trains with the
same p; B_simple needs micro-batch gradients and is then not reported.

``--p auto`` trains the first ``p_auto_steps`` steps with p = 1 (the base
optimizer) while measuring, then sets every param group's p to the predicted
p* for the run's batch size (:func:`gradpower.diagnostics.predict.choose_p`),
logs it in ``metrics.jsonl`` (``p_auto`` and the statistics) and in
``config.json`` (``resolved.p``). The measurement's totals and the chosen p
are part of every checkpoint, so a resumed run chooses the same p.

``--p track`` gives the optimizer a :class:`gradpower.optim.PowerController` (its rule and defaults are in
its module's docstring): it averages the gradient the optimizer steps on and re-chooses p every ``p_every``
steps. Each update is logged in that step's ``metrics.jsonl`` line (``p_track``: the p in force from that
step's update on, with ``p_star``, the smoothed estimate and the noise summary) and on the console. The
controller's state is part of every checkpoint, so a resumed run follows the same p sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..diagnostics.gradstats import MicroBatchProbe, MovingAverageProbe
from ..diagnostics.predict import choose_p, json_safe, noise_ratios, predict_p
from .config import TrainConfig
from .distributed import full_value

SAMPLE = 512  # coordinates sampled per tensor (--noise-every, --p auto; --p track samples as many)


class _FanOut:
    """Feed several micro-batch probes from one backward loop; ``after`` runs once the step's gradient is done."""

    def __init__(self, probes: list[MicroBatchProbe], after: list[Any] | None = None) -> None:
        self.probes = probes
        self.after = after or []

    def start_step(self, k: int, micro_batch_size: int) -> None:
        for probe in self.probes:
            probe.start_step(k, micro_batch_size)

    def after_backward(self) -> None:
        for probe in self.probes:
            probe.after_backward()

    def end_step(self) -> None:
        for probe in self.probes:
            probe.end_step()
        for observe in self.after:
            observe()


class NoiseMonitor:
    """Which steps are probed, and what is logged and chosen (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, rt: Any) -> None:
        self.cfg = cfg
        self.model = model
        self.auto = cfg.p_auto
        self.chosen_p: float | None = None
        #: ``--p auto``: the flat range of the choice (the p the prediction cannot tell from p*), recorded with it.
        self.chosen_flat: list[float] | None = None
        self.runtime = rt
        # Under torchrun each rank's micro-batch gradients are its own; the reduced gradient is every rank's.
        self.micro_mode = cfg.accumulation_steps(rt.world_size) >= 2 and not rt.distributed
        self._warmup = self._new_probe() if self.auto else None
        self._ema = self._averages() if cfg.noise_every and not self.micro_mode else None
        self._step_probe: MicroBatchProbe | None = None
        #: ``--p track``: the optimizer's p (None otherwise); give it to the optimizer as its ``p``.
        self.controller = cfg.power.controller(cfg.steps, cfg.eps, sample=SAMPLE, read=full_value,
                                               broadcast=rt.broadcast_float)

    def _averages(self) -> MovingAverageProbe:
        return MovingAverageProbe(self.model.named_parameters(), SAMPLE, read=full_value)

    def _new_probe(self) -> MicroBatchProbe | MovingAverageProbe:
        return MicroBatchProbe(self.model.named_parameters(), SAMPLE) if self.micro_mode else self._averages()

    def _warming(self, step: int) -> bool:
        return self.auto and self.chosen_p is None and step <= self.cfg.p_auto_steps

    def _noise_step(self, step: int) -> bool:
        return bool(self.cfg.noise_every) and step % self.cfg.noise_every == 0

    def reports(self, step: int) -> bool:
        """Whether ``step`` logs noise statistics or a chosen p (so the loop logs that step)."""
        tracking = self.controller is not None and step % self.controller.every == 0
        return self._noise_step(step) or tracking or (self.auto and self.chosen_p is None
                                                      and step == self.cfg.p_auto_steps)

    def probe(self, step: int) -> _FanOut | None:
        """What observes this step's backward pass, if anything: the micro-batch probes, or (one
        micro-batch per step) the moving averages, updated once the step's gradient is complete."""
        if not self.micro_mode:
            averages = [a for a in ((self._warmup if self._warming(step) else None), self._ema) if a is not None]
            return _FanOut([], after=[lambda a=a: a.observe(self.cfg.batch_size) for a in averages]) \
                if averages else None
        probes = []
        if self._warming(step):
            probes.append(self._warmup)
        if self._noise_step(step):
            self._step_probe = MicroBatchProbe(self.model.named_parameters(), SAMPLE)
            probes.append(self._step_probe)
        return _FanOut(probes) if probes else None

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Statistics to log at this step; at the end of the warm-up, choose p and set it."""
        record: dict[str, Any] = {}
        if self._noise_step(step):
            meas = (self._step_probe if self.micro_mode else self._ema).measurement()
            self._step_probe = None
            p = self.chosen_p or self.cfg.p
            ratio, frac_no_mean = noise_ratios(meas, self.cfg.batch_size)
            record["noise"] = {
                "b_simple": meas.noise_scale() if meas.tensor_norms else None,
                "noise_ratio_median": float(np.median(ratio)) if ratio.size else None,
                "frac_no_mean": frac_no_mean,
                "frac_below_eps": float(np.average(np.abs(meas.signal) ** p < self.cfg.eps, weights=meas.weights)),
                "p_star_uniform": predict_p(meas, self.cfg.batch_size, eps=self.cfg.eps, noise="uniform")[0],
                "p_star_gaussian": predict_p(meas, self.cfg.batch_size, eps=self.cfg.eps, noise="gaussian")[0],
            }
            record["noise"] = json_safe(record["noise"])
        if self.auto and self.chosen_p is None and step == self.cfg.p_auto_steps:
            p_star, stats = choose_p(self._warmup.measurement(), self.cfg.batch_size, self.cfg.eps,
                                     self.cfg.p_auto_noise)
            p_star = self.runtime.broadcast_float(p_star)  # the same p on every rank, whatever the rounding
            stats["p_auto"] = p_star
            self.chosen_flat = [stats["p_flat_low"], stats["p_flat_high"]]
            self._set_p(p_star, optimizer)
            self._warmup = None
            record.update(json_safe(stats))
        update = self.controller.take_update() if self.controller is not None else None
        if update is not None:
            record.update({k: v for k, v in update.items() if k != "step"})
        return record

    def _set_p(self, p: float, optimizer: torch.optim.Optimizer) -> None:
        self.chosen_p = p
        for group in optimizer.param_groups:
            group["p"] = p

    def state_dict(self) -> dict[str, Any]:
        return {"chosen_p": self.chosen_p, "chosen_flat": self.chosen_flat,
                "warmup": self._warmup.state_dict() if self._warmup else None,
                "ema": self._ema.state_dict() if self._ema else None,
                "track": self.controller.state_dict() if self.controller else None}

    def load_state_dict(self, state: dict[str, Any] | None, optimizer: torch.optim.Optimizer) -> None:
        if not state:
            return
        if state.get("chosen_p") is not None:
            self._set_p(float(state["chosen_p"]), optimizer)
            self.chosen_flat = state.get("chosen_flat")
            self._warmup = None
        elif state.get("warmup") is not None and self._warmup is not None:
            self._warmup.load_state_dict(state["warmup"])
        if state.get("ema") is not None and self._ema is not None:
            self._ema.load_state_dict(state["ema"])
        if state.get("track") is not None and self.controller is not None:
            self.controller.load_state_dict(state["track"])
            self.controller.configure(optimizer.param_groups)
