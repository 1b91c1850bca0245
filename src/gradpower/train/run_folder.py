"""The run folder: who may write into it, and its files after an interruption.

:func:`open_run_folder` is entered before any work is done: it refuses a
``--out`` that is a file, a folder holding a run without ``--resume``, or a
folder holding other files (``--overwrite`` deletes the run's own files and
starts over); a run that stopped before its first step is started again. With
``--resume`` it refuses a folder with nothing to continue and a run that is
finished. It takes an exclusive lock so a second run into the same folder
stops at once naming the first's pid, and removes temporary files of
checkpoint saves that were killed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..fileio import StorageError, describe_os_error, folder_lock, warn
from .checkpoint import list_checkpoints, remove_partial_saves, step_of
from .config import TrainConfig, resume_command, resume_differences
from .metrics import MetricsFileError, read_metrics

#: What a run writes into its folder (``--overwrite`` deletes exactly these).
RUN_FILES = ("config.json", "env.json", "metrics.jsonl", "checkpoints", "tensorboard", "wandb")
#: Files that do not make a folder "not empty" (the lock; the log a compare worker opens before training).
_IGNORED = (".lock", "train.log")
#: Fields of one invocation: a resumed run never inherits them from the saved configuration.
PER_INVOCATION = ("resume", "overwrite", "stop_after")


class RunFolderError(BadInput):
    """``--resume`` of a folder that holds nothing to continue (bad input, exit 2)."""


def saved_config(folder: Path) -> dict[str, Any] | None:
    """The ``train`` section of ``folder/config.json``, or ``None`` if there is no readable one."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and isinstance(config.get("train"), dict) else None


def completed_steps(folder: Path) -> int:
    """The last step recorded in ``metrics.jsonl`` (0 when none is)."""
    try:
        records, _ = read_metrics(folder / "metrics.jsonl")
    except (OSError, MetricsFileError):
        return 0
    return max((int(r["step"]) for r in records if isinstance(r, dict) and "step" in r), default=0)


def holds_run(folder: Path) -> bool:
    """True when ``folder`` holds a gradpower run: a checkpoint, or at least one completed step.

    A folder whose run stopped during start-up (a config, no step done) is not
    a run yet: the same command starts it again there.
    """
    return bool(list_checkpoints(folder / "checkpoints")) or completed_steps(folder) > 0


def _only_run_files(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but files a gradpower run writes (and its config is ours)."""
    names = {entry.name for entry in folder.iterdir()}
    return names <= set(RUN_FILES) | set(_IGNORED) and ("config.json" not in names or saved_config(folder) is not None)


def resume_values(explicit: dict[str, Any]) -> dict[str, Any]:
    """``--resume``: the configuration saved in the run folder, under the fields given explicitly.

    A resumed run keeps its configuration, so only the fields a user types
    again (``--steps``, ``--eval-every``, where to log...) come from the command
    line. The warm-up the run resolved is kept too, so that extending a run
    does not restart its warm-up.
    """
    out = explicit.get("out")
    folder = Path(out) if out else TrainConfig(**explicit).run_dir
    saved = saved_config(folder)
    if saved is None:
        return explicit
    values = {k: v for k, v in TrainConfig.from_dict(saved["train"]).to_dict().items() if k not in PER_INVOCATION}
    resolved, values = saved.get("resolved", {}), {**values, **explicit}
    warmup = resolved.get("warmup")
    if values.get("warmup") is None and isinstance(warmup, int) and warmup < values.get("steps", 0):
        values["warmup"] = warmup  # else the resumed run refuses the changed warm-up, naming it
    return values


def _check_resume(cfg: TrainConfig, folder: Path, at_step: int) -> None:
    """Refuse a resume that would train no further or change the run's configuration, naming every refused
    change at once; warn when ``--steps`` recomputes the lr schedule."""
    saved = saved_config(folder)
    planned = saved["train"].get("steps") if saved else None
    reasons = []
    if at_step >= cfg.steps:
        reasons.append(f"it finished at step {at_step}/{cfg.steps}: pass --steps N with N > {at_step} to train "
                       "further" if planned == cfg.steps else
                       f"it is at step {at_step} already, so --steps {cfg.steps} trains no further: pass --steps N "
                       f"with N > {at_step}")
    changed = resume_differences(saved["train"], cfg) if saved else []
    if changed:
        reasons.append(f"it was trained with another configuration ({'; '.join(changed)}): a resumed run keeps the "
                       "configuration it was started with, so drop those flags (--resume takes the saved values) "
                       "or choose another --out")
    if reasons:
        raise RunFolderError(f"--resume: {folder} refused: " + "; and ".join(reasons))
    if planned is not None and planned != cfg.steps:
        warn(f"--steps {cfg.steps}: {folder} was planned for {planned} steps; its {cfg.schedule} lr schedule is "
             f"recomputed for {cfg.steps} steps from step {at_step + 1} on")


def _check_folder(cfg: TrainConfig, folder: Path) -> bool:
    """Refuse what must not be written into; return True when there are earlier files to delete first."""
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"--out {folder} is an existing file, not a folder: choose another --out")
    ours = folder.is_dir() and holds_run(folder)
    if cfg.resume:
        if not ours:
            what = "no step was completed there" if folder.is_dir() and saved_config(folder) else "nothing to continue"
            raise RunFolderError(f"--resume: {folder} holds no gradpower run ({what}); drop --resume to start one")
        checkpoints = list_checkpoints(folder / "checkpoints")
        if not checkpoints:
            raise RunFolderError(f"--resume: {folder} has no checkpoint (its run stopped at step "
                                 f"{completed_steps(folder)} before writing one): start it over by running the "
                                 "command that started it with --overwrite")
        _check_resume(cfg, folder, step_of(checkpoints[-1]))
        return False
    if not folder.is_dir():
        return False
    occupied = any(entry.name not in _IGNORED for entry in folder.iterdir())
    if not occupied:
        return False
    if cfg.overwrite or (not ours and _only_run_files(folder)):  # a run that stopped during start-up: start it
        return True
    if ours:
        raise StorageError(f"{folder} already holds a run: pass --resume to continue it ({resume_command(folder)}), "
                           "or --overwrite to delete it and start over, or choose another --out")
    raise StorageError(f"{folder} is not empty and holds no gradpower run: choose another --out, or pass --overwrite "
                       f"to write a run there (it deletes only {', '.join(RUN_FILES)})")


@contextlib.contextmanager
def open_run_folder(cfg: TrainConfig, is_main: bool = True) -> Iterator[Path]:
    """Check, create and lock the run folder for this process's run (rank 0 only writes and locks).

    A folder this call created is removed again when the run fails before writing anything into it (bad
    data found while building it, say), so a refused run leaves nothing behind."""
    folder = cfg.run_dir
    if not is_main:
        yield folder
        return
    if (folder / ".lock").is_file():
        with folder_lock(folder):  # another run holding it is refused first, naming its pid
            pass
    overwrite = _check_folder(cfg, folder)
    created = None if folder.exists() else _first_missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, folder, "creating")) from None
    try:
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
    except BaseException:
        if created is not None and {entry.name for entry in folder.iterdir()} <= {".lock"}:
            shutil.rmtree(created, ignore_errors=True)  # the folders it made hold nothing else
        raise


def _first_missing(folder: Path) -> Path:
    """The outermost of ``folder`` and its parents that does not exist yet (what ``mkdir(parents=True)`` makes)."""
    top = folder
    while not top.parent.exists():
        top = top.parent
    return top
