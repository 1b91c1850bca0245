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
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..fileio import TMP_MARK, StorageError, atomic_write, os_error_in, remove_stale_tmp, warn
from .config import config_differences

# ``step_N.pt`` (one process, DDP: rank 0 writes it) or ``step_N/`` (FSDP2: Distributed Checkpoint shards
# plus ``extra.pt``, the non-tensor training state).
_NAME = re.compile(r"^step_(\d{8})(\.pt)?$")
EXTRA = "extra.pt"


class CheckpointError(BadInput):
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
    prune(folder, keep)
    return final


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)


def list_checkpoints(folder: Path) -> list[Path]:
    """Completed checkpoints (files or DCP folders), oldest first; temporary ones are ignored."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=step_of)


def remove_partial_saves(folder: Path) -> None:
    """Delete temporary files (and DCP folders) of saves that were killed mid-write."""
    stale = remove_stale_tmp(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if TMP_MARK in path.name and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                stale.append(path)
    for path in stale:
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
    """Load with ``weights_only=True``; a bad file gets a one-line :class:`CheckpointError`.

    For a DCP folder this is its ``extra.pt`` (the tensors load into the
    model and optimizer with :func:`restore_model_and_optimizer`).
    """
    file = path / EXTRA if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
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


def check_model_config(ckpt: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    saved = json.loads(ckpt["model_config"])
    diffs = config_differences(saved, current)
    if diffs:
        raise CheckpointError(f"{path} was made for another model config ({'; '.join(diffs)})")


# -- the training state, in one place for every parallel mode ------------------------------------------


def training_state(step: int, scheduler: Any, data: Any, model_config: dict[str, Any], train_config: dict[str, Any],
                   tokenizer: str, device: torch.device) -> dict[str, Any]:
    """Everything of a checkpoint but the model and optimizer tensors (plain containers only)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {"step": step, "scheduler": scheduler.state_dict(), "data": data.state_dict(), "rng": rng,
            "model_config": json.dumps(model_config), "train_config": json.dumps(train_config), "tokenizer": tokenizer}


def save_training_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Any, state: dict[str, Any], keep: int,
                             rt: Any) -> Path:
    """One process / DDP: rank 0 writes ``step_N.pt``. FSDP2: every rank writes its shards with Distributed
    Checkpoint into a temporary folder, then rank 0 adds ``extra.pt`` and renames it to ``step_N/`` (atomic)."""
    step = int(state["step"])
    if rt.parallel != "fsdp":
        if not rt.is_main:
            return checkpoint_path(folder, step)
        module = getattr(model, "module", model)
        payload = {**state, "model": module.state_dict(), "optimizer": optimizer.state_dict()}
        return save_checkpoint(folder, step, payload, keep)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = folder / f"step_{step:08d}"
    tmp = folder / f".step_{step:08d}{TMP_MARK}"
    if rt.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    rt.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    try:
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp))
    except Exception as exc:
        cause = os_error_in(exc)
        if rt.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if cause is None:
            raise
        raise StorageError(f"{cause.strerror} while writing {final}; earlier checkpoints are intact") from None
    if rt.is_main:
        atomic_write(tmp / EXTRA, lambda f: torch.save(state, f))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        prune(folder, keep)
    rt.barrier()
    return final


def restore_model_and_optimizer(path: Path, ckpt: dict[str, Any], model: torch.nn.Module, optimizer: Any,
                                rt: Any) -> None:
    """Load a checkpoint's tensors into this run's model and optimizer, whatever wrote them.

    ``step_N.pt`` into one process / DDP: ``load_state_dict``. A DCP folder
    into any run (FSDP2 with any process count, or one process): DCP loads
    and reshards. ``step_N.pt`` into FSDP2: the full state dicts are set,
    each rank keeping its shards.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    module = getattr(model, "module", model)
    if path.is_dir():
        import torch.distributed.checkpoint as dcp

        model_state, optim_state = get_state_dict(module, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        return
    if rt.parallel != "fsdp":
        module.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        return
    set_state_dict(module, optimizer, model_state_dict=ckpt["model"], optim_state_dict=_by_name(ckpt["optimizer"]),
                   options=StateDictOptions(full_state_dict=True))


def restore_model(path: Path, ckpt: dict[str, Any], model: torch.nn.Module) -> None:
    """Load only the model weights of a checkpoint (``step_N.pt`` or a DCP folder) into one process's model."""
    if path.is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(path))
        set_model_state_dict(model, state["model"])
        return
    model.load_state_dict(ckpt["model"])


def _by_name(optim_state: dict[str, Any]) -> dict[str, Any]:
    """torch's id-keyed optimizer state dict, keyed by parameter name (the format DCP's helpers use)."""
    names: dict[int, str] = {}
    for group in optim_state["param_groups"]:
        names.update(zip(group["params"], group["param_names"]))
    return {
        "state": {names[i]: value for i, value in optim_state["state"].items()},
        "param_groups": [
            {**{k: v for k, v in g.items() if k != "param_names"}, "params": [names[i] for i in g["params"]]}
            for g in optim_state["param_groups"]
        ],
    }
