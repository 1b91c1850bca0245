"""Atomic, safe checkpoints: write to a temporary name, fsync, rename; load with ``weights_only``.

A checkpoint holds only tensors and plain Python containers (the config is
stored as JSON text), so ``torch.load(..., weights_only=True)`` can read it
and no arbitrary object is ever unpickled. Files are named
``step_{step:08d}.pt``; the newest loadable one is "latest".
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or made for another model."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.pt"


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` atomically as the checkpoint for ``step``; keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(folder, step)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Completed checkpoints, oldest first (temporary files are ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable ``key: saved -> current`` lines for every differing field."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def check_model_config(ckpt: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    saved = json.loads(ckpt["model_config"])
    diffs = config_differences(saved, current)
    if diffs:
        raise CheckpointError(f"{path} was made for another model config ({'; '.join(diffs)})")
