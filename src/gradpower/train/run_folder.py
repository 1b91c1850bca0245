"""The run folder: who may write into it, and its files after an interruption.

:func:`open_run_folder` is entered before any work is done: it refuses a
``--out`` that is a file, a folder holding a run without ``--resume``, or a
folder holding other files (``--overwrite`` deletes the run's own files and
starts over), takes an exclusive lock so a second run into the same folder
stops at once naming the first's pid, and removes temporary files of
checkpoint saves that were killed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..fileio import StorageError, describe_os_error, folder_lock
from .checkpoint import list_checkpoints, remove_partial_saves
from .config import TrainConfig

#: What a run writes into its folder (``--overwrite`` deletes exactly these).
RUN_FILES = ("config.json", "env.json", "metrics.jsonl", "checkpoints", "tensorboard", "wandb")
#: Files that do not make a folder "not empty" (the lock; the log a compare worker opens before training).
_IGNORED = (".lock", "train.log")


def holds_run(folder: Path) -> bool:
    """True when ``folder`` holds a gradpower run (a run config or checkpoints)."""
    if list_checkpoints(folder / "checkpoints"):
        return True
    try:
        return "train" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _check_folder(cfg: TrainConfig, folder: Path) -> bool:
    """Refuse what must not be written into; return True when ``--overwrite`` has files to delete."""
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"--out {folder} is an existing file, not a folder: choose another --out")
    ours = folder.is_dir() and holds_run(folder)
    if cfg.resume:
        if not ours:
            raise StorageError(f"--resume: {folder} holds no gradpower run to continue; drop --resume to start one")
        return False
    occupied = folder.is_dir() and any(entry.name not in _IGNORED for entry in folder.iterdir())
    if not occupied or cfg.overwrite:
        return occupied
    if ours:
        raise StorageError(f"{folder} already holds a run: pass --resume to continue it, or --overwrite to delete it "
                           "and start over, or choose another --out")
    raise StorageError(f"{folder} is not empty and holds no gradpower run: choose another --out, or pass --overwrite "
                       f"to write a run there (it deletes only {', '.join(RUN_FILES)})")


@contextlib.contextmanager
def open_run_folder(cfg: TrainConfig, is_main: bool = True) -> Iterator[Path]:
    """Check, create and lock the run folder for this process's run (rank 0 only writes and locks)."""
    folder = cfg.run_dir
    if not is_main:
        yield folder
        return
    overwrite = _check_folder(cfg, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, folder, "creating")) from None
    with folder_lock(folder):
        if overwrite:  # under the lock: never delete the files of a run that is still going
            for name in RUN_FILES:
                path = folder / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        remove_partial_saves(folder / "checkpoints")
        yield folder
