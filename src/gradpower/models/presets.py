"""The papers' model presets (SPEC tables) and small CPU presets; parameter counting."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import BadInput
from .config import LlamaConfig, Qwen2MoeConfig, TransformerConfig
from .decoder import CausalLM
from .llama import Llama
from .qwen2moe import Qwen2Moe

T5_VOCAB = 32100
GPT2_VOCAB = 50304


@dataclass(frozen=True)
class Preset:
    """A named config plus the paper's tuned peak lr and its reported size."""

    config: TransformerConfig
    lr_max: float
    reported_params: float | None = None
    reported_activated: float | None = None


def _llama(d: int, ff: int, heads: int, layers: int, vocab: int = T5_VOCAB, seq: int = 256) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab, d_model=d, d_ff=ff, n_heads=heads, n_layers=layers, max_seq_len=seq)


def _moe(
    d: int, ff: int, heads: int, layers: int, experts: int, vocab: int = T5_VOCAB, top_k: int = 4
) -> Qwen2MoeConfig:
    return Qwen2MoeConfig(
        vocab_size=vocab, d_model=d, d_ff=ff, n_heads=heads, n_layers=layers, n_experts=experts, top_k=top_k,
        max_seq_len=256,
    )


PRESETS: dict[str, Preset] = {
    "llama-66m": Preset(_llama(512, 2048, 8, 8), 1e-3, 66e6),
    "llama-0.2b": Preset(_llama(768, 3072, 16, 16), 1e-3, 200e6),
    "llama-0.25b-owt": Preset(_llama(768, 3072, 16, 16, vocab=GPT2_VOCAB, seq=1024), 8e-4, 237e6),
    "llama-0.4b": Preset(_llama(1280, 5120, 16, 12), 6e-4, 400e6),
    "llama-1b": Preset(_llama(1600, 6400, 25, 22), 3e-4, 1004e6),
    "llama-2b": Preset(_llama(2048, 8096, 32, 28), 2e-4, 1994e6),
    "qwen2moe-0.5b": Preset(_moe(768, 3072, 12, 12, 16), 6e-4, 502e6, 247e6),
    "qwen2moe-1b": Preset(_moe(768, 3072, 12, 15, 32), 3e-4, 1040e6, 297e6),
    "qwen2moe-2b": Preset(_moe(1024, 4096, 16, 16, 32), 2e-4, 1945e6, 536e6),
    # CPU presets: minutes on a laptop, vocab sized for a small BPE tokenizer.
    "llama-tiny": Preset(_llama(128, 512, 4, 4, vocab=4096, seq=128), 3e-3),
    "llama-small": Preset(_llama(256, 1024, 8, 6, vocab=8192, seq=256), 2e-3),
    "qwen2moe-tiny": Preset(
        dataclasses.replace(_moe(128, 512, 4, 4, 8, vocab=4096), max_seq_len=128), 3e-3
    ),
    # Compute-optimal proxies: the shapes the rule of .proxy chose from the bundled corpus and the measured cost
    # (the suite recomputes them from the rule's inputs); the CPU presets' lr, which C1 and C2 tune per arm.
    # 20 tokens per parameter at batch 8 x 128: llama-pico 1,283 steps, llama-nano 5,126, llama-micro 7,208.
    "llama-pico": Preset(_llama(32, 128, 2, 2, vocab=512, seq=128), 3e-3),
    "llama-nano": Preset(_llama(64, 256, 4, 2, vocab=1024, seq=128), 3e-3),
    "llama-micro": Preset(_llama(80, 320, 5, 2, vocab=1024, seq=128), 3e-3),
    # A proxy's shape with qwen2moe-tiny's experts (8 routed of d_ff / 4, top 4, one shared of d_ff): C3 trains it on
    # its dense twin's token budget, so the MoE stands at fewer tokens per (total) parameter than the dense model.
    "qwen2moe-pico": Preset(dataclasses.replace(_moe(32, 128, 2, 2, 8, vocab=512), max_seq_len=128), 3e-3),
    "qwen2moe-nano": Preset(dataclasses.replace(_moe(64, 256, 4, 2, 8, vocab=1024), max_seq_len=128), 3e-3),
}


def _lookup(name: str) -> Preset:
    if name not in PRESETS:
        raise BadInput(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset(name: str, vocab_size: int | None = None, **overrides: object) -> TransformerConfig:
    """The config of preset ``name`` (a fresh copy), optionally with another vocab or fields."""
    config = _lookup(name).config
    changes = dict(overrides)
    if vocab_size is not None:
        changes["vocab_size"] = vocab_size
    return dataclasses.replace(config, **changes)


def preset_lr(name: str) -> float:
    """The paper's tuned peak learning rate for preset ``name``."""
    return _lookup(name).lr_max


def build_model(config: TransformerConfig, device: torch.device | str | None = None) -> CausalLM:
    """``Llama`` or ``Qwen2Moe`` for ``config`` (on ``device``; ``"meta"`` allocates nothing)."""
    cls = Qwen2Moe if isinstance(config, Qwen2MoeConfig) else Llama
    with torch.device(device or "cpu"):
        return cls(config)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ParamCount:
    """Total parameters and those active for one token (== total for dense models)."""

    total: int
    activated: int


def count_params(config: TransformerConfig) -> ParamCount:
    """Count parameters by building the model on the meta device (no memory is allocated).

    Activated counts every parameter except the routed experts a token does
    not use: ``(n_experts - top_k)`` experts per layer.
    """
    model = build_model(config, "meta")
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    if isinstance(config, Qwen2MoeConfig):
        per_expert = sum(p.numel() for p in model.model.layers[0].mlp.experts[0].parameters())
        inactive = (config.n_experts - config.top_k) * per_expert * config.n_layers
    return ParamCount(total=total, activated=total - inactive)
