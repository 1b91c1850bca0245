"""Shared step logic of every power optimizer: transform the grads, then delegate.

phi_p must see the final mini-batch gradient (after accumulation, GradScaler
unscaling and data-parallel reduction, and after clipping), so it runs inside
``step()``, right before the unchanged base update.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..transform import check_p, sign_power_


def power_group_grads_(param_groups: Iterable[dict[str, Any]], *, foreach: bool | None = None) -> None:
    """Apply phi_{group["p"]} in place to every non-None ``.grad`` of each group."""
    for group in param_groups:
        p = check_p(group["p"])
        if p == 1.0:
            continue
        grads = [param.grad for param in group["params"] if param.grad is not None]
        if grads:
            group_foreach = group.get("foreach") if foreach is None else foreach
            sign_power_(grads, p, foreach=group_foreach)


def run_closure(closure: Callable[[], Any] | None) -> Any:
    """Evaluate the closure (if any) with grad enabled, before grads are transformed."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def call_unhooked_step(bound_step: Callable[..., Any]) -> Any:
    """Call a base optimizer's ``step`` without the hook wrapper torch adds per class.

    ``torch.optim.Optimizer`` wraps each class's ``step`` once to run step
    hooks; when our ``step`` delegates to a base class's already-wrapped
    ``step``, the user's hooks would fire twice. The inner function is reached
    through ``__wrapped__`` (set by ``functools.wraps``).
    """
    func = getattr(bound_step, "__func__", None)
    if func is None:
        return bound_step()
    return inspect.unwrap(func)(bound_step.__self__)


class PowerStepMixin:
    """Mixin for subclasses of a torch optimizer: phi_p on the grads, then ``super().step()``.

    The subclass keeps the base class's state layout and update rule; only the
    gradient it sees changes. Fused torch kernels may unscale GradScaler
    gradients themselves, which would put phi_p before the unscale, so the
    mixin turns that shortcut off: GradScaler then unscales before ``step()``.
    """

    param_groups: list[dict[str, Any]]
    defaults: dict[str, Any]

    def _setup_power(self, p: float) -> None:
        """Record ``p`` as a default and on every group; call at the end of ``__init__``."""
        self.defaults["p"] = p
        for group in self.param_groups:
            group["p"] = check_p(group.get("p", p))
        self._step_supports_amp_scaling = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "p" in param_group:
            check_p(param_group["p"])
        super().add_param_group(param_group)  # type: ignore[misc]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        for group in self.param_groups:
            group.setdefault("p", self.defaults.get("p", 1.0))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = run_closure(closure)
        power_group_grads_(self.param_groups)
        call_unhooked_step(super().step)  # type: ignore[misc]
        return loss
