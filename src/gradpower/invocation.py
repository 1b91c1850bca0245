"""How this program was started, so that every hint it prints runs when typed as printed.

After ``make demo`` the command lives in ``.venv/bin``; a hint that says
``gradpower train ... --resume`` fails in a shell where that folder is not on
``PATH``. :func:`program` is the spelling that starts the same program from
the current folder: ``gradpower`` when that name on ``PATH`` is this very
script, else the path as typed (``.venv/bin/gradpower``), or
``PYTHON -m gradpower`` when it ran as a module. The CLI records it once in
the environment, so processes it spawns (``--jobs``, submitit) print the same.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

#: The environment variable that carries the spelling to child processes.
PROGRAM_VARIABLE = "GRADPOWER_PROGRAM"
DEFAULT_PROGRAM = "gradpower"


def _typed(path: str) -> str:
    """The shortest spelling of the file ``path`` from the current folder: its bare name when ``PATH`` finds
    exactly this file under it (symlinks are not followed: a venv's python is not the system's), else a path."""
    absolute = os.path.abspath(path)
    found = shutil.which(Path(path).name)
    if found and os.path.abspath(found) == absolute:
        return Path(path).name
    relative = os.path.relpath(absolute)
    if relative.startswith(".."):
        return absolute
    return relative if os.sep in relative else f".{os.sep}{relative}"


def spelling(argv0: str, executable: str = sys.executable) -> str:
    """How to type the program that ``argv0`` (``sys.argv[0]``) names, from the current folder."""
    if Path(argv0).name == "__main__.py":  # python -m gradpower (torchrun -m gradpower too)
        return f"{shlex.quote(_typed(executable))} -m gradpower"
    return shlex.quote(_typed(argv0))


def record_program(argv0: str) -> None:
    """Remember how this process was started (and pass it to the processes it starts)."""
    os.environ[PROGRAM_VARIABLE] = spelling(argv0)


def program() -> str:
    """The program's spelling for printed hints (``gradpower`` unless :func:`record_program` said otherwise)."""
    return os.environ.get(PROGRAM_VARIABLE) or DEFAULT_PROGRAM
