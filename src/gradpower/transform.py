"""The GradPower transform phi_p(g) = sign(g) * |g| ** p: its definition.

AdamPower's separate pass calls into this module, and so do the wrapper,
AdagradPower and MuonPower for gradients the C++ loop does not take. The other
forms of phi_p are the fast ones: the fused power inside AdamPower's one-pass
kernels (``gradpower.optim.onepass.power_abs`` and the C++ loop of
``gradpower.optim.onepass_cpu``), which the step pre-hook also uses on fp32
CPU gradients; ``tests/test_one_pass.py`` holds them to this definition and to
the float64 formula (the contract ``onepass.ACCURACY``) over the whole fp32
range. Low-precision tensors are powered in fp32 and written back
in their own dtype; ``p == 1`` returns without touching memory.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .errors import BadInput

__all__ = ["check_p", "sign_power", "sign_power_"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_p(p: object) -> float:
    """Return ``p`` as a float, or raise ``ValueError`` naming the bad value.

    ``p`` must be a finite real number greater than zero (``bool`` is refused:
    ``True`` is almost always a mistake for an exponent).
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise BadInput(f"GradPower exponent p must be a finite number > 0, got {p!r}")
    value = float(p)
    if not math.isfinite(value) or value <= 0.0:
        raise BadInput(f"GradPower exponent p must be a finite number > 0, got {p!r}")
    return value


def _check_tensor(t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"sign_power expects a torch.Tensor, got {type(t).__name__}")
    if t.is_sparse or t.layout != torch.strided:
        raise TypeError(
            "GradPower does not support sparse gradients (layout "
            f"{t.layout}); use a dense gradient (e.g. nn.Embedding(sparse=False))"
        )
    if t.is_complex():
        raise TypeError(f"GradPower is defined for real tensors only, got dtype {t.dtype}")
    if not t.is_floating_point():
        raise TypeError(f"GradPower expects a floating-point tensor, got dtype {t.dtype}")
    return t


def _power_fp32_(work: Tensor, p: float) -> Tensor:
    """phi_p in place on a tensor that is already fp32 or fp64.

    For p > 1 this is g * |g| ** (p - 1) (two kernels, zeros stay zero). For
    p < 1 the power of |g| would blow up at zero, so the sign is multiplied in.
    """
    if p > 1.0:
        return work.mul_(work.abs().pow_(p - 1.0))
    return work.copy_(work.abs().pow_(p).mul_(work.sign()))


def sign_power(t: Tensor, p: float) -> Tensor:
    """Return ``sign(t) * |t| ** p`` as a new tensor of ``t``'s dtype.

    bf16/fp16 inputs are computed in fp32 and rounded once at the end. Zeros
    stay zero. ``p == 1`` returns a copy of ``t``.

    Args:
        t: a real floating-point tensor (dense).
        p: the exponent, a finite number > 0.

    Returns:
        ``sign(t) * |t| ** p``, a new tensor of ``t``'s dtype and shape.
    """
    p = check_p(p)
    t = _check_tensor(t)
    if p == 1.0:
        return t.clone()
    work = t.float() if t.dtype in _LOW_PRECISION else t.clone()
    return _power_fp32_(work, p).to(t.dtype)


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(tensors, Tensor):
        return [tensors]
    return list(tensors)


def sign_power_(tensors: Tensor | Iterable[Tensor], p: float, *, foreach: bool | None = None) -> None:
    """Apply ``sign(g) * |g| ** p`` in place to one tensor or a list of tensors.

    The list path uses ``torch._foreach_*`` ops (one kernel launch per op per
    device/dtype bucket instead of one per tensor) unless ``foreach=False``.
    ``p == 1`` is an exact no-op and touches no memory.

    Args:
        tensors: one tensor or an iterable of them (real, floating point, dense), changed in place.
        p: the exponent, a finite number > 0.
        foreach: ``torch._foreach_*`` ops for a list (default: where torch would use them), or one tensor at a time.
    """
    p = check_p(p)
    items = [_check_tensor(t) for t in _as_list(tensors)]
    if p == 1.0 or not items:
        return
    use_foreach = len(items) > 1 if foreach is None else foreach
    if not use_foreach:
        for t in items:
            if t.dtype in _LOW_PRECISION:
                t.copy_(_power_fp32_(t.float(), p))
            else:
                _power_fp32_(t, p)
        return
    full = [t for t in items if t.dtype not in _LOW_PRECISION]
    low = [t for t in items if t.dtype in _LOW_PRECISION]
    if full:
        _foreach_power_(full, p)
    if low:
        work = [t.float() for t in low]
        _foreach_power_(work, p)
        for t, w in zip(low, work):  # per tensor: DTensor (FSDP2) has no sharding rule for _foreach_copy_
            t.copy_(w)


def _foreach_power_(work: Sequence[Tensor], p: float) -> None:
    """The foreach twin of :func:`_power_fp32_` (same formulas, same zero rule)."""
    work = list(work)
    if p > 1.0:
        mag = torch._foreach_abs(work)
        torch._foreach_pow_(mag, p - 1.0)
        torch._foreach_mul_(work, mag)
        return
    sign = torch._foreach_sign(work)
    torch._foreach_abs_(work)
    torch._foreach_pow_(work, p)
    torch._foreach_mul_(work, sign)
