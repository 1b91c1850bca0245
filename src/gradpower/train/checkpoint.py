"""Atomic, safe checkpoints: write to a temporary name, fsync, rename; load with ``weights_only``.

A checkpoint holds only tensors and plain Python containers (the config is
stored as JSON text), so ``torch.load(..., weights_only=True)`` can read it
and no arbitrary object is ever unpickled. Files are named
``step_{step:08d}.pt``; the newest *loadable* one is "latest": a damaged
newest file (a truncated copy, a bad disk block) falls back to the one before,
with a warning. A file that is not a valid checkpoint is refused in one line,
and never with advice to load it with ``weights_only=False`` (which would run
whatever code a hostile file carries).
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..fileio import StorageError, atomic_write, remove_stale_tmp, warn

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or made for another model."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.pt"


def step_of(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else -1


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` atomically as the checkpoint for ``step``; keep the newest ``keep``.

    On a failed write (full disk, read-only) the temporary file is removed,
    earlier checkpoints are untouched, and :class:`StorageError` says which
    checkpoint is still intact.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {folder} ({exc.strerror})") from None
    previous = list_checkpoints(folder)
    intact = (f"previous checkpoint {step_of(previous[-1])} ({previous[-1]}) is intact" if previous
              else "no earlier checkpoint exists")
    final = atomic_write(checkpoint_path(folder, step), lambda f: torch.save(payload, f), intact=intact)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Completed checkpoints, oldest first (temporary files are ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def remove_partial_saves(folder: Path) -> None:
    """Delete temporary files of saves that were killed mid-write."""
    for path in remove_stale_tmp(folder):
        warn(f"removed {path}, left by an interrupted checkpoint save")


def _reason(exc: BaseException) -> str:
    """A short, safe reason for an unloadable file (torch's own text is long and advises weights_only=False)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        return "it holds objects other than tensors and plain containers; refused without running them"
    if isinstance(exc, (EOFError, zipfile.BadZipFile)) or "zip archive" in text or "central directory" in text:
        return "not a complete torch zip archive: truncated or another kind of file"
    return f"{type(exc).__name__}: {text.splitlines()[0][:120] if text else 'unreadable'}"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True``; a bad file gets a one-line :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        earlier = [p for p in list_checkpoints(path.parent) if step_of(p) < step_of(path)]
        hint = (f"the previous one is step {step_of(earlier[-1])}: delete {path} and resume from it with --resume"
                if earlier else "no earlier checkpoint exists in that folder")
        raise CheckpointError(f"{path} is not a valid gradpower checkpoint ({_reason(exc)}); {hint}") from None
    if not isinstance(ckpt, dict) or "step" not in ckpt:
        raise CheckpointError(f"{path} is not a valid gradpower checkpoint (no training state in it)")
    return ckpt


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint file by name (see :func:`load_latest` for the newest *loadable* one)."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_latest(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, falling back past damaged ones with a warning; None if none exist."""
    found = list_checkpoints(folder)
    if not found:
        return None
    for path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            warn(f"{exc}; trying the previous checkpoint")
    raise CheckpointError(f"no loadable checkpoint in {folder} (all {len(found)} are damaged); start again with "
                          "--overwrite")


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable ``key: saved -> current`` lines for every differing field."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def check_model_config(ckpt: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    saved = json.loads(ckpt["model_config"])
    diffs = config_differences(saved, current)
    if diffs:
        raise CheckpointError(f"{path} was made for another model config ({'; '.join(diffs)})")
