"""Run logging: metrics.jsonl, a progress bar or plain lines, optional TensorBoard / W&B.

Only rank 0 writes; other ranks get a logger that does nothing, so the loop
calls it unconditionally.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm


class MetricsLogger:
    """Append one JSON object per logged step; show progress on a TTY, plain lines otherwise."""

    def __init__(
        self, run_dir: Path, total_steps: int, start_step: int = 0, *, enabled: bool = True,
        tensorboard: bool = False, wandb: bool = False, wandb_config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.total = total_steps
        # Plain (non-TTY) progress: about 20 lines a run however often metrics are recorded.
        self._print_every = max(1, total_steps // 20)
        self._bar = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if sys.stderr.isatty():
            self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, desc="train")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            import wandb as wandb_module

            self._wandb = wandb_module.init(project="gradpower", dir=str(run_dir), config=wandb_config)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)
        summary = self._summary(record)
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix_str(summary, refresh=True)
        elif step % self._print_every == 0 or "val_loss" in record or step == self.total:
            print(f"step {step}/{self.total} {summary}", flush=True)

    @staticmethod
    def _summary(record: dict[str, Any]) -> str:
        parts = []
        for key, fmt in (("loss", ".4f"), ("val_loss", ".4f"), ("lr", ".2e"), ("grad_norm", ".3f"), ("tokens_per_s", ".0f")):
            if key in record and record[key] is not None:
                parts.append(f"{key} {record[key]:{fmt}}")
        return " ".join(parts)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
