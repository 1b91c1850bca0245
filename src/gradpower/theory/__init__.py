"""The papers' toy theory: AdamPower's update on noisy flat directions, and AdagradPower on a noisy problem."""

from .run import run_adagrad_comparison, run_toy
from .toy import NOISE_MODELS, best_p, gaussian_moments, simulate_update, uniform_moments, update_limit

__all__ = [
    "NOISE_MODELS",
    "best_p",
    "gaussian_moments",
    "run_adagrad_comparison",
    "run_toy",
    "simulate_update",
    "uniform_moments",
    "update_limit",
]
