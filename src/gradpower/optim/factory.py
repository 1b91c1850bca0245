"""``build_optimizer``: an optimizer name plus a config dataclass -> optimizer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import BadInput
from .adagradpower import AdagradPower
from .adampower import AdamPower
from .muonpower import MUON_OPTIMIZERS, MuonPower
from .param_groups import build_param_groups, named_param_list
from .power_controller import PowerController
from .power_hook import power_value
from .wrapper import GradPower

OPTIMIZERS = ("adamw", "adampower", "muon", "muonpower", "adagrad", "adagradpower", "sgd", "sgdpower")


def is_power_optimizer(name: str) -> bool:
    """Whether optimizer ``name`` applies GradPower (the ``*power`` names; their baselines ignore ``p``)."""
    return name.lower().endswith("power")


@dataclass
class OptimizerConfig:
    """Hyper-parameters shared by every optimizer name (the GradPower paper's defaults).

    ``p`` is used by the ``*power`` names only; the baselines ignore it, so a
    comparison changes the name and nothing else. It is a number or a
    :class:`~gradpower.optim.PowerController` (a p re-chosen from the gradient noise).
    """

    lr: float = 1e-3
    p: float | PowerController = 1.2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    momentum: float = 0.95
    nesterov: bool = True
    blockwise_lr: bool = False
    decay_all: bool = False
    fused: bool | None = None
    foreach: bool | None = None
    ns_dtype: str | None = None

    def __post_init__(self) -> None:
        power_value(self.p)
        if not self.lr > 0:
            raise BadInput(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise BadInput(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]


def build_optimizer(name: str, named_parameters: Any, **cfg: Any) -> Optimizer:
    """Build optimizer ``name`` over ``model.named_parameters()``.

    Keyword arguments are the fields of :class:`OptimizerConfig`. Weight decay
    goes to matrices only unless ``decay_all=True`` (decoupled for the Adam and
    Muon names, torch's L2 form for Adagrad and SGD); ``blockwise_lr=True``
    scales lr per block (see :data:`gradpower.optim.param_groups.BLOCKWISE_LR`).

    Args:
        name: one of :data:`OPTIMIZERS` (``adamw``, ``adampower``, ``muon``, ``muonpower``, ...).
        named_parameters: ``model.named_parameters()`` (the names decide weight decay, blockwise lr and Muon's
            matrices).
        **cfg: the fields of :class:`OptimizerConfig`.

    Returns:
        The optimizer, with weight decay on matrices only unless ``decay_all``.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise BadInput(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    fields = {f.name for f in dataclasses.fields(OptimizerConfig)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise TypeError(f"unknown optimizer option(s) {unknown}; valid: {sorted(fields)}")
    config = OptimizerConfig(**cfg)
    groups = build_param_groups(
        named_param_list(named_parameters),
        lr=config.lr,
        weight_decay=config.weight_decay,
        blockwise_lr=config.blockwise_lr,
        decay_all=config.decay_all,
    )
    p = config.p if is_power_optimizer(key) else 1.0
    if key in MUON_OPTIMIZERS:
        return MuonPower(
            groups,
            lr=config.lr,
            p=p,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            nesterov=config.nesterov,
            betas=config.betas,
            eps=config.eps,
            adam_fused=config.fused,
            adam_foreach=config.foreach,
            ns_dtype=config.ns_dtype,
        )
    if key in ("adamw", "adampower"):
        adam_cls = AdamPower if key == "adampower" else torch.optim.AdamW
        kwargs: dict[str, Any] = {"p": p} if key == "adampower" else {}
        return adam_cls(
            groups, lr=config.lr, betas=config.betas, eps=config.eps,
            weight_decay=config.weight_decay, fused=config.fused, foreach=config.foreach, **kwargs,
        )
    if key == "adagradpower":
        return AdagradPower(groups, lr=config.lr, p=p, foreach=config.foreach)
    if key == "adagrad":
        return torch.optim.Adagrad(groups, lr=config.lr, foreach=config.foreach)
    sgd = torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
        foreach=config.foreach,
    )
    return GradPower(sgd, p=p) if key == "sgdpower" else sgd
