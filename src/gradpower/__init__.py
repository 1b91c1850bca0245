"""gradpower: GradPower and GPAS for language-model pre-training.

``phi_p(g) = sign(g) * |g| ** p`` before any optimizer (AdamPower, MuonPower,
AdagradPower, or :class:`GradPower` around a torch optimizer), and GPAS
(gradient-preserving activation scaling) for Pre-LN transformers.

The names below are imported on first use (PEP 562), so ``import gradpower``
is instant and the ``gradpower`` command can answer Ctrl-C during start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

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
    "power_class": ".optim",
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
        power_class,
    )
    from .transform import sign_power, sign_power_


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
