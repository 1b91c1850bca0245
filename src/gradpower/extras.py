"""Optional packages: which extra provides which module, and the check a run makes before it writes anything.

The optimizers need torch alone; the harness is the ``train`` extra, pretrained
tokenizers (the C4 and OpenWebText defaults) the ``hf`` extra, and the two
loggers their own. The install command printed fits how this copy was
installed: from a clone (an editable install) it names the clone's folder, so
typed as printed it works from any directory; from a built distribution it
names the distribution.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import BadInput

#: Top-level modules each extra of ``pyproject.toml`` provides.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("tokenizers", "datasets", "pyarrow", "tqdm", "matplotlib", "safetensors", "scipy"),
    "hf": ("transformers",),
    "tensorboard": ("tensorboard",),
    "wandb": ("wandb",),
    "cluster": ("submitit",),
}


class MissingExtraError(BadInput):
    """A feature was asked for whose optional package is not installed (bad input: exit 2)."""


def source_root() -> Path | None:
    """The clone this copy of gradpower runs from (an editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "gradpower").is_dir() else None


def install_command(extra: str) -> str:
    """A pip command that installs ``extra``: with the clone's path when running from one, else the distribution's
    name with the extra."""
    root = source_root()
    if root is not None:
        return f"pip install -e '{root}[{extra}]'"
    return f"pip install 'gradpower[{extra}]'"


def extra_of(module: str) -> str | None:
    """The extra that provides top-level ``module``, if one does."""
    return next((extra for extra, modules in EXTRA_MODULES.items() if module in modules), None)


def missing_extra_message(feature: str, module: str) -> str:
    """``FEATURE needs the 'EXTRA' extra (module 'M' is not installed): pip install ...``."""
    extra = extra_of(module) or module
    return f"{feature} needs the '{extra}' extra (module {module!r} is not installed): {install_command(extra)}"


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-imported package counts as missing
        return False


def require(feature: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra and its install command if a module is missing."""
    for module in modules:
        if not installed(module):
            raise MissingExtraError(missing_extra_message(feature, module))
