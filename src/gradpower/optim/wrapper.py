"""GradPower: put phi_p in front of any ``torch.optim`` optimizer instance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from ..transform import check_p
from .power_controller import PowerController
from .power_hook import attach_power, is_attached, power_value, refuse_differentiable, set_group_p


class GradPower(Optimizer):
    """Wrap an optimizer so its ``step()`` sees ``sign(g) * |g| ** p``.

    The transform is attached to the base optimizer as a step pre-hook
    (:mod:`gradpower.optim.power_hook`), and the wrapper forwards to it: its
    ``param_groups``, ``state`` and ``defaults`` are the base's objects, and
    ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` are the
    base's, so LR schedulers, ``torch.amp.GradScaler`` (which unscales before
    calling ``step``), checkpoints and custom ``state_dict`` formats behave as
    for the base. Hooks registered on the wrapper (step, state-dict and
    load-state-dict hooks) are registered on the base and receive the wrapper
    as their optimizer argument; each fires once per call, as do torch's
    global step hooks. Each group may carry its own ``p`` (default: the
    wrapper's ``p``).

    Usage, an instance or a class and its arguments (the same optimizer)::

        opt = GradPower(torch.optim.SGD(model.parameters(), lr=0.1), p=1.2)
        opt = GradPower(torch.optim.SGD, model.parameters(), lr=0.1, p=1.2)

    :func:`power_class` makes the class form a class of its own, for libraries that take an optimizer class and
    its keyword arguments (Hugging Face Trainer's ``optimizer_cls_and_kwargs``).

    Composition with other wrappers: the innermost transform sees the gradient
    first. ``Lookahead(GradPower(AdamW))`` runs phi_p inside every fast step;
    ``GradPower(OrthoGrad(AdamW))`` powers the raw gradient, then OrthoGrad
    projects phi_p(g) (its step runs after phi_p's pre-hook).

    Args:
        optimizer: a ``torch.optim.Optimizer`` instance, or its class (then built here from ``args`` and ``kwargs``).
        *args: the class's positional arguments (its params first).
        p: the exponent of phi_p (every group without its own ``p``), or a :class:`~gradpower.optim.PowerController`.
        **kwargs: the class's keyword arguments.
    """

    def __init__(self, optimizer: Optimizer | type[Optimizer], *args: Any, p: float | PowerController = 1.2,
                 **kwargs: Any) -> None:
        if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
            if isinstance(optimizer, type) and issubclass(optimizer, GradPower):
                raise TypeError("GradPower(GradPower, ...) would apply phi_p twice; pass the base optimizer's class")
            optimizer = optimizer(*args, **kwargs)
        elif args or kwargs:
            raise TypeError(
                "GradPower(optimizer_instance, ...) takes only p (by keyword); pass the class to build it here, e.g. "
                "GradPower(torch.optim.AdamW, model.parameters(), lr=3e-4, p=1.2)"
            )
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "GradPower wraps a torch.optim.Optimizer instance or class, got "
                f"{type(optimizer).__name__}; e.g. GradPower(torch.optim.AdamW(model.parameters()), p=1.2) or "
                "GradPower(torch.optim.AdamW, model.parameters(), p=1.2)"
            )
        if isinstance(optimizer, GradPower) or is_attached(optimizer):
            raise TypeError(
                f"{type(optimizer).__name__} already applies GradPower's transform; wrapping it again would "
                "apply phi_p twice"
            )
        refuse_differentiable(f"GradPower({type(optimizer).__name__})", bool(optimizer.defaults.get("differentiable")))
        power_value(p)  # validates a number
        #: The fixed p, or the :class:`~gradpower.optim.PowerController` that chooses it.
        self.p = p
        # torch's own restore path: sets the attributes and creates the hook tables.
        Optimizer.__setstate__(self, {"optimizer": optimizer, "p": self.p})
        attach_power(optimizer, self.p)

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @property
    def _step_supports_amp_scaling(self) -> bool:
        return False  # GradScaler must unscale before phi_p (see power_hook)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """The base optimizer's ``step``: phi_p (its pre-hook), then its update."""
        return self.optimizer.step(closure)

    # torch wraps each Optimizer subclass's ``step`` to run step hooks unless it
    # is marked as already wrapped. The base's step runs them (global hooks
    # included), so this forwarding step must not run them a second time.
    step.hooked = True  # type: ignore[attr-defined]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group["p"] = check_p(param_group.get("p", power_value(self.p)[0]))
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        set_group_p(self.optimizer.param_groups, power_value(self.p)[0])

    # Hooks registered on the wrapper live on the base (which runs them), seeing the wrapper.
    def register_step_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        return self.optimizer.register_step_pre_hook(lambda _opt, args, kwargs: hook(self, args, kwargs))

    def register_step_post_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        return self.optimizer.register_step_post_hook(lambda _opt, args, kwargs: hook(self, args, kwargs))

    def register_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return self.optimizer.register_state_dict_pre_hook(lambda _opt: hook(self), prepend)

    def register_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return self.optimizer.register_state_dict_post_hook(lambda _opt, sd: hook(self, sd), prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return self.optimizer.register_load_state_dict_pre_hook(lambda _opt, sd: hook(self, sd), prepend)

    def register_load_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return self.optimizer.register_load_state_dict_post_hook(lambda _opt: hook(self), prepend)

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "p": self.p}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Optimizer.__setstate__(self, state)
        attach_power(self.optimizer, self.p)  # the base's hook tables are not pickled

    def __repr__(self) -> str:
        return f"GradPower(p={self.p}, {self.optimizer!r})"


def power_class(base: type[Optimizer]) -> type[GradPower]:
    """``base`` with phi_p in front, as a class built like ``base`` plus ``p``:
    ``power_class(torch.optim.SGD)(model.parameters(), lr=0.1, p=1.2)`` is ``GradPower(torch.optim.SGD, ...)``.

    For libraries that take an optimizer class and its keyword arguments rather than an instance, e.g. Hugging Face
    Trainer: ``Trainer(..., optimizer_cls_and_kwargs=(power_class(torch.optim.AdamW), {"lr": 3e-4, "p": 1.2}))``.

    Args:
        base: a ``torch.optim.Optimizer`` subclass.

    Returns:
        A subclass of :class:`GradPower` whose constructor takes ``base``'s arguments and ``p``.
    """
    if not (isinstance(base, type) and issubclass(base, Optimizer)) or issubclass(base, GradPower):
        raise TypeError(f"power_class takes a torch.optim.Optimizer subclass (not GradPower), got {base!r}")

    def __init__(self: GradPower, params: Any, *args: Any, p: float | PowerController = 1.2, **kwargs: Any) -> None:
        GradPower.__init__(self, base, params, *args, p=p, **kwargs)

    return type(f"{base.__name__}Power", (GradPower,), {
        "__init__": __init__, "__module__": __name__,
        "__doc__": f"``{base.__module__}.{base.__qualname__}`` with phi_p in front (:func:`power_class`)."})
