"""A one-pass AdamPower step: phi_p, both moments, bias correction, decoupled decay and the update
in one pass over each tensor: on CPU the C++ loop of :mod:`.onepass_cpu` (built once per torch installation and CPU
instruction set; its own power, within the same contract), on CUDA (and on CPU where that loop cannot be built) the
TorchInductor kernel below (Triton on CUDA, C++ on CPU).

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
import warnings
from collections.abc import Callable

import torch

from . import onepass_cpu

#: CPU tensors go through the C++ loop of :mod:`.onepass_cpu` (when it builds) rather than the Inductor kernel.
CPU_KERNEL = True
#: Devices of the kernel (TorchInductor: C++ on CPU, Triton on CUDA), which are also torch's fused AdamW's.
DEVICES = ("cpu", "cuda")
_log = logging.getLogger(__name__)
_compiled: dict[int, Callable[..., None]] = {}
#: Sizes whose kernel has run once in this process (the compile happens on that first call).
_ready: set[int] = set()
#: Smaller tensors (norms, biases, gates, small experts) go through one foreach call per group instead:
#: a compiled call costs tens of microseconds of dispatch, which dominates below this size.
MIN_NUMEL = 1 << 15


#: The kernel takes groups with p up to this (the papers use 0.4 to 2): p ln m then stays below 6 and
#: the two-step 2^n scaling below covers every fp32 result; larger p use the separate-pass path.
MAX_P = 8.0
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
    """The compiled kernel for tensors of ``numel`` elements (compiled on first use)."""
    if numel not in _compiled:
        code = _update.__code__.replace()  # a code object of its own: its own Dynamo cache
        fresh = types.FunctionType(code, _update.__globals__, _update.__name__)
        _compiled[numel] = torch.compile(fresh, dynamic=False, fullgraph=True)
    return _compiled[numel]


def fits(t: torch.Tensor) -> bool:
    """A parameter the kernel can own: dense fp32 on one of :data:`DEVICES`, not a DTensor shard."""
    return (t.dtype == torch.float32 and t.device.type in DEVICES and t.layout == torch.strided
            and not hasattr(t, "to_local"))


def cpu_loop_indices(*tensor_lists: list[torch.Tensor], p: float) -> list[int]:
    """The positions ``i`` whose tensors (``lists[k][i]`` for every list) the C++ loop of :mod:`.onepass_cpu`
    takes at this ``p``: each contiguous and on the CPU and one that :func:`fits`, with ``p`` at most
    ``MAX_P`` and the loop built on this machine (none where it cannot be)."""
    if not (CPU_KERNEL and p <= MAX_P):
        return []
    chosen = [i for i, tensors in enumerate(zip(*tensor_lists))
              if all(t.device.type == "cpu" and t.is_contiguous() and fits(t) for t in tensors)]
    return chosen if chosen and onepass_cpu.kernel() is not None else []


def takes(param: torch.Tensor, grad: torch.Tensor | None, p: float) -> bool:
    """Whether this step sends ``param`` through the kernel: it :func:`fits`, it and its gradient are
    contiguous fp32, it has at least ``MIN_NUMEL`` elements and p is at most ``MAX_P``. The rest go
    through torch's kernels after the separate transform."""
    return (fits(param) and param.is_contiguous() and grad is not None and grad.dtype == param.dtype
            and grad.layout == torch.strided and grad.is_contiguous() and param.numel() >= MIN_NUMEL and p <= MAX_P)


def update(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
           exp_avg_sqs: list[torch.Tensor], state_steps: list[torch.Tensor], *, p: float, lr: float, beta1: float,
           beta2: float, weight_decay: float, eps: float, maximize: bool) -> int:
    """Step each tensor (each one the kernel :func:`takes`) through the kernel: CPU tensors through the C++ loop,
    one call per step count; the others (and CPU tensors where that loop cannot be built) in order.

    Returns how many were stepped: all of them, unless the compiler failed
    (then with a warning, at the failing tensor), so the caller steps exactly
    the rest on the separate-pass path. The step counters live on the host.
    """
    hyper = dict(lr=float(lr), beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, maximize=maximize, p=p)
    if params and CPU_KERNEL and all(t.device.type == "cpu" for t in params) and onepass_cpu.kernel() is not None:
        at_step: dict[float, list[int]] = {}  # a group's tensors share their step count, unless added later
        for i, step_t in enumerate(state_steps):
            at_step.setdefault(float(step_t) + 1, []).append(i)
        for step, idx in at_step.items():
            onepass_cpu.step(*([tensors[i] for i in idx] for tensors in (params, grads, exp_avgs, exp_avg_sqs)),
                             step_scalars(step, **hyper))
        torch._foreach_add_(state_steps, 1)
        return len(params)
    by_step: dict[tuple[float, torch.device], torch.Tensor] = {}
    for i, (param, grad, exp_avg, exp_avg_sq, step_t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs,
                                                                       state_steps)):
        step = float(step_t) + 1
        key = (step, param.device)
        if key not in by_step:  # one small host-to-device copy per group and step (not per tensor)
            by_step[key] = torch.tensor(step_scalars(step, **hyper), dtype=torch.float32).to(
                param.device, non_blocking=True)
        # detach(): the same storage without requires_grad, so the kernel writes the parameter in place
        # (a leaf that requires grad would be updated through an extra copy pass).
        args = (param.detach().view(-1), grad.view(-1), exp_avg.view(-1), exp_avg_sq.view(-1), by_step[key])
        numel = param.numel()
        fresh, started = numel not in _ready, time.perf_counter()
        if fresh:
            _log.info("compiling AdamPower's one-pass kernel for %d-element tensors (once per size and process)",
                      numel)
        try:
            _kernel(numel)(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to the torch path
            _compiled.pop(numel, None)
            warnings.warn(f"AdamPower's one-pass kernel could not be compiled ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}); using the separate-pass path", stacklevel=4)
            return i
        if fresh:
            _ready.add(numel)
            _log.info("compiled AdamPower's one-pass kernel for %d-element tensors in %.1f s", numel,
                      time.perf_counter() - started)
        step_t += 1
    return len(params)


def power_kernel(device: torch.device) -> str:
    """The kernel that computes ``|g|^p`` of a run's large fp32 tensors on ``device``: ``avx512`` or
    ``portable`` (the C++ loop built for this CPU), else ``inductor`` (the compiled kernel: CUDA, or a CPU where
    the C++ loop cannot be built). They round differently, so one seed gives other numbers under another kernel:
    runs record it, and experiments refuse to reuse or pair runs of different kernels."""
    if device.type == "cpu" and CPU_KERNEL and onepass_cpu.kernel() is not None:
        return "avx512" if onepass_cpu.avx512() else "portable"
    return "inductor"


def pending_sizes(params: list[torch.Tensor], p: float) -> set[int]:
    """Sizes among ``params`` whose Inductor kernel the next step compiles (none once each size has run; none for
    CPU tensors, which take the C++ loop built once per torch installation)."""
    return {t.numel() for t in params if t.numel() >= MIN_NUMEL and p <= MAX_P
            and not (t.device.type == "cpu" and CPU_KERNEL)} - _ready
