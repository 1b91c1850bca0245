"""AdamW's state, created as torch creates it, and the unchanged AdamW update of one param group.

:func:`adam_state` is shared by AdamPower and MuonPower's AdamW half, so both
keep ``torch.optim.AdamW``'s state layout (``step``, ``exp_avg``,
``exp_avg_sq``); :func:`adamw_group_update` runs MuonPower's AdamW half
through torch's public functional ``adamw`` (fused / foreach / single-tensor),
without going through another optimizer's ``step()`` (which would fire step
hooks again).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.adamw import adamw


def adam_state(state: dict[str, Any], param: torch.Tensor, on_device: bool, amsgrad: bool = False) -> dict[str, Any]:
    """The param's AdamW state, created as torch creates it (``step`` on the device for fused/capturable)."""
    if not state:
        state["step"] = (torch.zeros((), dtype=torch.float32, device=param.device) if on_device
                         else torch.tensor(0.0, dtype=torch.float32))
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    if amsgrad and "max_exp_avg_sq" not in state:
        state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


def adamw_group_update(states: Any, group: dict[str, Any], params: list[torch.Tensor] | None = None) -> None:
    """torch's AdamW update on ``params`` (default: the group's parameters that have a gradient)."""
    params = [p for p in group["params"] if p.grad is not None] if params is None else params
    if not params:
        return
    on_device = bool(group.get("fused")) or bool(group.get("capturable"))
    amsgrad = bool(group.get("amsgrad"))
    state = [adam_state(states[p], p, on_device, amsgrad) for p in params]
    beta1, beta2 = group["betas"]
    adamw(
        params, [p.grad for p in params], [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
        [s["max_exp_avg_sq"] for s in state] if amsgrad else [], [s["step"] for s in state],
        foreach=group.get("foreach"), fused=group.get("fused"), capturable=bool(group.get("capturable")),
        amsgrad=amsgrad, beta1=beta1, beta2=beta2, lr=group["lr"],
        weight_decay=group["weight_decay"], eps=group["eps"], maximize=bool(group.get("maximize")),
    )
