"""Learning-rate schedules as ``LambdaLR`` multipliers of each group's base lr.

Because they multiply every param group's own lr, one schedule drives every
optimizer here, including MuonPower's two halves and blockwise-lr groups.
With W warm-up steps, T total steps and m = ``min_ratio``:

- warm-up (s < W): (s + 1) / W, so step W - 1 reaches the peak;
- ``cos``: 1 at s = W, cosine down to m at the last step s = T - 1;
- ``wsd``: 1 until the decay start D = round(stable_frac * T), then linear
  down to m at s = T - 1;
- ``constant``: 1 after warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..errors import BadInput

SCHEDULES = ("cos", "wsd", "constant")


def lr_multiplier(
    schedule: str, *, warmup: int, total: int, min_ratio: float = 0.1, stable_frac: float = 0.8
) -> Callable[[int], float]:
    """Return ``f(step) -> multiplier`` for the schedule (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise BadInput(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if total <= 0 or warmup < 0 or warmup >= total and schedule != "constant":
        raise BadInput(f"need 0 <= warmup < steps, got warmup={warmup}, steps={total}")
    if not 0 <= min_ratio <= 1:
        raise BadInput(f"min_ratio must be in [0, 1], got {min_ratio}")
    if not 0 <= stable_frac <= 1:
        raise BadInput(f"stable_frac must be in [0, 1], got {stable_frac}")
    last = total - 1
    decay_start = max(warmup, round(stable_frac * total))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "cos":
            progress = (step - warmup) / max(1, last - warmup)
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, last - decay_start)
        return 1.0 - (1.0 - min_ratio) * min(1.0, progress)

    return multiplier


def build_scheduler(optimizer: Optimizer, schedule: str, **kwargs: float | int) -> LambdaLR:
    return LambdaLR(optimizer, lr_multiplier(schedule, **kwargs))  # type: ignore[arg-type]


def restore_scheduler(scheduler: LambdaLR, state: dict) -> None:
    """Load ``state`` and set every group's lr for the restored step from this scheduler's own schedule.

    The optimizer's state dict brings back the lr the saved schedule had set for
    the next step; when a resumed run changed ``steps`` the schedule is
    recomputed, and the first resumed step must already follow it. With the
    same schedule the value is the same (the formula is LambdaLR's own).
    """
    scheduler.load_state_dict(state)
    step = scheduler.last_epoch
    for group, base, multiplier in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * multiplier(step)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
