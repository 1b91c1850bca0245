"""Training harness: schedules, the loop, checkpoints and metrics (imported on first use: see :mod:`gradpower.lazy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "SCHEDULES": ".schedules",
    "CheckpointError": ".checkpoint",
    "InterruptedRun": ".loop",
    "NonFiniteLossError": ".loop",
    "Runtime": ".distributed",
    "TrainConfig": ".config",
    "TrainResult": ".loop",
    "accumulate_gradients": ".loop",
    "build_scheduler": ".schedules",
    "lr_multiplier": ".schedules",
    "train": ".loop",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .checkpoint import CheckpointError
    from .config import TrainConfig
    from .distributed import Runtime
    from .loop import InterruptedRun, NonFiniteLossError, TrainResult, accumulate_gradients, train
    from .schedules import SCHEDULES, build_scheduler, lr_multiplier

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
