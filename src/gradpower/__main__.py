"""``python -m gradpower ...``: the same command as ``gradpower`` (and what ``torchrun -m gradpower`` runs)."""

import sys

from .cli import main

sys.exit(main())
