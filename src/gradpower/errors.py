"""What a user got wrong, as one class: the command line prints it as one line and exits 2.

:class:`BadInput` derives from ``ValueError``, so code that catches ``ValueError`` around the library (as around
torch's own argument checks) keeps working. Every check of input the project makes raises it (or one of its
subclasses: a damaged checkpoint, a run folder that holds another run, data that cannot be read, a missing
extra). Any other exception is a bug, and ``gradpower`` lets it keep its traceback (docs/troubleshooting.md).
"""

from __future__ import annotations

__all__ = ["BadInput", "MissingFile"]


class BadInput(ValueError):
    """Input the user can correct (a flag, a file, a folder, a setting): its message says what and how."""


class MissingFile(BadInput, FileNotFoundError):
    """A file or folder the user named is not there (also a ``FileNotFoundError``, for callers of the library)."""
