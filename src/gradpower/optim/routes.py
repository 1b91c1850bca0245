"""Which kernel runs: AdamPower's route for each tensor of a group, and where phi_p alone is computed for the step
pre-hook and MuonPower's momentum. Every optimizer asks here; nothing else decides.

The rule, written once:

1. **One-pass routes.** On an optimizer's one-pass route (:func:`choose_one_pass`), a tensor the kernels take
   (:func:`kernel_takes`: it and its gradient dense, contiguous fp32 on CPU or CUDA, not a DTensor shard, with
   ``p`` at most :data:`MAX_P`) of at least :data:`MIN_NUMEL` elements goes to ``onepass_cpp`` on the CPU when
   the C++ loop is built (:data:`CPU_KERNEL`, :func:`cpp_ops`), else to ``onepass_inductor`` unless an Inductor
   compile of this optimizer has failed.
2. **torch's AdamW after a separate phi_p** for every other tensor: on the one-pass route ``fused`` when the rest
   are all floating-point CPU tensors, else ``foreach``; off it, the group's ``fused`` / ``foreach`` with torch's
   meaning (``fused=True``: fused; ``foreach=True``: foreach; ``foreach=False``: the single-tensor loop), torch's
   own default when neither is given (``foreach`` on CUDA, ``single`` elsewhere).
3. **phi_p alone** (:func:`cpp_power_indices`): the C++ loop for the tensors :func:`kernel_takes` on the CPU when
   it is built, :mod:`gradpower.transform` for the rest.

Each optimizer owns a :class:`Router`: it resolves a group's routes once (again only when the group's tensors
with a gradient change, or p crosses :data:`MAX_P`), and keeps the optimizer's compiled Inductor kernels and
whether one of its compiles failed. After a failure its Inductor route is never chosen again: a compiler that
failed once fails again, and retrying would cost a compile attempt each step. The one process-wide thing is the
C++ library (built at most once per process, ``None`` where it cannot be built); :func:`reset` forgets it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _default_to_fused_or_foreach

from ..errors import BadInput
from . import onepass, onepass_cpu

#: Every route's name, as :func:`adam_routes` returns them.
ROUTES = ("onepass_cpp", "onepass_inductor", "fused", "foreach", "single")
#: CPU tensors go through the C++ loop (when it builds) rather than the Inductor kernel.
CPU_KERNEL = True
#: Devices of the one-pass kernels (TorchInductor: C++ on CPU, Triton on CUDA), which are also torch's fused AdamW's.
DEVICES = ("cpu", "cuda")
#: Smaller tensors (norms, biases, gates, small experts) take torch's AdamW instead: a compiled call costs tens of
#: microseconds of dispatch, which dominates below this size.
MIN_NUMEL = 1 << 15
#: The kernels take p up to this (the papers use 0.4 to 2): p ln m then stays below 6 and the two-step 2^n scaling
#: covers every fp32 result; larger p take the separate pass.
MAX_P = 8.0

_log = logging.getLogger(__name__)
_state: dict[str, Any] = {}


def reset() -> None:
    """Forget the process-wide C++ ops: the next call builds (or loads) them again."""
    _state.clear()


def cpp_ops() -> Any:
    """The C++ loop's ops (:func:`gradpower.optim.onepass_cpu.build`; compiled on the first call in a machine's
    lifetime, loaded from torch's cache after), or None, with one warning, where they cannot be built. Once
    built, ``torch.compile`` traces this as a dictionary lookup; the build itself runs outside any graph."""
    if "cpp" not in _state:
        _build_cpp()
    return _state["cpp"]


@torch.compiler.disable
def _build_cpp() -> None:
    try:
        if not onepass_cpu.is_built():
            _log.info("building AdamPower's C++ CPU kernel (once per machine and torch version, 20-40 s; cached in "
                      "%s)", onepass_cpu.build_folder())
        _state["cpp"] = onepass_cpu.build()
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, a failed build: the Inductor kernel remains
        warnings.warn(f"AdamPower's C++ CPU kernel could not be built ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); using the compiled (Inductor) "
                      "kernel", stacklevel=4)
        _state["cpp"] = None


def kernel_owns(t: Tensor) -> bool:
    """A tensor the one-pass kernels can own whatever its layout in memory: dense fp32 on one of
    :data:`DEVICES`, not a DTensor shard."""
    return (t.dtype == torch.float32 and t.device.type in DEVICES and t.layout == torch.strided
            and not hasattr(t, "to_local"))


def kernel_takes(tensors: Iterable[Tensor | None], p: float) -> bool:
    """Whether the kernels take these tensors together (a parameter and its gradient, a gradient and its
    momentum buffer): each present, :func:`kernel_owns` it, contiguous, on one device, and ``p <= MAX_P``."""
    tensors = list(tensors)
    return (p <= MAX_P and all(t is not None and kernel_owns(t) and t.is_contiguous() for t in tensors)
            and len({t.device for t in tensors}) == 1)


def _cpp_takes(tensors: Sequence[Tensor]) -> bool:
    return CPU_KERNEL and tensors[0].device.type == "cpu"


def cpp_power_indices(*tensor_lists: Sequence[Tensor], p: float) -> list[int]:
    """Rule 3: the positions ``i`` whose tensors (``lists[k][i]`` for every list) the C++ loop takes at this
    ``p`` (none where it cannot be built)."""
    chosen = [i for i, tensors in enumerate(zip(*tensor_lists)) if kernel_takes(tensors, p) and _cpp_takes(tensors)]
    return chosen if chosen and cpp_ops() is not None else []


def choose_one_pass(tensors: Sequence[Tensor], *, one_pass: bool | None, fused: bool | None, foreach: bool | None,
                    capturable: bool, amsgrad: bool) -> bool:
    """Whether an AdamPower takes the one-pass routes: by default where possible (every parameter
    :func:`kernel_owns`, no ``fused``/``foreach`` asked for, no ``capturable``/``amsgrad``); ``one_pass=True``
    insists (an error where impossible), ``False`` turns it off."""
    possible = bool(tensors) and all(kernel_owns(t) for t in tensors) and not (amsgrad or capturable)
    if one_pass and (not possible or fused or foreach):
        raise BadInput("AdamPower(one_pass=True) needs dense fp32 parameters on CPU or CUDA, and no "
                       "fused/foreach/capturable/amsgrad")
    return possible and fused is None and foreach is None if one_pass is None else bool(one_pass)


def default_fused(tensors: Iterable[Tensor]) -> bool:
    """Off the one-pass route, torch's fused AdamW for a group when it takes every parameter (dense floating
    point on CPU or CUDA): the fastest AdamW path on both (``benchmarks/optimizer_step.py``)."""
    tensors = list(tensors)
    return bool(tensors) and all(t.is_floating_point() and t.device.type in DEVICES and not t.is_sparse
                                 for t in tensors)


def adam_routes(params: Sequence[Tensor], grads: Sequence[Tensor], p: float, *, one_pass: bool,
                fused: bool | None, foreach: bool | None, inductor: bool = True) -> dict[str, list[int]]:
    """Rules 1 and 2 for one group: each route that takes some of its tensors, with their positions, in the order
    they run (the one-pass routes first). ``inductor``: whether the Inductor route is open (False once a compile
    of the asking optimizer failed)."""
    routes: dict[str, list[int]] = {}
    rest = list(range(len(params)))
    if one_pass:
        for i in rest:
            if params[i].numel() >= MIN_NUMEL and kernel_takes((params[i], grads[i]), p):
                route = "onepass_cpp" if _cpp_takes((params[i],)) and cpp_ops() is not None else "onepass_inductor"
                if route == "onepass_cpp" or inductor:
                    routes.setdefault(route, []).append(i)
        taken = {i for chosen in routes.values() for i in chosen}
        rest = [i for i in rest if i not in taken]
        if rest:
            on_cpu = all(params[i].device.type == "cpu" and params[i].is_floating_point() for i in rest)
            routes["fused" if on_cpu else "foreach"] = rest
        return routes
    if rest:
        routes[torch_route([params[i] for i in rest], fused=fused, foreach=foreach)] = rest
    return routes


def torch_route(params: Sequence[Tensor], *, fused: bool | None, foreach: bool | None) -> str:
    """torch's AdamW route for these tensors, with torch's meaning of the flags: ``fused=True`` the fused kernel,
    ``foreach=True`` the foreach one, ``foreach=False`` the single-tensor loop, neither given torch's own default."""
    if fused:
        return "fused"
    if foreach is None:
        _, foreach = _default_to_fused_or_foreach(list(params), differentiable=False, use_fused=False)
    return "foreach" if foreach else "single"


def router_of(optimizer: Any) -> Router:
    """``optimizer``'s :class:`Router`, kept in its ``__dict__`` (never in its state dict or pickle)."""
    router = optimizer.__dict__.get("_router")
    if router is None:
        router = optimizer.__dict__["_router"] = Router()
    return router


class Router:
    """One optimizer's routes (rules 1 and 2), resolved once per param group and kept; with the optimizer's
    compiled Inductor kernels (:class:`gradpower.optim.onepass.Kernels`) and whether one of them failed to compile.

    A group's routes are resolved again only when what they depend on changes: which of its tensors have a
    gradient, whether p is within :data:`MAX_P`, or the flags; and after a compile failure, which closes the
    Inductor route for this optimizer (with one warning naming the cause)."""

    def __init__(self) -> None:
        self.kernels = onepass.Kernels()
        #: Whether an Inductor compile of this optimizer failed (its Inductor route is then never chosen).
        self.inductor_failed = False
        self._resolved: dict[int, tuple[tuple[Any, ...], dict[str, list[int]]]] = {}

    def routes(self, group: int, params: Sequence[Tensor], grads: Sequence[Tensor], p: float, *, one_pass: bool,
               fused: bool | None, foreach: bool | None) -> dict[str, list[int]]:
        """Group ``group``'s routes for these tensors: resolved on the first step (or when its key changes), then
        kept."""
        key = (tuple(id(t) for t in params), p <= MAX_P, one_pass, fused, foreach)
        kept = self._resolved.get(group)
        if kept is None or kept[0] != key:
            kept = key, adam_routes(params, grads, p, one_pass=one_pass, fused=fused, foreach=foreach,
                                    inductor=not self.inductor_failed)
            self._resolved[group] = kept
        return kept[1]

    def record_inductor_failure(self, exc: BaseException) -> None:
        """Close this optimizer's Inductor route, warn once, and resolve every group again on its next step."""
        self.inductor_failed = True
        self._resolved.clear()
        warnings.warn(f"AdamPower's one-pass kernel could not be compiled ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); using the separate-pass path",
                      stacklevel=5)

    def pending_compiles(self, params: Iterable[Tensor], p: float) -> set[int]:
        """Sizes among ``params`` whose Inductor kernel the next step compiles: the tensors rule 1 sends to
        ``onepass_inductor`` whose size this optimizer has not compiled yet."""
        if self.inductor_failed or p > MAX_P:
            return set()
        return {t.numel() for t in params if t.numel() >= MIN_NUMEL and kernel_owns(t)
                and not (_cpp_takes((t,)) and cpp_ops() is not None)} - self.kernels.ready


def power_kernel(device: torch.device) -> str:
    """The kernel that computes ``|g|^p`` of a run's large fp32 tensors on ``device``: ``avx512`` or
    ``portable`` (the C++ loop built for this CPU), else ``inductor`` (the compiled kernel: CUDA, or a CPU where
    the C++ loop cannot be built). They round differently, so one seed gives other numbers under another kernel:
    runs record it, and experiments refuse to reuse or pair runs of different kernels."""
    if device.type == "cpu" and CPU_KERNEL and cpp_ops() is not None:
        return "avx512" if onepass_cpu.avx512() else "portable"
    return "inductor"

