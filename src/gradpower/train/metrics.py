"""Run logging: metrics.jsonl, a progress bar or plain lines, optional TensorBoard / W&B.

Only rank 0 writes; other ranks get a logger that does nothing, so the loop
calls it unconditionally. Each record is appended with one ``write`` of a
whole line; a kill can still tear the last line, so readers skip a torn last
line and a resumed run drops it (saying so) before appending again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import BadInput
from ..extras import require
from ..fileio import StorageError, atomic_write_text, describe_os_error, warn
from .config import resume_command


class MetricsFileError(BadInput):
    """metrics.jsonl is damaged beyond a torn last line."""


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of ``metrics.jsonl`` and whether its last line was torn (a kill mid-write).

    A torn last line is skipped; a bad line anywhere else is an error naming it.
    """
    if not path.exists():
        return [], False
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    records, torn = [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if any(rest.strip() for rest in lines[number:]):
                raise MetricsFileError(f"{path}: line {number} is not valid JSON; the file is damaged") from None
            torn = True
    return records, torn


def truncate_metrics(path: Path, last_step: int) -> float:
    """Keep the records up to ``last_step`` (a resumed run redoes later steps), atomically.

    Returns the run's wall time so far, so ``elapsed_s`` stays cumulative.
    """
    records, torn = read_metrics(path)
    if torn:
        warn(f"{path}: dropped a torn last line (a write interrupted by a kill)")
    kept = [record for record in records if record["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
    return float(kept[-1].get("elapsed_s", 0.0)) if kept else 0.0


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
            require("--tensorboard", "tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            require("--wandb", "wandb")
            import wandb as wandb_module

            self._wandb = wandb_module.init(project="gradpower", dir=str(run_dir), config=wandb_config)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = (json.dumps(record) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)  # one write of the whole line
            finally:
                os.close(fd)
            if written != len(line):
                raise OSError(28, "No space left on device")
        except OSError as exc:
            raise StorageError(
                f"{describe_os_error(exc, self.path, 'writing')} at step {record['step']}; the last "
                f"checkpoint is intact: free space, then continue with: {resume_command(self.path.parent)}"
            ) from None
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
        for key, fmt in (
            ("loss", ".4f"),
            ("val_loss", ".4f"),
            ("lr", ".2e"),
            ("grad_norm", ".3f"),
            ("tokens_per_s", ".0f"),
        ):
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
