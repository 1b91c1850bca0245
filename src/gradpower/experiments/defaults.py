"""The embedded default of ``gradpower compare`` (no arguments, ``make demo``), apart from the machinery that runs it,
so the command's help can state it without loading the harness."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import CompareSpec

#: The embedded default (``gradpower compare`` with no arguments, ``make demo``): the compute-optimal proxy
#: llama-nano at 20 training tokens per parameter (5,126 steps of 8 x 128 tokens, 2.6 passes over the bundled corpus),
#: wsd to the end of its decay. Chosen among four candidates (wsd and cos, batch 8 and 16) by the proxy pilot's rule
#: (experiments/proxy-pilot/choose.py; docs/experiments.md, "How the default was chosen: the proxy pilot"): every
#: candidate fits the demo's budget, then the smallest predicted half-width; run on fresh seeds.
DEFAULT_BASE: dict[str, Any] = {
    "preset": "llama-nano", "schedule": "wsd", "batch_size": 8, "seq_len": 128, "steps": 5126,
}
DEFAULT_SEEDS = 4
#: Each arm's name and settings.
DEFAULT_ARMS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("adamw", {"optim": "adamw"}), ("adampower p=1.2", {"optim": "adampower", "p": 1.2}))


def default_spec() -> CompareSpec:
    from .spec import Arm, CompareSpec

    return CompareSpec(base=dict(DEFAULT_BASE), arms=[Arm(name, dict(settings)) for name, settings in DEFAULT_ARMS],
                          seeds=DEFAULT_SEEDS)


def default_text() -> str:
    """The embedded default in words (``compare --help``), from the values the code runs."""
    b = DEFAULT_BASE
    return (f"{' vs '.join(name for name, _ in DEFAULT_ARMS)} on the bundled corpus: {b['preset']}, {b['schedule']} "
            f"schedule, batch {b['batch_size']} x {b['seq_len']}, {b['steps']} steps, seeds 0-{DEFAULT_SEEDS - 1} "
            f"({DEFAULT_SEEDS} seeds)")
