"""Files that survive kills and full disks: atomic writes, folder locks, and one-line storage errors.

Every file the harness writes that a later run reads (checkpoints, configs,
shard headers, tokenizers, metrics rewrites) is written to a temporary name in
the same folder, flushed, fsynced and renamed, so a kill at any byte leaves
either the old file or the new one. A failed write removes its temporary file
and raises :class:`StorageError`, whose message names the file, the device and
what is still intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

#: Marks temporary files of interrupted writes; they are removed on the next start.
TMP_MARK = ".tmp"


class StorageError(RuntimeError):
    """Writing failed (full disk, read-only place, permissions) or a folder is locked; one-line message."""


def default_cache_root() -> Path:
    """Where gradpower keeps what it builds or measures once per machine (tokenizers, token shards, MuonPower's
    measured Newton-Schulz dtype): ``$GRADPOWER_CACHE``, else ``~/.cache/gradpower``."""
    return Path(os.environ.get("GRADPOWER_CACHE", Path.home() / ".cache" / "gradpower"))


def warn(message: str) -> None:
    """A one-line warning on stderr (the harness's only non-fatal channel besides its progress)."""
    print(f"gradpower: warning: {message}", file=sys.stderr, flush=True)


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (its nearest existing ancestor)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def describe_os_error(exc: OSError, path: Path, doing: str) -> str:
    """``no space left on /mnt while writing FILE`` and the like, for the common causes."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return f"no space left on {mount_point(path)} while {doing} {path}"
    if exc.errno == errno.EROFS:
        return f"{mount_point(path)} is a read-only file system ({doing} {path})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied while {doing} {path}"
    return f"{exc.strerror or exc} while {doing} {path}"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], *, intact: str = "") -> Path:
    """Write ``path`` through ``write(file)`` atomically; on failure clean up and raise StorageError.

    ``intact`` completes the error message (e.g. "previous checkpoint 200 is intact").
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        cause = os_error_in(exc)
        if cause is None:
            raise
        message = describe_os_error(cause, path, "writing")
        raise StorageError(f"{message}; {intact}" if intact else message) from None
    return path


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or one in its cause/context chain (torch's zip writer wraps
    a full disk as ``RuntimeError: unexpected pos``, with the ``OSError`` as its context)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def atomic_write_text(path: Path, text: str, *, intact: str = "") -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()), intact=intact)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Remove temporary files left by killed writes in ``folder`` (not recursive); return them."""
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if TMP_MARK in path.name and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def folder_lock(folder: Path, *, wait: bool = False, what: str = "run") -> Iterator[None]:
    """An exclusive ``flock`` on ``folder/.lock`` holding this process's pid.

    ``wait=False`` refuses at once with the holder's pid (two runs into one
    folder); ``wait=True`` blocks (two runs building the same cache: the
    second then reuses the first's result). The kernel releases the lock when
    the holder exits, however it dies, so a stale lock file never blocks.
    """
    lock_path = folder / ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, lock_path, "creating")) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if not wait:
                raise StorageError(
                    f"{folder} is in use by another gradpower {what} (pid {holder}); wait for it to finish or "
                    "choose another --out"
                ) from None
            warn(f"waiting for another gradpower process (pid {holder}) that is building {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
