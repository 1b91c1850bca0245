"""GPAS (gradient-preserving activation scaling).

GPAS(x) = x - silu(gate) * x.detach(): the forward value is
(1 - silu(gate)) * x, while d out / d x is the identity, so the residual
stream is scaled down without shrinking the gradient that flows back through it.
Which layers carry a gate is the norm scheme's business (:mod:`.norms`).
"""

from __future__ import annotations

import torch
from torch import nn


class GPAS(nn.Module):
    """``x - silu(gate) * x.detach()``; ``gate`` is one learned scalar, initialised to 0.

    Forward value ``(1 - silu(gate)) * x``; gradient w.r.t. ``x`` passes
    through unchanged; ``gate`` receives ``-silu'(gate) * <x, grad_out>``.
    At initialisation silu(0) = 0, so the module starts as the identity.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(()))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.gate.zero_()

    def scale(self) -> torch.Tensor:
        """The forward multiplier ``1 - silu(gate)``."""
        return 1.0 - nn.functional.silu(self.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - nn.functional.silu(self.gate).to(x.dtype) * x.detach()
