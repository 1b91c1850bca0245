"""AdamPower: AdamW applied to phi_p(g).

Subclasses ``torch.optim.AdamW`` so the update rule, the state layout
(``step``, ``exp_avg``, ``exp_avg_sq``) and the three execution paths
(fused, foreach, single-tensor) are torch's own; the only change is the
in-place transform of the gradients, attached as a step pre-hook
(:mod:`gradpower.optim.power_hook`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..transform import check_p
from . import onepass
from .adamw_update import adamw_group_update
from .power_hook import PowerMixin, power_group_grads_, refuse_differentiable

_FUSED_DEVICES = ("cpu", "cuda")
#: Group keys that choose how the update runs, not what it computes (kept across load_state_dict).
_PATH_KEYS = ("fused", "foreach", "capturable", "one_pass")


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


def default_fused(params: Iterable[torch.Tensor]) -> bool:
    """True when torch's fused AdamW kernel can take every parameter.

    The fused kernel is the fastest AdamW path on both CPU and CUDA (see
    ``benchmarks/optimizer_step.py``), so AdamPower uses it whenever it is
    correct for the inputs: dense floating-point leaves on one of those devices.
    """
    params = list(params)
    return bool(params) and all(
        p.is_floating_point() and p.device.type in _FUSED_DEVICES and not p.is_sparse for p in params
    )


class AdamPower(PowerMixin, torch.optim.AdamW):
    """AdamW on sign-powered gradients ``sign(g) * |g| ** p``.

    Defaults follow the GradPower paper's AdamW baseline: betas (0.9, 0.95),
    weight decay 0.1, eps 1e-8, p 1.2. ``p`` may differ per param group
    (``group["p"]``). ``p=1`` is AdamW exactly. Two defaults differ from
    ``torch.optim.AdamW`` (betas[1] 0.999, weight decay 0.01): pass them
    explicitly to reproduce an existing AdamW setup.

    Execution paths (the state layout is AdamW's on every one):

    - one-pass (default where available: dense fp32 parameters on CPU or
      CUDA, a working ``torch.compile``, no ``fused``/``foreach``/
      ``capturable``/``amsgrad`` asked for): phi_p fused into the AdamW update,
      one compiled kernel per tensor (:mod:`gradpower.optim.onepass`) for
      tensors of 32,768 elements or more in groups with p <= 8, the rest of
      the step through the separate-pass path below;
      ``one_pass=False`` turns it off, ``one_pass=True`` insists on it;
    - otherwise phi_p (the shared step pre-hook) then torch's functional
      AdamW, with ``fused`` (default when every parameter allows it),
      ``foreach`` or the single-tensor loop.

    The first step on the one-pass route compiles the kernel once per
    distinct tensor size (a model has a handful): about 5-10 s per size on a
    CPU, so up to a minute before the first update of a small model; later
    steps, and later runs through TorchInductor's on-disk cache, pay little.
    Each compile is logged at INFO level on the ``gradpower.optim.onepass``
    logger, with its time; :meth:`kernels_to_compile` says how many the next
    step compiles.

    The transform rewrites ``param.grad`` in place on the separate-pass
    paths; ``differentiable=True`` is refused (the transform is outside
    autograd). Loading a state dict (a plain AdamW one too) keeps this
    optimizer's execution path, so resuming from an AdamW checkpoint does not
    silently fall back to a slower path.
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        p: float = 1.2,
        *,
        amsgrad: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        one_pass: bool | None = None,
    ) -> None:
        p = check_p(p)
        params = _materialize(params)
        refuse_differentiable("AdamPower", differentiable)
        tensors = _tensors_of(params)
        possible = onepass.available() and all(_one_pass_tensor(t) for t in tensors) and not (amsgrad or capturable)
        if one_pass and (not possible or fused or foreach):
            raise ValueError("AdamPower(one_pass=True) needs dense fp32 parameters on CPU or CUDA, a working "
                             "torch.compile, and no fused/foreach/capturable/amsgrad")
        use_one_pass = possible and fused is None and foreach is None if one_pass is None else bool(one_pass)
        if fused is None and not foreach and not capturable and not use_one_pass:
            fused = default_fused(tensors)
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
            foreach=foreach, fused=fused or None, capturable=capturable,
        )
        for group in self.param_groups:
            group["one_pass"] = use_one_pass
        self._setup_power(p)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("one_pass", False)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One update per group: the one-pass kernel, or (phi_p already applied) torch's functional AdamW."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update_groups()
        return loss

    # A user's torch.compile(opt.step) leaves this frame to run as it is (its kernels are compiled
    # already): tracing it would guard on every gradient tensor and recompile each step.
    @torch.compiler.disable
    def _update_groups(self) -> None:
        # the path of each group as the step pre-hook saw it (it transformed only the separate-pass groups)
        for group, one_pass in [(g, g["one_pass"]) for g in self.param_groups]:
            if not one_pass:
                adamw_group_update(self.state, group)
                continue
            with_grad = [p for p in group["params"] if p.grad is not None]
            # after a compiler failure (in an earlier group of this step too) everything takes the separate pass
            takes = [group["one_pass"] and onepass.takes(p, group) for p in with_grad]
            other = [p for p, t in zip(with_grad, takes) if not t]
            failed = onepass.one_pass_group_update(self.state, group, [p for p, t in zip(with_grad, takes) if t])
            if failed:
                for g in self.param_groups:  # no compiler here: the separate-pass path from now on
                    g["one_pass"] = False
                other += failed
            if other:  # small tensors (one foreach call beats a kernel each) and any the kernel does not take
                # fused on CPU (its step counters live there too); foreach on CUDA (the counters stay on the CPU)
                on_cpu = all(p.device.type == "cpu" and p.is_floating_point() for p in other)
                separate = {**group, "params": other, "one_pass": False, "fused": on_cpu or None,
                            "foreach": None if on_cpu else True}
                power_group_grads_([separate])
                adamw_group_update(self.state, separate, other)

    def kernels_to_compile(self) -> int:
        """How many one-pass kernels (one per new tensor size) the next step compiles; 0 off that route."""
        sizes: set[int] = set()
        for group in self.param_groups:
            if group["one_pass"]:
                sizes |= onepass.pending_sizes(group)
        return len(sizes)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, keeping this optimizer's execution path per group."""
        saved = state_dict.get("param_groups", [])
        if len(saved) == len(self.param_groups):
            paths = [{k: g[k] for k in _PATH_KEYS if k in g} for g in self.param_groups]
            state_dict = {**state_dict, "param_groups": [{**s, **path} for s, path in zip(saved, paths)]}
        super().load_state_dict(state_dict)


def _one_pass_tensor(t: torch.Tensor) -> bool:
    return (t.dtype == torch.float32 and t.device.type in ("cpu", "cuda") and t.layout == torch.strided
            and not hasattr(t, "to_local"))
