"""AdamPower: AdamW applied to phi_p(g), in torch's shape: a class that gathers, one function that updates.

:class:`AdamPower` subclasses ``torch.optim.AdamW`` (its defaults, state
layout ``step``/``exp_avg``/``exp_avg_sq`` and state dicts), validates and
gathers each group's tensors, and calls :func:`adampower`, which asks
:func:`gradpower.optim.routes.adam_routes` (the one place that decides) for each
tensor's route and runs it: one ``_<route>_adampower`` function per route, the
one-pass kernels (the C++ loop, :mod:`.onepass_cpu`; the Inductor kernel,
:mod:`.onepass`) or torch's fused, foreach or single-tensor AdamW after the
separate transform. phi_p is part of the update on every route, so every step
pre-hook sees the raw gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adamw import adamw

from ..transform import check_p, sign_power_
from . import onepass, onepass_cpu, routes
from .power_controller import PowerController
from .power_hook import PowerMixin, observe_power, power_value, refuse_differentiable

#: Group keys that choose how the update runs, not what it computes (kept across load_state_dict).
_PATH_KEYS = ("fused", "foreach", "capturable")


def _onepass_cpp_adampower(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                           exp_avg_sqs: list[Tensor], state_steps: list[Tensor], hyper: dict[str, Any],
                           router: routes.Router) -> int:
    """The ``onepass_cpp`` route: the C++ loop, one call for the group (each tensor's bias corrections from its own
    step count, computed in the op, so ``torch.compile`` traces this route without a host read). Returns how many
    tensors were stepped (all)."""
    onepass_cpu.step(params, grads, exp_avgs, exp_avg_sqs, state_steps, onepass_cpu.hyper(**hyper),
                     module=routes.cpp_ops())
    torch._foreach_add_(state_steps, 1)
    return len(params)


# Under a user's torch.compile(opt.step) this route runs as it is (its kernels are compiled already): tracing it
# would read each step count on the host and guard on the scalars computed from it.
@torch.compiler.disable
def _onepass_inductor_adampower(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                                exp_avg_sqs: list[Tensor], state_steps: list[Tensor], hyper: dict[str, Any],
                                router: routes.Router) -> int:
    """The ``onepass_inductor`` route: each tensor through its size's kernel (compiled by ``router``'s cache), in
    order. Returns how many were stepped: all, unless the compiler failed (recorded by ``router``, with a
    warning), at that tensor."""
    hyper = {**hyper, "lr": float(hyper["lr"])}
    scalars: dict[tuple[float, torch.device], Tensor] = {}
    for i, (param, grad, exp_avg, exp_avg_sq, step_t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs,
                                                                       state_steps)):
        step = float(step_t) + 1
        key = (step, param.device)
        if key not in scalars:  # one small host-to-device copy per group and step (not per tensor)
            scalars[key] = torch.tensor(onepass.step_scalars(step, **hyper), dtype=torch.float32).to(
                param.device, non_blocking=True)
        try:
            router.kernels.step_tensor(param, grad, exp_avg, exp_avg_sq, scalars[key])
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to torch's AdamW
            router.record_inductor_failure(exc)
            return i
        step_t += 1
    return len(params)


def _torch_adampower(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                     max_exp_avg_sqs: list[Tensor], state_steps: list[Tensor], *, route: str, p: float,
                     **adamw_kwargs: Any) -> None:
    """The ``fused``, ``foreach`` and ``single`` routes: phi_p in place on the gradients (torch's foreach ops on
    the ``foreach`` route, per tensor on ``single``, the transform's list default beside ``fused``), then torch's
    functional ``adamw`` on that route."""
    sign_power_(grads, p, foreach={"foreach": True, "single": False}.get(route))
    adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, foreach=route == "foreach",
          fused=route == "fused", **adamw_kwargs)


_ONE_PASS = {"onepass_cpp": _onepass_cpp_adampower, "onepass_inductor": _onepass_inductor_adampower}


def adampower(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor], state_steps: list[Tensor], *, p: float, one_pass: bool, foreach: bool | None,
    fused: bool | None, capturable: bool, amsgrad: bool, beta1: float, beta2: float, lr: float | Tensor,
    weight_decay: float, eps: float, maximize: bool, router: routes.Router | None = None, group: int = 0,
) -> None:
    """AdamW on ``sign(g) * |g| ** p`` for one group's tensors, each on the route
    :func:`gradpower.optim.routes.adam_routes` gives it (``one_pass``: the optimizer is on its one-pass routes;
    ``fused``/``foreach``: the group's, with torch's meaning).

    ``router``: the optimizer's :class:`~gradpower.optim.routes.Router`, which keeps group ``group``'s routes and
    compiled kernels across steps (None: resolved for this call alone). A one-pass route that stops partway (a
    compiler failure) hands the tensors it did not step to the routes resolved for them after the failure."""
    router = router or routes.Router()
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [None] * len(params),
             state_steps)
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, maximize=maximize, p=p)
    chosen = router.routes(group, params, grads, p, one_pass=one_pass, fused=fused, foreach=foreach)
    pending = list(range(len(params)))
    while pending:
        left: list[int] = []
        for route, positions in chosen.items():
            idx = [pending[j] for j in positions]
            part = [[lst[i] for i in idx] for lst in lists]
            if route in _ONE_PASS:
                done = _ONE_PASS[route](*part[:4], part[5], hyper, router)
                left += idx[done:]
            else:
                _torch_adampower(*part[:4], part[4] if amsgrad else [], part[5], route=route, p=p,
                                 capturable=capturable, amsgrad=amsgrad, beta1=beta1, beta2=beta2, lr=lr,
                                 weight_decay=weight_decay, eps=eps, maximize=maximize)
        pending = left
        if pending:  # after a compile failure: the tensors left, on the routes resolved for them now
            chosen = routes.adam_routes([params[i] for i in pending], [grads[i] for i in pending], p,
                                        one_pass=one_pass, fused=fused, foreach=foreach,
                                        inductor=not router.inductor_failed)


def adam_state(state: dict[str, Any], param: Tensor, on_device: bool, amsgrad: bool = False) -> dict[str, Any]:
    """The param's AdamW state, created as torch creates it (``step`` on the device for fused/capturable), so
    AdamPower and MuonPower's AdamW half keep ``torch.optim.AdamW``'s layout and load its state dicts."""
    if not state:
        state["step"] = (torch.zeros((), dtype=torch.float32, device=param.device) if on_device
                         else torch.tensor(0.0, dtype=torch.float32))
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    if amsgrad and "max_exp_avg_sq" not in state:
        state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


def adampower_group(state: dict[Tensor, Any], group: dict[str, Any], *, one_pass: bool, router: routes.Router,
                    index: int) -> None:
    """:func:`adampower` on one param group's tensors that have a gradient, with AdamW's state created where it is
    missing (``state``: the optimizer's; ``router`` and ``index``: its router and the group's position). A group
    without the AdamW-only keys (``amsgrad``, ``capturable``, ``maximize``: MuonPower's AdamW half) takes them
    as off."""
    params = [prm for prm in group["params"] if prm.grad is not None]
    if not params:
        return
    amsgrad, capturable = bool(group.get("amsgrad")), bool(group.get("capturable"))
    states = [adam_state(state[prm], prm, bool(group["fused"]) or capturable, amsgrad) for prm in params]
    beta1, beta2 = group["betas"]
    adampower(
        params, [prm.grad for prm in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
        [s.get("max_exp_avg_sq") for s in states], [s["step"] for s in states], p=check_p(group["p"]),
        one_pass=one_pass, foreach=group["foreach"], fused=group["fused"], capturable=capturable, amsgrad=amsgrad,
        beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
        maximize=bool(group.get("maximize")), router=router, group=index,
    )


def _materialize(params: Any) -> list[Any]:
    """Turn torch's ``params`` forms into lists so they can be read twice.

    Generators (``model.parameters()``), also inside param-group dicts, would
    be exhausted by the fused-path check before torch saw them.
    """
    out = []
    for item in params:
        if isinstance(item, dict) and not isinstance(item["params"], torch.Tensor):
            item = {**item, "params": list(item["params"])}
        out.append(item)
    return out


def _tensors_of(params: list[Any]) -> list[torch.Tensor]:
    """Every tensor in materialized ``params`` (plain, named tuples, or groups)."""
    out: list[torch.Tensor] = []
    for item in params:
        group_params = item["params"] if isinstance(item, dict) else [item]
        if isinstance(group_params, torch.Tensor):
            group_params = [group_params]
        out.extend(p[1] if isinstance(p, tuple) else p for p in group_params)
    return out


class AdamPower(PowerMixin, torch.optim.AdamW):
    """AdamW on sign-powered gradients ``sign(g) * |g| ** p``.

    Defaults follow the GradPower paper's AdamW baseline: betas (0.9, 0.95),
    weight decay 0.1, eps 1e-8, p 1.2. ``p`` may differ per param group
    (``group["p"]``). With ``p=1`` a route that calls a torch kernel equals torch's AdamW on the same route
    to the bit; the one-pass kernel rounds its own way, within about 1e-7 (docs/optimizers.md, "What p=1 is
    identical to"). Two defaults differ from
    ``torch.optim.AdamW`` (betas[1] 0.999, weight decay 0.01): pass them
    explicitly to reproduce an existing AdamW setup.

    Routes (the state layout is AdamW's on every one), chosen by
    :mod:`gradpower.optim.routes` (its docstring states the rule):

    - one-pass (default where possible: dense fp32 parameters on CPU or
      CUDA, no ``fused``/``foreach``/``capturable``/``amsgrad`` asked for;
      :attr:`one_pass` says whether this optimizer is on it):
      phi_p fused into the AdamW update, the C++ loop on CPU or a compiled
      kernel per tensor size, for tensors of 32,768 elements or more
      in groups with p <= 8, the rest through torch's fused (CPU) or foreach
      AdamW after phi_p; ``one_pass=False`` turns it off, ``one_pass=True``
      insists on it. A compiler failure (warned once) sends the tensors to
      torch's AdamW for the rest of the process;
    - otherwise the separate pass: phi_p, then torch's functional AdamW with
      ``fused`` (default when every parameter allows it), ``foreach`` or the
      single-tensor loop.

    Hooks, on every route: torch's global and this optimizer's step pre-hooks
    see the raw gradient (phi_p is part of the update), then the update runs,
    then the post-hooks. After ``step()`` the gradients are scratch: the
    separate pass rewrites them with phi_p(g) in place (no second copy of the
    gradients), the one-pass kernel leaves them. ``differentiable=True`` is
    refused (the transform is outside autograd). Loading a state dict (a plain
    AdamW one too) keeps this optimizer's route, so resuming from an AdamW
    checkpoint does not silently fall back to a slower path.

    The first step on the one-pass route compiles the kernel once per
    distinct tensor size (a model has a handful): about 5-10 s per size on a
    CPU, so up to a minute before the first update of a small model; later
    steps, and later runs through TorchInductor's on-disk cache, pay little.
    Each compile is logged at INFO level on the ``gradpower.optim.onepass``
    logger, with its time; :meth:`kernels_to_compile` says how many the next
    step compiles.

    Args:
        params: parameters or param groups, as for ``torch.optim.AdamW`` (a group may set its own ``p``).
        lr: learning rate (a float, or a tensor for a compiled step).
        betas: the moments' decay rates (the paper's 0.9, 0.95).
        eps: added to the second moment's root.
        weight_decay: decoupled weight decay (the paper's 0.1).
        p: the exponent of phi_p, or a :class:`~gradpower.optim.PowerController` that re-chooses it during training.
        amsgrad: AdamW's AMSGrad variant (takes the separate pass).
        maximize: maximise the objective instead.
        foreach: torch's foreach AdamW after phi_p (``False``: the single-tensor loop), as ``torch.optim.AdamW``
            means it.
        fused: torch's fused AdamW after phi_p, as ``torch.optim.AdamW`` means it.
        capturable: CUDA-graph capturable state (takes the separate pass).
        differentiable: refused (phi_p runs outside autograd).
        one_pass: the one-pass kernels (``None``: where possible; ``True``: insist; ``False``: never).
    """

    #: phi_p is applied inside :func:`adampower`, not by a step pre-hook.
    power_in_step = True

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        p: float | PowerController = 1.2,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        one_pass: bool | None = None,
    ) -> None:
        power_value(p)  # a bad p is refused before anything is built
        params = _materialize(params)
        refuse_differentiable("AdamPower", differentiable)
        tensors = _tensors_of(params)
        use_one_pass = routes.choose_one_pass(tensors, one_pass=one_pass, fused=fused, foreach=foreach,
                                              capturable=capturable, amsgrad=amsgrad)
        if fused is None and foreach is None and not capturable and not use_one_pass:
            fused = routes.default_fused(tensors)  # foreach=False keeps torch's meaning: the single-tensor loop
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
            foreach=foreach, fused=fused or None, capturable=capturable,
        )
        #: Whether steps take the one-pass kernel (an attribute of the optimizer, never of its state dict).
        self.one_pass = use_one_pass
        self._setup_power(p)

    @property
    def router(self) -> routes.Router:
        """This optimizer's :class:`~gradpower.optim.routes.Router` (created on first use, also after
        unpickling): its resolved routes, compiled kernels and compile failures."""
        return routes.router_of(self)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "one_pass": self.one_pass}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also called by load_state_dict, which keeps the route. Pickles of earlier versions kept it in every group.
        legacy = [group.pop("one_pass", False) for group in state.get("param_groups", [])]
        if "one_pass" not in state and "one_pass" not in self.__dict__:
            state["one_pass"] = bool(legacy) and all(legacy)
        super().__setstate__(state)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One AdamPower update of every group (see :func:`adampower`)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        observe_power(self)
        for index, group in enumerate(self.param_groups):
            adampower_group(self.state, group, one_pass=self.one_pass, router=self.router, index=index)
        return loss

    def kernels_to_compile(self) -> int:
        """How many one-pass kernels (one per new tensor size) the next step compiles; 0 off that route."""
        if not self.one_pass:
            return 0
        sizes: set[int] = set()
        for group in self.param_groups:
            sizes |= self.router.pending_compiles(group["params"], float(group["p"]))
        return len(sizes)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, keeping this optimizer's route per group."""
        saved = [{k: v for k, v in g.items() if k != "one_pass"} for g in state_dict.get("param_groups", [])]
        if len(saved) == len(self.param_groups):
            paths = [{k: g[k] for k in _PATH_KEYS if k in g} for g in self.param_groups]
            saved = [{**s, **path} for s, path in zip(saved, paths)]
        super().load_state_dict({**state_dict, "param_groups": saved})
