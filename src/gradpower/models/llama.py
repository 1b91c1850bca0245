"""LLaMA (Touvron et al.): RMSNorm, RoPE, SwiGLU, untied embeddings, no biases."""

from __future__ import annotations

from torch import nn

from .config import LlamaConfig, TransformerConfig
from .decoder import CausalLM
from .layers import SwiGLU


class Llama(CausalLM):
    """LLaMA decoder with Hugging Face parameter names; ``Llama(LlamaConfig(...))``."""

    def __init__(self, config: LlamaConfig) -> None:
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"Llama needs a LlamaConfig, got {type(config).__name__}")
        super().__init__(config)

    def make_mlp(self, config: TransformerConfig) -> nn.Module:
        return SwiGLU(config.d_model, config.d_ff)
