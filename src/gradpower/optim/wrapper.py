"""GradPower: put phi_p in front of any ``torch.optim`` optimizer instance."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from ..transform import check_p
from .power_step import power_group_grads_, run_closure


class GradPower(Optimizer):
    """Wrap an optimizer so its ``step()`` sees ``sign(g) * |g| ** p``.

    The wrapper owns no state of its own: ``param_groups``, ``state`` and
    ``defaults`` are the base optimizer's objects, so LR schedulers,
    ``torch.amp.GradScaler`` (which unscales before calling ``step``),
    ``zero_grad`` and ``state_dict``/``load_state_dict`` behave as for the base.
    Each group may carry its own ``p`` (default: the wrapper's ``p``).

    Usage::

        opt = GradPower(torch.optim.SGD(model.parameters(), lr=0.1), p=1.2)
    """

    def __init__(self, optimizer: Optimizer, p: float = 1.2) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "GradPower wraps a torch.optim.Optimizer instance, got "
                f"{type(optimizer).__name__}; build the optimizer first, e.g. "
                "GradPower(torch.optim.AdamW(model.parameters()), p=1.2)"
            )
        if isinstance(optimizer, GradPower):
            raise TypeError("optimizer is already wrapped by GradPower")
        self.p = check_p(p)
        self.optimizer = optimizer
        # The hook tables torch.optim.Optimizer.__init__ would create; the
        # parameter tables are the base's (see the properties below).
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._patch_step_function()
        for group in optimizer.param_groups:
            group["p"] = check_p(group.get("p", self.p))
        # Fused kernels (e.g. AdamW(fused=True)) can unscale inside their step;
        # GradScaler must unscale *before* phi_p, so the wrapper never claims it.
        self._step_supports_amp_scaling = False

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = run_closure(closure)
        power_group_grads_(self.param_groups)
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group["p"] = check_p(param_group.get("p", self.p))
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        for group in self.optimizer.param_groups:
            group["p"] = check_p(group.get("p", self.p))

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "p": self.p}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["optimizer"], state["p"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"GradPower(p={self.p}, {self.optimizer!r})"
