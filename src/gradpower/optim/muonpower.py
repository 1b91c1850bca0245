"""MuonPower: Muon for 2-D hidden weights, AdamW for the rest, both on phi_p(g).

One optimizer object, one state dict and one ``step()`` (so step hooks fire
once). The Muon half is torch.optim.Muon's update (momentum, Nesterov,
Newton-Schulz with Keller Jordan's coefficients, Moonlight's
``match_rms_adamw`` scaling, decoupled weight decay) with a choice of the
dtype Newton-Schulz runs in; the AdamW half is AdamPower's update
(:func:`gradpower.optim.adampower.adampower_group`) with AdamW's state layout.
phi_p is part of both updates, as in AdamPower: on the CPU it is fused into
Muon's momentum (:func:`muon_momentum`) and into the AdamW step, so each
gradient is read once, and every step pre-hook sees the raw gradient.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..errors import BadInput
from ..transform import check_p, sign_power_
from . import onepass, onepass_cpu, routes
from .adampower import adampower_group
from .newton_schulz import NS_COEFFICIENTS, NS_DTYPES, NS_STEPS, default_ns_dtype, newton_schulz_batch
from .param_groups import named_param_list, unknown_matrices, uses_muon
from .power_controller import PowerController
from .power_hook import PowerMixin, observe_power, power_value

#: The harness's optimizer names that run Newton-Schulz (``muon`` is MuonPower at p = 1).
MUON_OPTIMIZERS = ("muon", "muonpower")
MuonSplit = Callable[[str, Tensor], bool] | Iterable[str] | None


#: The most elements :func:`orthogonalized` stacks into one batch (32 MiB in bf16): a bound on the extra
#: memory the batched Newton-Schulz holds at once (the batch and the iteration's intermediates, a few times it).
MAX_BATCH_NUMEL = 1 << 24


def _wide(matrix: Tensor) -> Tensor:
    """The orientation Newton-Schulz iterates on: rows <= columns (a transposed view of a tall matrix)."""
    return matrix.T if matrix.size(0) > matrix.size(1) else matrix


def _unwide(result: Tensor, matrix: Tensor) -> Tensor:
    """``result``, computed on :func:`_wide` of ``matrix``, back in ``matrix``'s orientation."""
    return result.T if matrix.size(0) > matrix.size(1) else result


def newton_schulz(grad: Tensor, steps: int, coefficients: tuple[float, float, float], eps: float,
                  dtype: torch.dtype) -> Tensor:
    """Newton-Schulz of one 2-D ``grad`` in ``dtype``: :func:`newton_schulz_batch` on a batch of one, in the
    orientation of ``grad`` (with ``dtype=torch.bfloat16``, torch.optim.Muon's arithmetic)."""
    x = newton_schulz_batch(_wide(grad).to(dtype, copy=True).unsqueeze(0), steps, coefficients, eps)[0]
    return _unwide(x, grad)


def orthogonalize(update: Tensor, steps: int, coefficients: tuple[float, float, float], eps: float,
                  dtype: torch.dtype) -> Tensor:
    """Newton-Schulz of the whole matrix, also when ``update`` is an FSDP2 shard (a DTensor).

    Newton-Schulz needs the full matrix: a sharded update is gathered
    (``full_tensor()``: one all-gather of the matrix per step), orthogonalised
    on every rank, and only this rank's shard is kept (sliced locally, no
    further communication).
    """
    if not hasattr(update, "full_tensor"):
        return newton_schulz(update, steps, coefficients, eps, dtype)
    from torch.distributed.tensor import distribute_tensor

    full = newton_schulz(update.full_tensor(), steps, coefficients, eps, dtype)
    return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)


def orthogonalized(updates: list[Tensor], dtypes: list[torch.dtype], steps: int,
                   coefficients: tuple[float, float, float], eps: float) -> Iterator[tuple[int, Tensor]]:
    """``(i, Newton-Schulz of updates[i])`` for every matrix (each in its ``dtypes`` entry), the same numbers as
    :func:`orthogonalize` of each: matrices of one shape (up to orientation), device and dtype are stacked into
    batches of at most :data:`MAX_BATCH_NUMEL` elements and iterated together (a model's hidden matrices come in
    a few shapes); FSDP2 shards (DTensors) one at a time, each gathered whole. A batch's results are views into
    it, yielded as it finishes, so the caller applies them before the next batch is computed and at most one
    batch is held."""
    batches: dict[tuple, list[int]] = {}
    for i, (update, dtype) in enumerate(zip(updates, dtypes)):
        if hasattr(update, "full_tensor"):
            yield i, orthogonalize(update, steps, coefficients, eps, dtype)
        else:
            batches.setdefault((tuple(_wide(update).shape), update.device, dtype), []).append(i)
    for (shape, device, dtype), members in batches.items():
        per_batch = max(1, MAX_BATCH_NUMEL // math.prod(shape))
        for start in range(0, len(members), per_batch):
            chunk = members[start:start + per_batch]
            x = torch.empty((len(chunk), *shape), dtype=dtype, device=device)
            for row, i in zip(x, chunk):
                row.copy_(_wide(updates[i]))
            x = newton_schulz_batch(x, steps, coefficients, eps)
            for row, i in zip(x, chunk):
                yield i, _unwide(row, updates[i])


def muon_momentum(grads: list[Tensor], bufs: list[Tensor], *, p: float, momentum: float,
                  nesterov: bool) -> list[Tensor]:
    """torch.optim.Muon's momentum on phi_p(g) for one group's matrices: each buffer in ``bufs`` becomes
    ``lerp(buf, phi_p(g), 1 - momentum)``; returns what Newton-Schulz orthogonalises: with Nesterov
    ``lerp(phi_p(g), buf, momentum)``, written over the gradient (which is scratch after ``step()``, and no new
    tensor is allocated), else the buffer itself.

    Contiguous fp32 CPU matrices take one C++ call (:func:`gradpower.optim.onepass_cpu.muon_momentum`) that reads
    each gradient once, computes phi_p with the one-pass kernel's power and rounds both lerps as torch does: 4
    passes over memory against 6 for torch's two lerps (and 2 more for a separate phi_p). The rest (CUDA,
    DTensor shards, other dtypes, p above ``MAX_P``, no C++ compiler) take phi_p in place, then torch's lerps. At
    p = 1 every matrix takes torch's lerps on the raw gradient: torch.optim.Muon's numbers exactly.
    """
    fast = routes.cpp_power_indices(grads, bufs, p=p) if p != 1.0 else []
    if fast:
        onepass_cpu.muon_momentum([grads[i] for i in fast], [bufs[i] for i in fast],
                                  [*onepass.split_p(p), 1 - momentum, momentum, float(nesterov)],
                                  module=routes.cpp_ops())
    done = set(fast)
    rest = [i for i in range(len(grads)) if i not in done]
    sign_power_([grads[i] for i in rest], p)
    for i in rest:
        bufs[i].lerp_(grads[i], 1 - momentum)
        if nesterov:
            grads[i].lerp_(bufs[i], momentum)
    return grads if nesterov else bufs


def muon_lr_scale(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    """Muon's per-matrix lr factor: Moonlight's 0.2 sqrt(max(A, B)) or Keller's sqrt(max(1, A/B))."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, rows / cols))
    raise BadInput(f"adjust_lr_fn must be 'match_rms_adamw', 'original' or None, got {adjust_lr_fn!r}")


def _named_groups(params: Any, model: nn.Module | None) -> list[dict[str, Any]]:
    """Normalise every accepted ``params`` form to groups of ``(name, tensor)`` pairs.

    Accepted: a module, ``named_parameters()``, named param groups, or plain
    tensors / groups when ``model`` names them (as HF Trainer passes them).
    """
    if isinstance(params, nn.Module):
        params = params.named_parameters()
    items = list(params)
    if not items:
        raise BadInput("MuonPower got an empty parameter list")
    groups = items if isinstance(items[0], dict) else [{"params": items}]
    names = {id(t): n for n, t in model.named_parameters()} if model is not None else {}
    out = []
    for group in groups:
        members = group["params"]
        members = [members] if isinstance(members, Tensor) else list(members)
        named = []
        for item in members:
            if isinstance(item, Tensor) and id(item) in names:
                item = (names[id(item)], item)
            elif isinstance(item, Tensor):
                raise TypeError(
                    "MuonPower needs parameter names to split Muon from AdamW parameters: pass "
                    "model.named_parameters(), the model itself, or model=MODEL; with HF Trainer use "
                    "optimizer_cls_and_kwargs=(gradpower.MuonPowerFactory, {...})"
                )
            named.append(item)
        out.append({**group, "params": named_param_list(named)})
    return out


def _split_rule(muon_params: MuonSplit) -> Callable[[str, Tensor], bool]:
    if muon_params is None:
        return uses_muon
    if callable(muon_params):
        return muon_params
    chosen = set(muon_params)
    return lambda name, _tensor: name in chosen


class MuonPower(PowerMixin, Optimizer):
    """Muon + AdamW on sign-powered gradients, split by parameter name and shape.

    Split rule (:func:`gradpower.optim.param_groups.uses_muon`): 2-D weights
    with both dimensions > 1 go to Muon unless their name marks an embedding,
    an output head (``lm_head``, ``classifier``, ``score``, ``pooler``) or an MoE
    router; everything else (norms, biases, scalars, 1 x d gates) to AdamW with
    ``betas`` and ``eps``. Matrices whose names match no known block go to Muon
    by shape with a warning; ``muon_params`` (a predicate ``(name, tensor) ->
    bool`` or a collection of names) decides the split explicitly. Both halves
    use ``lr`` and ``weight_decay`` (the Moonlight scaling ``0.2 * sqrt(max(A,
    B))`` lets Muon reuse AdamW's lr).

    ``params``: a module, ``model.named_parameters()``, param groups of
    ``(name, tensor)`` pairs (each may override ``lr``, ``weight_decay``, ``p``),
    or unnamed tensors/groups together with ``model=``. Every group carries
    ``use_muon``. ``defaults`` holds ``momentum`` (Muon) and ``betas`` (AdamW);
    with ``OneCycleLR(cycle_momentum=True)`` the scheduler cycles ``betas[0]``,
    i.e. the AdamW half's beta1; Muon's momentum stays fixed.

    ``ns_dtype``: ``"bfloat16"`` (torch.optim.Muon's choice) or ``"float32"``; the default ``None`` takes
    :func:`~gradpower.optim.newton_schulz.default_ns_dtype` of each parameter's device: bf16 on CUDA, fp32 on CPUs
    without native bf16 matrix instructions, and on those with them the faster of the two as measured once per
    machine (:mod:`gradpower.optim.newton_schulz`). Pass a dtype to override it.

    Routes: the Muon half's momentum takes phi_p fused in on the CPU (:func:`muon_momentum`). The AdamW half takes
    AdamPower's routes (:func:`gradpower.optim.adampower.adampower`): the one-pass kernel by default, torch's
    fused or foreach AdamW after a separate phi_p when ``adam_fused`` / ``adam_foreach`` is given, with torch's
    meaning (or, for the rest of this optimizer's life, after a compiler failure: :mod:`gradpower.optim.routes`).
    At ``p = 1`` both halves are torch's
    ``Muon`` and ``AdamW`` on the raw gradient. As with AdamPower, every step pre-hook sees the raw gradient, and
    after ``step()`` the gradients are scratch: the separate passes rewrite them with phi_p(g), and Nesterov's
    update is written over the Muon matrices' gradients. Newton-Schulz runs batched over matrices of one shape
    (:func:`orthogonalized`; :data:`MAX_BATCH_NUMEL` bounds the memory it adds).

    Args:
        params: a model, ``model.named_parameters()`` or named param groups (names decide which matrices go to Muon).
        lr: learning rate of both halves (Muon's scaled by ``adjust_lr_fn``).
        p: the exponent of phi_p, or a :class:`~gradpower.optim.PowerController`.
        weight_decay: decoupled weight decay of both halves.
        momentum: Muon's momentum.
        nesterov: Nesterov momentum for Muon's half.
        betas: the AdamW half's moment decay rates.
        eps: the AdamW half's eps.
        ns_steps: Newton-Schulz iterations per update.
        ns_coefficients: the quintic iteration's coefficients (Keller Jordan's).
        ns_eps: added to the norm before Newton-Schulz.
        ns_dtype: ``"bfloat16"``, ``"float32"`` or ``None`` (the device's measured default).
        adjust_lr_fn: Muon's lr scale per matrix shape: ``"match_rms_adamw"`` (0.2 sqrt(max dim)) or ``"original"``.
        muon_params: which parameters go to Muon: a predicate on (name, tensor), a list of names, or ``None`` (the
            hidden 2-D matrices, :func:`~gradpower.optim.uses_muon`).
        model: the model whose names ``params`` refers to, when ``params`` is a list of tensors.
        adam_fused: torch's fused AdamW for the AdamW half, as ``torch.optim.AdamW``'s ``fused``.
        adam_foreach: torch's foreach AdamW for the AdamW half (``False``: the single-tensor loop).
    """

    #: phi_p is applied inside the update (:func:`muon_momentum`, :func:`adampower_group`), not by a pre-hook.
    power_in_step = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        p: float | PowerController = 1.2,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        *,
        ns_steps: int = NS_STEPS,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_eps: float = 1e-7,
        ns_dtype: str | None = None,
        adjust_lr_fn: str | None = "match_rms_adamw",
        muon_params: MuonSplit = None,
        model: nn.Module | None = None,
        adam_fused: bool | None = None,
        adam_foreach: bool | None = None,
    ) -> None:
        power_value(p)  # a bad p is refused before anything is built
        if not lr > 0 or not 0 <= momentum < 1 or weight_decay < 0 or not 0 < ns_steps < 100:
            raise BadInput(
                f"MuonPower needs lr > 0, 0 <= momentum < 1, weight_decay >= 0 and 0 < ns_steps < 100; got "
                f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, ns_steps={ns_steps}"
            )
        if ns_dtype is not None and ns_dtype not in NS_DTYPES:
            raise BadInput(f"ns_dtype must be one of {sorted(NS_DTYPES)} or None, got {ns_dtype!r}")
        muon_params_rule = _split_rule(muon_params)
        groups: list[dict[str, Any]] = []
        for group in _named_groups(params, model):
            options = {k: v for k, v in group.items() if k != "params"}
            muon_part = [(n, t) for n, t in group["params"] if muon_params_rule(n, t)]
            adam_part = [(n, t) for n, t in group["params"] if not muon_params_rule(n, t)]
            groups += [{**options, "params": part, "use_muon": flag}
                       for part, flag in ((muon_part, True), (adam_part, False)) if part]
        unknown = [] if muon_params is not None else unknown_matrices(
            (n, t) for g in groups if g["use_muon"] for n, t in g["params"])
        if unknown:
            warnings.warn(
                f"MuonPower: {len(unknown)} matrices have names outside the LLaMA/Qwen2-MoE rules and go to Muon "
                f"by shape (e.g. {', '.join(unknown[:3])}); pass muon_params= (a predicate or a list of names) "
                "to choose the split explicitly",
                stacklevel=2,
            )
        defaults = {
            "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov, "betas": tuple(betas),
            "eps": eps, "ns_steps": ns_steps, "ns_coefficients": tuple(ns_coefficients), "ns_eps": ns_eps,
            "ns_dtype": ns_dtype, "adjust_lr_fn": adjust_lr_fn, "fused": adam_fused, "foreach": adam_foreach,
        }
        super().__init__(groups, defaults)
        #: Whether the AdamW half takes AdamPower's one-pass kernel (an attribute, never in the state dict).
        self.one_pass = adam_fused is None and adam_foreach is None
        self._setup_power(p)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "use_muon" not in param_group:
            raise BadInput(
                "MuonPower.add_param_group needs 'use_muon' in the group (True for 2-D hidden weights, "
                "False for AdamW parameters)"
            )
        if param_group["use_muon"]:
            members = param_group["params"]
            members = [members] if isinstance(members, Tensor) else list(members)
            shapes = [tuple((m[1] if isinstance(m, tuple) else m).shape) for m in members]
            if any(len(s) != 2 for s in shapes):
                raise BadInput(f"Muon groups take 2-D parameters only, got shapes {shapes}")
            param_group = {**param_group, "params": members}
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # groups saved by older versions lack the newer keys
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        self.__dict__.setdefault("one_pass", self.defaults["fused"] is None and self.defaults["foreach"] is None)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One update of every group, phi_p included."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        observe_power(self)
        for index, group in enumerate(self.param_groups):
            if group["use_muon"]:
                self._muon_group(group)
            else:
                adampower_group(self.state, group, one_pass=self.one_pass and check_p(group["p"]) != 1.0,
                                router=routes.router_of(self), index=index)
        return loss

    def _default_ns_dtype(self, device: torch.device) -> str:
        """:func:`default_ns_dtype` of ``device``, read once per optimizer (outside its state dict), so a run's
        dtype never changes mid-run, say when the thread count the choice was measured at changes."""
        chosen = self.__dict__.setdefault("_ns_defaults", {})
        if device not in chosen:
            chosen[device] = default_ns_dtype(device)
        return chosen[device]

    def _muon_group(self, group: dict[str, Any]) -> None:
        params = [param for param in group["params"] if param.grad is not None]
        if not params:
            return
        for param in params:
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param.grad, memory_format=torch.preserve_format)
        lr, decay = float(group["lr"]), group["weight_decay"]
        updates = muon_momentum([param.grad for param in params],
                                [self.state[param]["momentum_buffer"] for param in params],
                                p=check_p(group["p"]), momentum=group["momentum"], nesterov=group["nesterov"])
        dtypes = [NS_DTYPES[group["ns_dtype"] or self._default_ns_dtype(param.device)] for param in params]
        for i, update in orthogonalized(updates, dtypes, group["ns_steps"], group["ns_coefficients"],
                                        group["ns_eps"]):
            param = params[i]
            param.mul_(1 - lr * decay)
            param.add_(update, alpha=-lr * muon_lr_scale(param.shape, group["adjust_lr_fn"]))

class MuonPowerFactory:
    """``MuonPowerFactory()(model, **kwargs)`` builds ``MuonPower(model, **kwargs)``.

    The factory form HF ``transformers.Trainer`` accepts in
    ``optimizer_cls_and_kwargs=(MuonPowerFactory, {"lr": ..., "p": ...})``: it
    calls the factory with the model, so the split sees parameter names; the call's keyword arguments are
    :class:`MuonPower`'s.
    """

    def __call__(self, model: nn.Module, **kwargs: Any) -> MuonPower:
        return MuonPower(model, **kwargs)
