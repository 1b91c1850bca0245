"""Name-based parameter rules: Muon split, weight-decay split and blockwise lr.

The names follow Hugging Face LLaMA / Qwen2-MoE (``model.embed_tokens``,
``model.layers.{i}.self_attn.q_proj``, ``mlp.gate_proj``, ``mlp.experts.{j}.*``,
``mlp.shared_expert.*``, router ``mlp.gate``, ``*norm*``, ``lm_head``); the
models in :mod:`gradpower.models` use them too, so the rules apply to both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from ..errors import BadInput

NamedParams = Iterable[tuple[str, torch.Tensor]]

#: Blockwise lr multipliers (Wang et al., arXiv 2502.19002) by block name.
BLOCKWISE_LR: dict[str, float] = {
    "embedding": 10.0,
    "attn_qk": 8.0,
    "mlp": 6.0,
    "attn_vo": 4.0,
    "norm": 1.0,
    "head": 1.0,
    "router": 1.0,
    "other": 1.0,
}

_BLOCK_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # Any name component containing "embed" (embed_tokens, word_embeddings, embed_positions), GPT-2's wte/wpe.
    ("embedding", re.compile(r"(^|\.)(\w*embed\w*|wte|wpe)(\.|$)")),
    # Output heads: causal-LM head, HF classification heads (classifier, score) and BERT's pooler.
    ("head", re.compile(r"(^|\.)(lm_head|classifier|score|pooler)(\.|$)")),
    ("norm", re.compile(r"norm")),
    ("router", re.compile(r"(^|\.)(mlp|block_sparse_moe|moe)\.(gate|router|shared_expert_gate)\.")),
    ("attn_qk", re.compile(r"(^|\.)(q_proj|k_proj)\.")),
    ("attn_vo", re.compile(r"(^|\.)(v_proj|o_proj)\.")),
    ("mlp", re.compile(r"(^|\.)(gate_proj|up_proj|down_proj|experts\.\d+|shared_expert)\.")),
]

#: Blocks whose 2-D weights are not hidden-layer matrices: MuonPower gives them to AdamW.
NOT_HIDDEN = ("embedding", "head", "router")


def block_of(name: str) -> str:
    """Return the block a parameter belongs to (a key of :data:`BLOCKWISE_LR`).

    The router ``mlp.gate`` and ``mlp.shared_expert_gate`` are checked before
    the MLP rule, so ``mlp.gate_proj`` (an MLP weight) is never taken for the router.
    """
    for block, pattern in _BLOCK_PATTERNS:
        if pattern.search(name):
            return block
    return "other"


def uses_muon(name: str, param: torch.Tensor) -> bool:
    """Muon takes 2-D hidden weights; everything else goes to AdamW.

    Rule: ``param.ndim == 2``, both dimensions > 1 (a 1 x d vector such as the
    shared-expert gate is not a matrix to orthogonalise), and the name's block
    (:func:`block_of`) is not an embedding, output head or MoE router. Norm
    weights, biases and scalar gates are not 2-D, so they go to AdamW as well.
    """
    return param.ndim == 2 and min(param.shape) > 1 and block_of(name) not in NOT_HIDDEN


def unknown_matrices(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of matrices that :func:`uses_muon` sends to Muon by shape alone (no known block name)."""
    return [n for n, t in named if uses_muon(n, t) and block_of(n) == "other"]


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to matrices (ndim >= 2): not to norms, biases or gates."""
    return param.ndim >= 2


def named_param_list(named_parameters: Any) -> list[tuple[str, torch.Tensor]]:
    """Validate ``model.named_parameters()``-style input and drop frozen tensors."""
    items = list(named_parameters)
    if not items:
        raise BadInput("optimizer got an empty parameter list")
    out = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(
                "expected (name, parameter) pairs as from model.named_parameters(), got "
                f"{type(item).__name__}; names drive the Muon / weight-decay / blockwise-lr split"
            )
        if item[1].requires_grad:
            out.append(item)
    if not out:
        raise BadInput("no parameter requires grad")
    return out


def build_param_groups(
    named_parameters: NamedParams,
    *,
    lr: float,
    weight_decay: float,
    blockwise_lr: bool = False,
    decay_all: bool = False,
) -> list[dict[str, Any]]:
    """Split named parameters into torch param groups (params as ``(name, tensor)``).

    One group per (block lr multiplier, decayed or not), in first-seen order,
    so the result is deterministic for a given model. Each group records its
    ``lr_scale`` (an extra key torch keeps in the state dict).
    """
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, param in named_param_list(named_parameters):
        block = block_of(name)
        scale = BLOCKWISE_LR[block] if blockwise_lr else 1.0
        decay = decay_all or decays(name, param)
        key = (scale, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append((name, param))
    return list(groups.values())
