"""gradpower: GradPower and GPAS for language-model pre-training.

``phi_p(g) = sign(g) * |g| ** p`` before any optimizer (AdamPower, MuonPower,
AdagradPower, or :class:`GradPower` around a torch optimizer), and GPAS
(gradient-preserving activation scaling) for Pre-LN transformers.

The names below are imported on first use (PEP 562), so ``import gradpower``
is instant and the ``gradpower`` command can answer Ctrl-C during start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AdagradPower": ".optim",
    "AdamPower": ".optim",
    "GradPower": ".optim",
    "MuonPower": ".optim",
    "MuonPowerFactory": ".optim",
    "OptimizerConfig": ".optim",
    "PowerController": ".optim",
    "PowerTransform": ".optim",
    "build_optimizer": ".optim",
    "GPAS": ".models",
    "sign_power": ".transform",
    "sign_power_": ".transform",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .models import GPAS
    from .optim import (
        AdagradPower,
        AdamPower,
        GradPower,
        MuonPower,
        MuonPowerFactory,
        OptimizerConfig,
        PowerController,
        PowerTransform,
        build_optimizer,
    )
    from .transform import sign_power, sign_power_


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gradpower' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
