"""A one-pass AdamPower step: phi_p, both moments, bias correction, decoupled decay and the update
in one compiled kernel per tensor (TorchInductor: vectorised C++ on CPU, Triton on CUDA).

The separate-pass route reads every gradient several times (abs, pow, mul,
then the fused AdamW kernel); here each element of the gradient, the two
moments and the parameter is read once and written once. ``|g|^p`` is
``exp(p * log|g|)`` (vectorised; relative error ~1e-7, zeros stay zero).
The kernel is compiled once per process for each distinct tensor size (a
model has a handful: embedding, attention, MLP, norms), each size with its
own code object so Dynamo's recompile limit never applies (static sizes run
about twice as fast as one dynamic-size kernel on CPU); every per-step scalar
(lr, the bias corrections, p) enters as tensor data, so neither a new step,
an lr schedule nor another group's p recompiles anything.
``benchmarks/optimizer_step.py`` measures it against ``AdamW(fused=True)``
and reports the first call's compile time.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .adamw_update import adam_state

_compiled: dict[int, Callable[..., None]] = {}
#: Smaller tensors (norms, biases, gates, small experts) go through one foreach call per group instead:
#: a compiled call costs tens of microseconds of dispatch, which dominates below this size.
MIN_NUMEL = 1 << 15


def _update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
            scalars: torch.Tensor) -> None:
    """AdamW on sign(g)|g|^p for one flattened tensor; ``scalars`` = (lr, beta1, beta2, eps, weight_decay,
    p, bias_correction1, sqrt(bias_correction2), sign) with sign = -1 for ``maximize``."""
    lr, beta1, beta2, eps, decay, p, bc1, bc2_sqrt, sign = scalars.unbind()
    g = grad * sign
    g = torch.copysign(torch.exp(p * torch.log(g.abs())), g)
    exp_avg.copy_(exp_avg + (1 - beta1) * (g - exp_avg))
    exp_avg_sq.copy_(exp_avg_sq * beta2 + (1 - beta2) * g * g)
    param.copy_(param * (1 - lr * decay) - (lr / bc1) * exp_avg / (exp_avg_sq.sqrt() / bc2_sqrt + eps))


def _kernel(numel: int) -> Callable[..., None]:
    """The compiled kernel for tensors of ``numel`` elements (compiled on first use)."""
    if numel not in _compiled:
        code = _update.__code__.replace()  # a code object of its own: its own Dynamo cache
        fresh = types.FunctionType(code, _update.__globals__, _update.__name__)
        _compiled[numel] = torch.compile(fresh, dynamic=False, fullgraph=True)
    return _compiled[numel]


def eligible(param: torch.Tensor) -> bool:
    """Tensors the kernel takes: dense fp32 on CPU or CUDA, contiguous, with a matching gradient."""
    grad = param.grad
    return (param.dtype == torch.float32 and param.device.type in ("cpu", "cuda") and param.layout == torch.strided
            and param.is_contiguous() and grad is not None and grad.dtype == param.dtype and grad.layout == torch.strided
            and grad.is_contiguous() and not hasattr(param, "to_local"))


def available() -> bool:
    """Whether this torch has a compiler to try (a failure at the first step falls back, per optimizer)."""
    return hasattr(torch, "compile")


def one_pass_group_update(states: Any, group: dict[str, Any], params: list[torch.Tensor]) -> None:
    """Step every tensor of ``params`` (eligible, with gradients) of one group through the kernel.

    Raises :class:`RuntimeError` when the compiler fails, so the caller can
    fall back for this and later steps.
    """
    beta1, beta2 = group["betas"]
    by_step: dict[tuple[float, torch.device], torch.Tensor] = {}
    for param in params:
        state = adam_state(states[param], param, on_device=False)
        state["step"] += 1
        step = float(state["step"])
        key = (step, param.device)
        if key not in by_step:  # one small host-to-device copy per group and step (not per tensor)
            by_step[key] = torch.tensor(
                [float(group["lr"]), beta1, beta2, group["eps"], group["weight_decay"], float(group["p"]),
                 1 - beta1**step, math.sqrt(1 - beta2**step), -1.0 if group.get("maximize") else 1.0],
                dtype=torch.float32).to(param.device, non_blocking=True)
        # detach(): the same storage without requires_grad, so the kernel writes the parameter in place
        # (a leaf that requires grad would be updated through an extra copy pass).
        args = (param.detach().view(-1), param.grad.view(-1), state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1),
                by_step[key])
        try:
            _kernel(param.numel())(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to the torch path
            _compiled.pop(param.numel(), None)
            state["step"] -= 1
            warnings.warn(f"AdamPower's one-pass kernel could not be compiled ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}); using the separate-pass path", stacklevel=3)
            raise RuntimeError("one-pass kernel unavailable") from exc
