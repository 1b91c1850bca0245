"""phi_p as a stateless step pre-hook: "transform, then the unchanged base update", written once.

``AdagradPower`` and the ``GradPower`` wrapper run their base optimizer's own
``step()``; each attaches one :class:`PowerTransform` with the public
``Optimizer.register_step_pre_hook``. Nothing unwraps or re-implements torch's
step wrapper, so step hooks fire once per ``step()``, ``torch.compile`` traces
the hook like any other, and torch upgrades keep working. ``AdamPower`` and
``MuonPower`` apply phi_p inside their updates instead (fused into AdamW's
step and Muon's momentum), so they take the p bookkeeping from here but no hook.

Order inside one ``step()`` (torch runs pre-hooks in this order):

1. torch's global pre-hooks (``register_optimizer_step_pre_hook``): raw gradient;
2. this transform: the closure, if any, is evaluated first (so it computes the
   gradient that gets transformed), then ``g <- phi_{group["p"]}(g)`` in place;
3. pre-hooks registered on the optimizer afterwards: they see phi_p(g);
4. the base update, then post-hooks.

phi_p is nonlinear, so accumulation, GradScaler's unscale, the data-parallel
reduction and clipping must all be done before ``step()``; the fused torch
kernels' in-step unscale is therefore turned off (``_step_supports_amp_scaling``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import BadInput
from ..transform import check_p, sign_power_
from . import onepass, onepass_cpu, routes
from .power_controller import PowerController

#: Attribute an optimizer carries while a PowerTransform is attached (never pickled).
ATTACHED = "_gradpower_transform"
#: Attribute of an optimizer whose p is a :class:`~gradpower.optim.PowerController`.
CONTROLLER = "power_controller"


def power_value(p: float | PowerController) -> tuple[float, PowerController | None]:
    """An optimizer's ``p`` argument as (the p in force, its controller or None); a number is validated."""
    if isinstance(p, PowerController):
        return p.p, p
    return check_p(p), None


def observe_power(optimizer: Optimizer) -> None:
    """Let the optimizer's :class:`~gradpower.optim.PowerController`, if it has one, see this step's raw gradients
    (and re-choose p on its update steps); every power optimizer calls it once per ``step()``, before phi_p."""
    controller = optimizer.__dict__.get(CONTROLLER)
    if controller is not None:
        controller.observe_step(optimizer.param_groups)


def power_group_grads_(param_groups: Iterable[dict[str, Any]]) -> None:
    """Apply phi_{group["p"]} in place to every non-None ``.grad`` of each group.

    Where :func:`gradpower.optim.routes.cpp_power_indices` says (contiguous fp32 CPU gradients, the C++ loop
    built) phi_p is the C++ loop's (one pass, the one-pass kernel's power and accuracy contract); the rest
    :func:`gradpower.transform.sign_power_`.
    """
    for group in param_groups:
        p = check_p(group["p"])
        if p == 1.0:
            continue
        grads = [param.grad for param in group["params"] if param.grad is not None]
        fast = routes.cpp_power_indices(grads, p=p)
        if fast:
            onepass_cpu.sign_power_([grads[i] for i in fast], *onepass.split_p(p), module=routes.cpp_ops())
            done = set(fast)
            grads = [g for i, g in enumerate(grads) if i not in done]
        if grads:
            sign_power_(grads, p, foreach=group.get("foreach"))


class _Evaluated:
    """A closure that was already run: returns its loss without recomputing the gradient."""

    def __init__(self, loss: Any) -> None:
        self.loss = loss

    def __call__(self) -> Any:
        return self.loss


def _evaluate_closure(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
    """Run ``step``'s closure now (grad enabled) and hand the base step its result instead."""
    if kwargs.get("closure") is not None:
        with torch.enable_grad():
            loss = kwargs["closure"]()
        return args, {**kwargs, "closure": _Evaluated(loss)}
    if len(args) > 1 and args[1] is not None:
        with torch.enable_grad():
            loss = args[1]()
        return (args[0], _Evaluated(loss), *args[2:]), kwargs
    return None


class PowerTransform:
    """The stateless gradient transformation g -> sign(g) |g|^p, as a step pre-hook.

    ``p`` is read from each param group (``group["p"]``) at every step, so it
    can differ per group and be changed between steps like ``lr``.
    """

    def __call__(self, optimizer: Optimizer, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
        replaced = _evaluate_closure(args, kwargs)
        with torch.no_grad():
            observe_power(optimizer)
            power_group_grads_(optimizer.param_groups)
        return replaced


def refuse_differentiable(name: str, differentiable: bool) -> None:
    """Refuse ``differentiable=True``, which the transform cannot honour, with the reason."""
    if differentiable:
        raise BadInput(
            f"{name} does not support differentiable=True: phi_p rewrites .grad in place outside "
            "autograd, so the update would not be differentiable with respect to the gradient"
        )


def set_group_p(param_groups: Iterable[dict[str, Any]], default: float) -> None:
    """Give every group a validated ``p`` (its own, else ``default``)."""
    for group in param_groups:
        group["p"] = check_p(group.get("p", default))


def attach_power(optimizer: Optimizer, default_p: float | PowerController) -> None:
    """Attach the transform to ``optimizer`` once (again after unpickling or deepcopy).

    Records ``p`` in ``defaults`` and on every group (a controller's p on every group, and the controller as
    :data:`CONTROLLER`), and turns off the fused kernels' in-step GradScaler unscale so GradScaler unscales
    before phi_p. An optimizer whose class sets ``power_in_step`` applies phi_p in its own update and gets no hook.
    """
    value, controller = power_value(default_p)
    optimizer.defaults["p"] = value
    if controller is not None:
        optimizer.__dict__[CONTROLLER] = controller
        controller.configure(optimizer.param_groups)
    set_group_p(optimizer.param_groups, value)
    optimizer._step_supports_amp_scaling = False
    if ATTACHED not in optimizer.__dict__ and not getattr(optimizer, "power_in_step", False):
        optimizer.__dict__[ATTACHED] = optimizer.register_step_pre_hook(PowerTransform())


def is_attached(optimizer: Optimizer) -> bool:
    """Whether ``optimizer`` already applies phi_p (by the hook, or in its own update)."""
    return ATTACHED in optimizer.__dict__ or getattr(optimizer, "power_in_step", False)


class PowerMixin:
    """For subclasses of a torch optimizer: ``p`` per group, with phi_p attached as a pre-hook (unless the
    class sets ``power_in_step``).

    The subclass keeps the base's update rule and state layout; it calls
    :meth:`_setup_power` at the end of ``__init__``. ``__setstate__`` re-attaches
    the transform after ``copy.deepcopy``/pickling, which drop torch's hook tables.
    """

    param_groups: list[dict[str, Any]]
    defaults: dict[str, Any]

    def _setup_power(self, p: float | PowerController) -> None:
        attach_power(self, p)  # type: ignore[arg-type]

    @property
    def power_controller(self) -> PowerController | None:
        """The :class:`~gradpower.optim.PowerController` that chooses p, or None for a fixed p."""
        return self.__dict__.get(CONTROLLER)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        return {**state, CONTROLLER: self.power_controller} if self.power_controller is not None else state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "p" in param_group:
            check_p(param_group["p"])
        super().add_param_group(param_group)  # type: ignore[misc]
        if "p" in self.defaults:
            param_group.setdefault("p", self.defaults["p"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        attach_power(self, self.power_controller or self.defaults.get("p", 1.0))  # type: ignore[arg-type]

