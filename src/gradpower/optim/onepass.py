"""AdamPower's one-pass step as a TorchInductor kernel (Triton on CUDA, C++ on CPU): phi_p, both moments, bias
correction, decoupled decay and the update in one pass over each tensor. It is the ``onepass_inductor`` route of
:mod:`gradpower.optim.routes` (CUDA, and CPUs where the C++ loop of :mod:`.onepass_cpu`, the ``onepass_cpp`` route,
cannot be built); :func:`split_p` serves both; the C++ op computes :func:`step_scalars` in the same double
arithmetic.

The separate-pass route reads every gradient several times (abs, pow, mul,
then the fused AdamW kernel); here each element of the gradient, the two
moments and the parameter is read once and written once.

The accuracy contract (:data:`ACCURACY`, the class of ``torch.pow``'s own
fp32 power), which every route holds: ``|g|^p`` within a relative 2e-6 of the
float64 formula for every ``|g|`` in [1e-30, 1e4] and every p the kernel
takes, with 0, inf and NaN passed through exactly and subnormal inputs handled
(``tests/test_one_pass.py``). Here it is computed from ``|g| = 2^e * m``
(``m`` in [1, 2), read from the float's bits) as ``2^floor(p e) * exp(ln2 * frac(p e) + p * ln m)``: every
argument of the vectorised ``exp``/``log`` stays small, so the result is within
a few fp32 ulps (measured: below 5e-7) of the exact power over the whole fp32
range, subnormals included. The shorter
``exp(p * log|g|)`` is about 20% faster on CPU but not accurate enough: ``log|g|``
rounded to fp32 carries an absolute error of ``|log|g|| * 2^-24``, which ``exp``
turns into a relative error of up to 3e-6 for gradients in [1e-12, 1) and 8e-6
at the ends of the fp32 range, above the 1e-6 per step this kernel promises.
``p e`` is exact because ``p`` is split
into a 12-bit head and its remainder.

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

import logging
import math
import time
import types
from collections.abc import Callable

import torch

_log = logging.getLogger(__name__)
_LN2 = math.log(2.0)
#: The kernel's accuracy contract: the largest relative error of ``|g|^p`` against float64 on [1e-30, 1e4].
ACCURACY = 2e-6
_MIN_NORMAL = 2.0**-126


def power_abs(a: torch.Tensor, p: torch.Tensor, p_head: torch.Tensor, p_tail: torch.Tensor) -> torch.Tensor:
    """``a ** p`` for ``a >= 0`` in fp32 (``p = p_head + p_tail``, ``p_head`` with 12 significant bits)."""
    tiny = a < _MIN_NORMAL  # subnormals: scaled by 2^24 first so the bits hold a normal float
    bits = torch.where(tiny, a * 2.0**24, a).view(torch.int32)
    mantissa = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # a = 2^e * mantissa, mantissa in [1, 2)
    e = (bits >> 23).to(torch.float32) - torch.where(tiny, 151.0, 127.0)
    head = p_head * e  # exact: at most 12 + 9 significant bits
    n = torch.floor(head)
    r = torch.exp(((head - n) + p_tail * e) * _LN2 + p * torch.log(mantissa))  # 2^frac(p e) * mantissa^p
    # times 2^n as two normal powers of two, so that results may round to subnormal or 0
    n_int = n.clamp(-252.0, 254.0).to(torch.int32)
    n_half = n_int >> 1
    r = r * ((n_half + 127) << 23).view(torch.float32) * ((n_int - n_half + 127) << 23).view(torch.float32)
    return torch.where((a == 0) | ~torch.isfinite(a), a, r)  # 0 stays 0, inf stays inf, NaN stays NaN


def _update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
            scalars: torch.Tensor) -> None:
    """AdamW on sign(g)|g|^p for one flattened tensor: the fused form of phi_p, whose unfused definition is
    :func:`gradpower.transform.sign_power`. ``scalars`` holds what :func:`step_scalars` computes in float64 on
    the host, rounded once to fp32 (as torch's fused AdamW does with its scalars)."""
    one_minus_beta1, beta2, one_minus_beta2, decay_factor, step_size, bc2_sqrt, eps, sign, p, p_head, p_tail = \
        scalars.unbind()
    g = grad * sign
    g = torch.copysign(power_abs(g.abs(), p, p_head, p_tail), g)
    exp_avg.copy_(exp_avg + one_minus_beta1 * (g - exp_avg))
    exp_avg_sq.copy_(exp_avg_sq * beta2 + one_minus_beta2 * g * g)
    param.copy_(param * decay_factor - step_size * exp_avg / (exp_avg_sq.sqrt() / bc2_sqrt + eps))


def step_scalars(step: float, *, lr: float, beta1: float, beta2: float, weight_decay: float, eps: float,
                 maximize: bool, p: float) -> list[float]:
    """The kernel's scalars at ``step`` (1-based), in :func:`_update`'s order."""
    p32, p_head, p_tail = split_p(p)
    return [1 - beta1, beta2, 1 - beta2, 1 - lr * weight_decay, lr / (1 - beta1**step), math.sqrt(1 - beta2**step),
            eps, -1.0 if maximize else 1.0, p32, p_head, p_tail]


def split_p(p: float) -> tuple[float, float, float]:
    """``p`` for the kernel: rounded to fp32 (for ``p ln m``, where that rounding costs < 4e-8), and as a
    12-significant-bit head (``head * e`` is exact) plus a remainder, which carry ``p`` to ~36 bits:
    ``p`` rounded to fp32 alone would err by ``|ln|g|| * 6e-8`` relative, 1.4e-6 at ``|g| = 1e-12``."""
    mant, exp = math.frexp(p)
    head = math.ldexp(round(mant * 4096) / 4096, exp)
    return float(torch.tensor(p, dtype=torch.float32)), head, p - head


def _kernel(numel: int) -> Callable[..., None]:
    """A freshly compiled kernel for tensors of ``numel`` elements (the compile runs on its first call)."""
    code = _update.__code__.replace()  # a code object of its own: its own Dynamo cache
    fresh = types.FunctionType(code, _update.__globals__, _update.__name__)
    return torch.compile(fresh, dynamic=False, fullgraph=True)


class Kernels:
    """One optimizer's compiled kernels, one per tensor size, and the sizes whose kernel has run (compiled)."""

    def __init__(self) -> None:
        self._compiled: dict[int, Callable[..., None]] = {}
        #: Sizes whose kernel has run once (the compile happens on that first call).
        self.ready: set[int] = set()

    def step_tensor(self, param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                    exp_avg_sq: torch.Tensor, scalars: torch.Tensor) -> None:
        """One tensor's AdamPower step through its size's compiled kernel (``scalars``: :func:`step_scalars` as
        an fp32 tensor on the tensor's device), compiling it on the first call for that size, logged with its
        time. A compiler failure propagates (and the size's kernel is forgotten), for the caller's route to fall
        back."""
        # detach(): the same storage without requires_grad, so the kernel writes the parameter in place
        # (a leaf that requires grad would be updated through an extra copy pass).
        args = (param.detach().view(-1), grad.view(-1), exp_avg.view(-1), exp_avg_sq.view(-1), scalars)
        numel = param.numel()
        fresh, started = numel not in self.ready, time.perf_counter()
        if fresh:
            _log.info("compiling AdamPower's one-pass kernel for %d-element tensors (once per size and optimizer; "
                      "later ones load it from TorchInductor's cache)", numel)
        try:
            if numel not in self._compiled:
                self._compiled[numel] = _kernel(numel)
            self._compiled[numel](*args)
        except Exception:
            self._compiled.pop(numel, None)
            raise
        if fresh:
            self.ready.add(numel)
            _log.info("compiled AdamPower's one-pass kernel for %d-element tensors in %.1f s", numel,
                      time.perf_counter() - started)
