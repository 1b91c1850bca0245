"""Training harness: schedules, the loop, checkpoints and metrics."""

from .checkpoint import CheckpointError
from .config import TrainConfig
from .distributed import Runtime
from .loop import InterruptedRun, NonFiniteLossError, TrainResult, accumulate_gradients, train
from .schedules import SCHEDULES, build_scheduler, lr_multiplier

__all__ = [
    "SCHEDULES",
    "CheckpointError",
    "InterruptedRun",
    "NonFiniteLossError",
    "Runtime",
    "TrainConfig",
    "TrainResult",
    "accumulate_gradients",
    "build_scheduler",
    "lr_multiplier",
    "train",
]
