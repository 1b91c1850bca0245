"""Hugging Face ``transformers`` checkpoints: write ours, read theirs.

Parameter names are identical on both sides, so conversion is a config
translation plus a safetensors file. Routed experts are written one module
per expert (``mlp.experts.{j}.gate_proj.weight``), the format of the
published Qwen2-MoE checkpoints, which every ``transformers`` release loads;
the fused 3-D layout (``mlp.experts.gate_up_proj``) is accepted when reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput, MissingFile
from .config import LlamaConfig, Qwen2MoeConfig, TransformerConfig
from .decoder import CausalLM
from .fold import fold_gpas
from .norms import uses_gpas
from .presets import build_model

_WEIGHTS = "model.safetensors"


def _hf_config(config: TransformerConfig) -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("to_hf needs transformers: pip install 'gradpower[hf]'") from exc
    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.d_model, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, num_key_value_heads=config.n_heads,
        max_position_embeddings=config.max_seq_len, rms_norm_eps=config.rms_eps, rope_theta=config.rope_theta,
        tie_word_embeddings=False, initializer_range=config.init_std, hidden_act="silu",
    )
    if isinstance(config, Qwen2MoeConfig):
        return transformers.Qwen2MoeConfig(
            **common, intermediate_size=config.d_ff, moe_intermediate_size=config.expert_d_ff,
            shared_expert_intermediate_size=config.shared_expert_d_ff, num_experts=config.n_experts,
            num_experts_per_tok=config.top_k, norm_topk_prob=config.norm_topk_prob, decoder_sparse_step=1,
            mlp_only_layers=[], use_sliding_window=False, router_aux_loss_coef=config.aux_loss_coef,
            qkv_bias=config.qkv_bias,
        )
    return transformers.LlamaConfig(**common, intermediate_size=config.d_ff, attention_bias=False, mlp_bias=False)


def to_hf(model: CausalLM, directory: str | Path) -> Path:
    """Write ``model`` as a ``transformers`` checkpoint (config.json + model.safetensors).

    GPAS models are folded into plain ones first (:func:`fold_gpas`); other
    schemes than Pre-LN have no ``transformers`` counterpart and are refused.
    """
    if uses_gpas(model.config.norm):
        model = fold_gpas(model)
    if model.config.norm not in ("pre", "lns"):
        raise BadInput(
            f"transformers' LLaMA / Qwen2-MoE are Pre-LN; norm={model.config.norm!r} has no equivalent"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _hf_config(model.config).save_pretrained(out)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    from safetensors.torch import save_file  # the hf/train extra; the optimizers do not need it

    save_file(tensors, str(out / _WEIGHTS), metadata={"format": "pt"})
    return out


def _our_config(hf: dict[str, Any]) -> TransformerConfig:
    rope = hf.get("rope_parameters") or {}
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if hf.get("num_key_value_heads", hf["num_attention_heads"]) != hf["num_attention_heads"]:
        raise BadInput("grouped-query attention checkpoints are not supported (num_key_value_heads != heads)")
    common = dict(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], max_seq_len=hf.get("max_position_embeddings", 2048),
        rms_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=theta, init_std=hf.get("initializer_range", 0.02),
    )
    kind = hf.get("model_type")
    if kind == "llama":
        return LlamaConfig(**common, d_ff=hf["intermediate_size"])
    if kind == "qwen2_moe":
        return Qwen2MoeConfig(
            **common, d_ff=hf["intermediate_size"], n_experts=hf["num_experts"], top_k=hf["num_experts_per_tok"],
            expert_d_ff=hf["moe_intermediate_size"], shared_expert_d_ff=hf["shared_expert_intermediate_size"],
            norm_topk_prob=hf.get("norm_topk_prob", False), qkv_bias=hf.get("qkv_bias", True),
            aux_loss_coef=hf.get("router_aux_loss_coef", 0.001),
        )
    raise BadInput(f"unsupported model_type {kind!r}; expected 'llama' or 'qwen2_moe'")


def _unfuse_experts(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split transformers-5 fused expert tensors into per-expert ``nn.Linear`` weights."""
    out = {}
    for key, value in tensors.items():
        if key.endswith("mlp.experts.gate_up_proj"):
            prefix = key.removesuffix("gate_up_proj")
            for j, fused in enumerate(value):
                gate, up = fused.chunk(2, dim=0)
                out[f"{prefix}{j}.gate_proj.weight"] = gate
                out[f"{prefix}{j}.up_proj.weight"] = up
        elif key.endswith("mlp.experts.down_proj"):
            prefix = key.removesuffix("down_proj")
            for j, weight in enumerate(value):
                out[f"{prefix}{j}.down_proj.weight"] = weight
        else:
            out[key] = value
    return out


def from_hf(directory: str | Path) -> CausalLM:
    """Load a ``transformers`` LLaMA or Qwen2-MoE checkpoint folder as our model."""
    path = Path(directory)
    config_file, weights_file = path / "config.json", path / _WEIGHTS
    for f in (config_file, weights_file):
        if not f.is_file():
            raise MissingFile(f"{f} not found: expected a transformers checkpoint folder")
    config = _our_config(json.loads(config_file.read_text()))
    model = build_model(config)
    from safetensors.torch import load_file

    tensors = _unfuse_experts(load_file(str(weights_file)))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise BadInput(f"checkpoint does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
