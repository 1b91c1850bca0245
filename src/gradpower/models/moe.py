"""Qwen2-MoE mixture-of-experts MLP and its load-balancing loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import SwiGLU


class SparseMoE(nn.Module):
    """Top-k softmax router over ``n_experts`` SwiGLU experts plus a gated shared expert.

    Routing implementation: the (token, slot) assignments are sorted by expert
    once (``argsort`` of T*k expert ids, one ``bincount`` read back to the host
    per layer), then a Python loop over the *experts* (never over tokens)
    gathers each expert's tokens with one index, runs the expert on that
    contiguous batch, and scatters the weighted result back with ``index_add_``.
    Cost per layer: the expert matmuls on exactly the routed tokens
    (T * k * 3 * d * expert_d_ff multiply-adds), the shared expert on all T
    tokens, O(T * k * d) gather/scatter traffic, and n_experts small launches.
    """

    def __init__(
        self, d_model: int, n_experts: int, top_k: int, expert_d_ff: int, shared_d_ff: int, norm_topk_prob: bool
    ) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, expert_d_ff) for _ in range(n_experts))
        self.shared_expert = SwiGLU(d_model, shared_d_ff)
        self.shared_expert_gate = nn.Linear(d_model, 1, bias=False)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return router logits (T, E), top-k weights (T, k) and expert ids (T, k)."""
        logits = self.gate(x)
        probs = F.softmax(logits, dim=-1, dtype=torch.float32)
        weights, experts = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, weights.to(x.dtype), experts

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the MLP output (same shape as ``hidden``) and the router logits (T, E)."""
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        logits, weights, experts = self.route(x)
        flat_experts = experts.reshape(-1)
        order = torch.argsort(flat_experts, stable=True)
        # One host sync per MoE layer, to size each expert's contiguous batch. The sync-free alternative
        # runs every expert on every token (n_experts / top_k times the expert compute: 2x for the tiny
        # preset, 4-8x for the paper's); on the CPU the sync costs nothing.
        counts = torch.bincount(flat_experts, minlength=self.n_experts).tolist()
        token_of_slot = order // self.top_k
        weight_of_slot = weights.reshape(-1)[order]
        out = torch.zeros_like(x)
        start = 0
        for expert, count in zip(self.experts, counts):
            if count:
                tokens = token_of_slot[start : start + count]
                y = expert(x[tokens]) * weight_of_slot[start : start + count, None]
                out.index_add_(0, tokens, y.to(out.dtype))
            start += count
        out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        return out.reshape(shape), logits


def load_balancing_loss(router_logits: Sequence[torch.Tensor], n_experts: int, top_k: int) -> torch.Tensor:
    """Switch-style auxiliary loss over all layers' router logits pooled (Hugging Face's formula).

    ``n_experts * sum_e f_e * P_e`` where ``f_e`` is the fraction of (token,
    slot) assignments that chose expert e and ``P_e`` the mean router
    probability of e, both over every token of every layer. Equals ``top_k``
    when routing is perfectly uniform.
    """
    logits = torch.cat([r.float() for r in router_logits], dim=0)
    probs = F.softmax(logits, dim=-1)
    chosen = torch.topk(probs, top_k, dim=-1).indices
    fraction = F.one_hot(chosen, n_experts).float().sum(dim=1).mean(dim=0)
    return n_experts * torch.sum(fraction * probs.mean(dim=0))
