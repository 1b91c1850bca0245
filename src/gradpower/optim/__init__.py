"""Optimizers that apply the GradPower transform before an unchanged base update."""

from .adagradpower import AdagradPower
from .adampower import AdamPower
from .factory import OPTIMIZERS, OptimizerConfig, build_optimizer, is_power_optimizer
from .muonpower import MuonPower, MuonPowerFactory
from .param_groups import BLOCKWISE_LR, block_of, build_param_groups, uses_muon
from .power_controller import PowerController
from .power_hook import PowerTransform
from .wrapper import GradPower, power_class

__all__ = [
    "BLOCKWISE_LR",
    "OPTIMIZERS",
    "AdagradPower",
    "AdamPower",
    "GradPower",
    "MuonPower",
    "MuonPowerFactory",
    "OptimizerConfig",
    "PowerController",
    "PowerTransform",
    "block_of",
    "build_optimizer",
    "build_param_groups",
    "is_power_optimizer",
    "power_class",
    "uses_muon",
]
