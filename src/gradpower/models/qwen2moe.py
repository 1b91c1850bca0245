"""Qwen2-MoE: LLaMA attention with q/k/v biases and a mixture-of-experts MLP."""

from __future__ import annotations

import torch
from torch import nn

from .config import Qwen2MoeConfig, TransformerConfig
from .decoder import CausalLM
from .moe import SparseMoE, load_balancing_loss


class Qwen2Moe(CausalLM):
    """Qwen2-MoE decoder with Hugging Face parameter names; ``Qwen2Moe(Qwen2MoeConfig(...))``.

    The forward output's ``aux_loss`` is the unweighted load-balancing loss;
    the training objective is ``loss + config.aux_loss_coef * aux_loss``.
    """

    config: Qwen2MoeConfig

    def __init__(self, config: Qwen2MoeConfig) -> None:
        if not isinstance(config, Qwen2MoeConfig):
            raise TypeError(f"Qwen2Moe needs a Qwen2MoeConfig, got {type(config).__name__}")
        super().__init__(config)

    def make_mlp(self, config: TransformerConfig) -> nn.Module:
        assert isinstance(config, Qwen2MoeConfig)
        return SparseMoE(
            config.d_model, config.n_experts, config.top_k, config.expert_d_ff,
            config.shared_expert_d_ff, config.norm_topk_prob,
        )

    def qkv_bias(self, config: TransformerConfig) -> bool:
        return bool(getattr(config, "qkv_bias", True))

    def aux_loss(self, router_logits: list[torch.Tensor]) -> torch.Tensor | None:
        return load_balancing_loss(router_logits, self.config.n_experts, self.config.top_k)
