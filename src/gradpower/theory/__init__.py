"""The papers' toy theory: AdamPower's update on noisy flat directions, and AdagradPower on a noisy problem."""

from .run import run_adagrad_comparison, run_toy
from .toy import best_p, simulate_update, uniform_moments, update_limit

__all__ = ["best_p", "run_adagrad_comparison", "run_toy", "simulate_update", "uniform_moments", "update_limit"]
