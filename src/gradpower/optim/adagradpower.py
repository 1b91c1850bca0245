"""AdagradPower: Adagrad applied to phi_p(g) (the paper's provable variant)."""

from __future__ import annotations

from typing import Any

import torch

from .power_controller import PowerController
from .power_hook import PowerMixin, power_value, refuse_differentiable


class AdagradPower(PowerMixin, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` on sign-powered gradients; ``p=1`` is Adagrad exactly.

    Sparse gradients are refused (phi_p is defined on dense tensors here), and
    so is ``differentiable=True`` (the transform runs outside autograd).

    Args:
        params: parameters or param groups, as for ``torch.optim.Adagrad``.
        lr: learning rate.
        p: the exponent of phi_p, or a :class:`~gradpower.optim.PowerController`.
        eps: added to the accumulator's root.
        lr_decay: Adagrad's lr decay.
        weight_decay: L2 weight decay (torch's Adagrad form).
        initial_accumulator_value: the accumulator's starting value.
        foreach: torch's foreach Adagrad.
        maximize: maximise the objective instead.
        differentiable: refused (phi_p runs outside autograd).
        fused: torch's fused Adagrad.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        p: float | PowerController = 1.2,
        eps: float = 1e-10,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        power_value(p)  # a bad p is refused before anything is built
        refuse_differentiable("AdagradPower", differentiable)
        super().__init__(
            params,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
        )
        self._setup_power(p)
