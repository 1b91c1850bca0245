"""Gradient statistics that observe a run's gradients without changing them.

What the theory needs per coordinate i is the mean gradient mu_i and the noise
sigma_i of the mini-batch gradient the optimizer sees. Two estimators:

- **micro-batches** (a step with K >= 2 micro-batches): between backward passes
  ``.grad`` holds the running sum, so micro-batch k's own gradient is
  K x (grad after k - grad after k-1) (each micro-batch loss is divided by K).
  Their mean is the accumulated gradient; their spread, divided by sqrt(K), is
  the mini-batch noise. Extra memory while probing: one copy of the gradients.
- **moving averages** (one micro-batch per step): exponential moving averages
  of g and g^2 per coordinate; mu = E[g], sigma^2 = E[g^2] - E[g]^2 (noise and
  drift over the averaging window together).

Coordinate statistics are kept for a fixed random sample of each tensor
(``sample`` coordinates, weights scaled back to the tensor's size), so the
extra memory is small; sums for the gradient noise scale use every coordinate.

The simple gradient noise scale (McCandlish et al. 2018, "An Empirical Model
of Large-Batch Training") is B_simple = tr(Sigma) / |G|^2, estimated without
bias from the squared norms at two batch sizes, b (a micro-batch) and B = K b:
|G|^2 = (B |G_B|^2 - b |G_b|^2) / (B - b) and tr(Sigma) = (|G_b|^2 - |G_B|^2) /
(1/b - 1/B), where |G_b|^2 is the mean over micro-batches of their squared
norms and |G_B|^2 the squared norm of their mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import BadInput
from ..optim.param_groups import block_of


@dataclass
class TensorSample:
    """Running sums for one tensor: sampled coordinates, and full-tensor squared norms."""

    name: str
    numel: int
    index: torch.Tensor  # flat indices of the sampled coordinates
    s1: torch.Tensor = field(repr=False)  # sum of micro-batch gradients at the sample (all probed steps)
    within: torch.Tensor = field(repr=False)  # sum over steps of squared deviations from the step's mean
    step_s1: torch.Tensor = field(repr=False)  # this step's sums
    step_s2: torch.Tensor = field(repr=False)
    count: int = 0  # micro-batches seen
    dof: int = 0  # sum over steps of (micro-batches - 1)
    step_count: int = 0
    micro_sq: float = 0.0  # sum over micro-batches of |g_micro|^2 (whole tensor)
    mean_sq: float = 0.0  # sum over observed steps of |mean gradient|^2 (whole tensor)
    steps: int = 0

    @property
    def block(self) -> str:
        return block_of(self.name)


@dataclass
class Measurement:
    """Per sampled coordinate: tensor name, weight (coordinates it stands for), mu, sigma of one micro-batch."""

    names: np.ndarray
    weights: np.ndarray
    mu: np.ndarray
    sigma_micro: np.ndarray
    micro_batch_size: int
    micro_per_step: int
    tensor_norms: dict[str, tuple[float, float, int]]  # name -> (mean |g_b|^2, mean |G_B|^2, steps)
    samples: float = 0.0  # micro-batch gradients behind each mean (effective count for moving averages)

    @property
    def signal(self) -> np.ndarray:
        """The mean gradient with its sampling noise taken out of its square: sign(m) sqrt(max(m^2 - s^2/n, 0)).

        A mean of n noisy samples is never smaller than about s / sqrt(n), which
        would make noise-dominated coordinates look less noisy than they are;
        coordinates with no detectable signal get 0 (they add nothing to D(p)).
        """
        if self.samples <= 1:
            return self.mu
        squared = np.clip(self.mu**2 - self.sigma_micro**2 / self.samples, 0, None)
        return np.sign(self.mu) * np.sqrt(squared)

    def blocks(self) -> np.ndarray:
        return np.array([block_of(n) for n in self.names])

    def sigma_at(self, batch_size: int) -> np.ndarray:
        """The noise of a mini-batch gradient over ``batch_size`` sequences (sigma_b sqrt(b / B))."""
        return self.sigma_micro * math.sqrt(self.micro_batch_size / batch_size)

    def noise_scale(self, names: Iterable[str] | None = None) -> float:
        """B_simple over the given tensors (default all), in sequences; nan when it cannot be estimated."""
        chosen = list(self.tensor_norms) if names is None else list(names)
        gb = sum(self.tensor_norms[n][0] for n in chosen)
        gB = sum(self.tensor_norms[n][1] for n in chosen)
        b, big = self.micro_batch_size, self.micro_batch_size * self.micro_per_step
        if big == b or not chosen:
            return math.nan
        g2 = (big * gB - b * gb) / (big - b)
        trace = (gb - gB) / (1 / b - 1 / big)
        return trace / g2 if g2 > 0 else math.inf


class MicroBatchProbe:
    """Observe per-micro-batch gradients of a model (see the module docstring); never writes ``.grad``."""

    def __init__(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]], sample: int = 2048,
                 seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.params = [(n, p) for n, p in named_parameters if p.requires_grad]
        self.samples: dict[str, TensorSample] = {}
        for name, param in self.params:
            k = min(sample, param.numel())
            index = torch.randperm(param.numel(), generator=gen)[:k].to(param.device)
            zeros = torch.zeros(k, dtype=torch.float64, device=param.device)
            self.samples[name] = TensorSample(name, param.numel(), index, zeros, zeros.clone(), zeros.clone(),
                                              zeros.clone())
        self._previous: dict[str, torch.Tensor] = {}
        self.micro_batch_size = 0
        self.micro_per_step = 0

    @torch.no_grad()
    def start_step(self, micro_per_step: int, micro_batch_size: int) -> None:
        """Call before the first backward of a probed step."""
        self.micro_per_step, self.micro_batch_size = micro_per_step, micro_batch_size
        self._previous = {}

    @torch.no_grad()
    def after_backward(self) -> None:
        """Call after each micro-batch's backward: reads the running ``.grad`` sums."""
        k = self.micro_per_step
        for name, param in self.params:
            if param.grad is None:
                continue
            grad = param.grad.detach()
            before = self._previous.get(name)
            micro = (grad - before if before is not None else grad).double() * k
            self._previous[name] = grad.clone()
            stats = self.samples[name]
            picked = micro.reshape(-1)[stats.index]
            stats.step_s1 += picked
            stats.step_s2 += picked * picked
            stats.step_count += 1
            stats.micro_sq += float(micro.pow(2).sum())

    @torch.no_grad()
    def end_step(self) -> None:
        """Call after the last backward of a probed step: pools the step (its own weights) into the totals.

        The noise is the spread *within* each step (fixed weights), pooled over
        steps; the mean is over every probed micro-batch. So probing several
        training steps does not count the weights' drift as noise.
        """
        for name, param in self.params:
            stats = self.samples[name]
            k = stats.step_count
            if param.grad is not None and k:
                stats.mean_sq += float(param.grad.detach().double().pow(2).sum())
                stats.steps += 1
                stats.s1 += stats.step_s1
                stats.within += (stats.step_s2 - stats.step_s1 * stats.step_s1 / k).clamp_min(0)
                stats.count += k
                stats.dof += k - 1
            stats.step_s1.zero_()
            stats.step_s2.zero_()
            stats.step_count = 0
        self._previous = {}

    _SAVED = ("s1", "within", "count", "dof", "micro_sq", "mean_sq", "steps")

    def state_dict(self) -> dict[str, Any]:
        """The pooled totals (between steps), so a resumed run measures exactly as an uninterrupted one."""
        return {"micro_batch_size": self.micro_batch_size, "micro_per_step": self.micro_per_step,
                "samples": {n: {k: getattr(st, k) for k in self._SAVED} for n, st in self.samples.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.micro_batch_size, self.micro_per_step = state["micro_batch_size"], state["micro_per_step"]
        for name, saved in state["samples"].items():
            for key, value in saved.items():
                current = getattr(self.samples[name], key)
                setattr(self.samples[name], key, value.to(current.device) if torch.is_tensor(value) else value)

    def measurement(self) -> Measurement:
        names, weights, mu, sigma = [], [], [], []
        norms = {}
        for name, stats in self.samples.items():
            n = stats.count
            if stats.dof < 1:
                continue
            m = (stats.s1 / n).cpu().numpy()
            var = (stats.within / stats.dof).cpu().numpy()
            names += [name] * m.size
            weights += [stats.numel / m.size] * m.size
            mu.append(m)
            sigma.append(np.sqrt(var))
            norms[name] = (stats.micro_sq / n, stats.mean_sq / max(1, stats.steps), stats.steps)
        if not mu:
            raise BadInput("no gradient statistics: probe at least two micro-batches")
        counts = [st.count for st in self.samples.values() if st.dof >= 1]
        return Measurement(np.array(names), np.array(weights), np.concatenate(mu), np.concatenate(sigma),
                           self.micro_batch_size, self.micro_per_step, norms, float(min(counts)))


def _as_is(grad: torch.Tensor) -> torch.Tensor:
    """A gradient read as it is (a module-level function, so a probe pickles)."""
    return grad


class MovingAverageProbe:
    """One micro-batch per step: moving averages of g and g^2 at sampled coordinates (decay ``beta``)."""

    def __init__(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]], sample: int = 2048,
                 beta: float = 0.95, seed: int = 0, read: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.inner = MicroBatchProbe(named_parameters, sample, seed)
        self.read = read or _as_is  # e.g. a sharded (FSDP2) gradient to its full value
        self.beta = beta
        self.m1 = {n: torch.zeros_like(s.s1) for n, s in self.inner.samples.items()}
        self.m2 = {n: torch.zeros_like(s.s1) for n, s in self.inner.samples.items()}
        self.updates = 0
        self.batch_size = 0

    @torch.no_grad()
    def observe(self, batch_size: int) -> None:
        """Call after the step's backward (before the optimizer step)."""
        self.batch_size = batch_size
        self.updates += 1
        for name, param in self.inner.params:
            if param.grad is None:
                continue
            g = self.read(param.grad.detach()).reshape(-1)[self.inner.samples[name].index].double()
            self.m1[name].mul_(self.beta).add_(g, alpha=1 - self.beta)
            self.m2[name].mul_(self.beta).add_(g * g, alpha=1 - self.beta)

    def state_dict(self) -> dict[str, Any]:
        return {"m1": self.m1, "m2": self.m2, "updates": self.updates, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m1 = {k: v.to(self.m1[k].device) for k, v in state["m1"].items()}
        self.m2 = {k: v.to(self.m2[k].device) for k, v in state["m2"].items()}
        self.updates, self.batch_size = state["updates"], state["batch_size"]

    def measurement(self) -> Measurement:
        correction = 1 - self.beta ** max(1, self.updates)
        names, weights, mu, sigma = [], [], [], []
        for name, stats in self.inner.samples.items():
            m1 = (self.m1[name] / correction).cpu().numpy()
            m2 = (self.m2[name] / correction).cpu().numpy()
            names += [name] * m1.size
            weights += [stats.numel / m1.size] * m1.size
            mu.append(m1)
            sigma.append(np.sqrt(np.clip(m2 - m1 * m1, 0, None)))
        effective = (1 + self.beta) / (1 - self.beta)  # samples behind an exponential moving average
        return Measurement(np.array(names), np.array(weights), np.concatenate(mu), np.concatenate(sigma),
                           self.batch_size, 1, {}, min(effective, float(self.updates)))
