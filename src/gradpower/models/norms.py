"""The normalisation schemes: the ``norm=`` values, where each layer's norms sit, and their constants.

Pre-LN, Post-LN, Sandwich, DeepNorm, Mix-LN and LNS, each optionally with a
GPAS gate per decoder layer (``*_gpas``; the gate itself is
:class:`gradpower.models.gpas.GPAS`).
"""

from __future__ import annotations

import math

from ..errors import BadInput

#: Every ``norm=`` value. ``*_gpas`` adds one GPAS gate per decoder layer.
NORM_SCHEMES = (
    "pre", "pre_gpas", "post", "sandwich", "sandwich_gpas", "deepnorm", "deepnorm_gpas",
    "mix", "mix_gpas", "lns", "lns_gpas",
)


def check_norm(norm: str) -> str:
    if norm not in NORM_SCHEMES:
        raise BadInput(f"unknown norm scheme {norm!r}; valid: {', '.join(NORM_SCHEMES)}")
    return norm


def uses_gpas(norm: str) -> bool:
    return check_norm(norm).endswith("_gpas")


def layer_placement(norm: str, layer_idx: int, n_layers: int, mix_post_layers: int | None = None) -> str:
    """Where the norms sit in layer ``layer_idx``: ``pre``, ``post``, ``sandwich`` or ``deepnorm``.

    Mix-LN uses Post-LN for the first ``mix_post_layers`` layers (default
    ``n_layers // 4``) and Pre-LN after; LNS is Pre-LN placement with scaled
    norm initialisation.
    """
    base = check_norm(norm).removesuffix("_gpas")
    if base == "mix":
        return "post" if layer_idx < (n_layers // 4 if mix_post_layers is None else mix_post_layers) else "pre"
    if base == "lns":
        return "pre"
    return base


def norm_init_value(norm: str, layer_idx: int) -> float:
    """Initial norm weight: 1/sqrt(layer_idx + 1) for LNS, else 1."""
    return 1.0 / math.sqrt(layer_idx + 1) if norm.startswith("lns") else 1.0


def deepnorm_alpha(n_layers: int) -> float:
    """DeepNorm residual multiplier (2N) ** 0.25."""
    return (2.0 * n_layers) ** 0.25
