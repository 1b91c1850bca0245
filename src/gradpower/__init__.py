"""gradpower: GradPower and GPAS for language-model pre-training.

``phi_p(g) = sign(g) * |g| ** p`` before any optimizer (AdamPower, MuonPower,
AdagradPower, or :class:`GradPower` around a torch optimizer), and GPAS
(gradient-preserving activation scaling) for Pre-LN transformers.
"""

from .optim import (
    AdagradPower,
    AdamPower,
    GradPower,
    MuonPower,
    MuonPowerFactory,
    OptimizerConfig,
    PowerTransform,
    build_optimizer,
)
from .models import GPAS
from .transform import sign_power, sign_power_

__version__ = "0.1.0"

__all__ = [
    "AdagradPower",
    "AdamPower",
    "GPAS",
    "GradPower",
    "MuonPower",
    "MuonPowerFactory",
    "OptimizerConfig",
    "PowerTransform",
    "build_optimizer",
    "sign_power",
    "sign_power_",
]
