"""AdagradPower against Adagrad on a smooth non-convex problem with controllable gradient noise.

Problem (d coordinates, separable):

    f(x) = (1/d) * sum_i [ x_i^2 / 2 + (1 - cos(3 x_i)) / 3 ],   min f = 0 at x = 0,

smooth with f'' = 1 + 3 cos(3 x) < 0 where cos(3x) < -1/3 (non-convex), and
f' = x + sin(3x) vanishes only at x = 0 for |x| <= 3, with a flat-ish region
near |x| ~ 0.7 where the gradient is small. Stochastic gradient:
grad f(x) + sigma * xi with xi ~ N(0, 1) i.i.d. per coordinate and step, scaled
by d so each coordinate's gradient is O(1). ``sigma`` sets the noise regime:
low (0.1) keeps signs consistent, high (3.0) flips them often. Starting point
x_0 ~ U(-2, 2) per coordinate (the same for every p within a seed).

The runs use this package's own :class:`~gradpower.AdagradPower` (``p = 1``
is ``torch.optim.Adagrad``), so the curves are the optimizer users get.
"""

from __future__ import annotations

import numpy as np
import torch

from ..optim import AdagradPower


def objective(x: torch.Tensor) -> torch.Tensor:
    return (x.pow(2) / 2 + (1 - torch.cos(3 * x)) / 3).mean()


def gradient(x: torch.Tensor) -> torch.Tensor:
    """d * grad f: the per-coordinate gradient x + sin(3x), O(1) whatever d is."""
    return x + torch.sin(3 * x)


def run_adagrad(p: float, sigma: float, seed: int, steps: int = 500, dim: int = 1000, lr: float = 0.1,
                record_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Loss f(x_t) at every ``record_every`` steps of AdagradPower(p) on the noisy problem."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.Parameter(torch.rand(dim, generator=gen, dtype=torch.float64) * 4 - 2)
    noise = torch.Generator().manual_seed(10_000 + seed)  # the same noise sequence for every p
    opt = AdagradPower([x], lr=lr, p=p)
    steps_out, losses = [0], [float(objective(x.detach()))]
    for t in range(1, steps + 1):
        with torch.no_grad():
            x.grad = gradient(x) + sigma * torch.randn(dim, generator=noise, dtype=torch.float64)
        opt.step()
        if t % record_every == 0:
            steps_out.append(t)
            losses.append(float(objective(x.detach())))
    return np.array(steps_out), np.array(losses)
