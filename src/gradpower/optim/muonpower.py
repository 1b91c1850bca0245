"""MuonPower: Muon for 2-D hidden weights, AdamW for the rest, both on phi_p(g).

One optimizer object and one state dict. Internally the update is delegated
to ``torch.optim.Muon`` (Moonlight scaling, ``adjust_lr_fn="match_rms_adamw"``)
and ``torch.optim.AdamW``, which share this object's param-group dicts and
state table, so ``p=1`` is exactly that pair of torch optimizers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from ..transform import check_p
from .param_groups import named_param_list, uses_muon
from .power_step import power_group_grads_, run_closure

def _split_named_groups(params: Any) -> list[dict[str, Any]]:
    """Normalise ``named_parameters()`` or named param groups to a list of groups."""
    items = list(params)
    if items and isinstance(items[0], dict):
        return [dict(g, params=named_param_list(g["params"])) for g in items]
    return [{"params": named_param_list(items)}]


class MuonPower(Optimizer):
    """Muon + AdamW on sign-powered gradients, split by parameter name and shape.

    Split rule (see :func:`gradpower.optim.param_groups.uses_muon`): a
    parameter goes to Muon when it is 2-D and its name contains neither
    ``embed`` nor ``lm_head``; everything else (embeddings, output head,
    norms, biases, scalars) goes to AdamW with ``betas`` and ``eps``. Both
    halves use ``lr`` and ``weight_decay`` (Muon's Moonlight scaling
    ``0.2 * sqrt(max(rows, cols))`` lets it reuse AdamW's lr).

    ``params`` is ``model.named_parameters()`` or a list of param groups whose
    ``params`` are ``(name, tensor)`` pairs; each group may override ``lr``,
    ``weight_decay`` and ``p``. Every group carries ``use_muon``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        p: float = 1.2,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        *,
        ns_steps: int = 5,
        adjust_lr_fn: str = "match_rms_adamw",
        adam_fused: bool | None = None,
        adam_foreach: bool | None = None,
    ) -> None:
        p = check_p(p)
        muon_groups: list[dict[str, Any]] = []
        adam_groups: list[dict[str, Any]] = []
        for group in _split_named_groups(params):
            options = {k: v for k, v in group.items() if k != "params"}
            if "p" in options:
                check_p(options["p"])
            muon_part = [(n, t) for n, t in group["params"] if uses_muon(n, t)]
            adam_part = [(n, t) for n, t in group["params"] if not uses_muon(n, t)]
            if muon_part:
                muon_groups.append({**options, "params": muon_part})
            if adam_part:
                adam_groups.append({**options, "params": adam_part})
        self._muon = (
            torch.optim.Muon(
                muon_groups,
                lr=lr,
                weight_decay=weight_decay,
                momentum=momentum,
                nesterov=nesterov,
                ns_steps=ns_steps,
                adjust_lr_fn=adjust_lr_fn,
            )
            if muon_groups
            else None
        )
        self._adam = (
            torch.optim.AdamW(
                adam_groups,
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                fused=adam_fused,
                foreach=adam_foreach,
            )
            if adam_groups
            else None
        )
        for inner, flag in ((self._muon, True), (self._adam, False)):
            for group in inner.param_groups if inner is not None else []:
                group["use_muon"] = flag
        groups = (self._muon.param_groups if self._muon else []) + (self._adam.param_groups if self._adam else [])
        defaults = {"lr": lr, "weight_decay": weight_decay, "p": p}
        super().__init__(groups, defaults)
        self._bind_inner()

    def _bind_inner(self) -> None:
        """Point the inner optimizers at this object's groups and state table."""
        if self._muon is not None:
            self._muon.param_groups = [g for g in self.param_groups if g["use_muon"]]
            self._muon.state = self.state
        if self._adam is not None:
            self._adam.param_groups = [g for g in self.param_groups if not g["use_muon"]]
            self._adam.state = self.state
        self._bound = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "p" in param_group:
            check_p(param_group["p"])
        if "use_muon" not in param_group:
            raise ValueError(
                "MuonPower.add_param_group needs 'use_muon' in the group (True for "
                "2-D hidden weights, False for AdamW parameters)"
            )
        inner = self._muon if param_group["use_muon"] else self._adam
        if getattr(self, "_bound", False):
            if inner is None:
                kind = "Muon" if param_group["use_muon"] else "AdamW"
                raise ValueError(f"this MuonPower was built without {kind} parameters; cannot add a {kind} group")
            inner.add_param_group(param_group)  # fills in the inner optimizer's defaults
        super().add_param_group(param_group)
        if getattr(self, "_bound", False):
            self._bind_inner()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._bind_inner()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = run_closure(closure)
        power_group_grads_(self.param_groups)
        if self._muon is not None:
            self._muon.step()
        if self._adam is not None:
            self._adam.step()
        return loss
