"""The library's log lines on the harness's console.

The library logs through ``logging.getLogger("gradpower....")`` and configures nothing, so an application decides
what it shows (``logging.getLogger("gradpower").setLevel(logging.WARNING)`` silences the one-time notices). The
``gradpower`` command shows them.
"""

from __future__ import annotations

import logging
import sys


class _CurrentStderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a line is logged (a run's worker redirects it to ``train.log``)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def show_library_log() -> None:
    """Show the library's INFO lines (a kernel's one-time build) as ``gradpower: MESSAGE``; once per process."""
    logger = logging.getLogger("gradpower")
    if any(isinstance(handler, _CurrentStderr) for handler in logger.handlers):
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("gradpower: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
