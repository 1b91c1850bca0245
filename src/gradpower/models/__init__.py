"""LLaMA and Qwen2-MoE with the papers' presets, GPAS and the normalisation family."""

from .config import LlamaConfig, Qwen2MoeConfig, TransformerConfig, config_from_dict
from .decoder import CausalLM, CausalLMOutput
from .fold import fold_gpas
from .gpas import GPAS
from .hf import from_hf, to_hf
from .llama import Llama
from .norms import NORM_SCHEMES
from .presets import PRESETS, ParamCount, build_model, count_params, preset, preset_lr
from .qwen2moe import Qwen2Moe

__all__ = [
    "GPAS",
    "NORM_SCHEMES",
    "PRESETS",
    "CausalLM",
    "CausalLMOutput",
    "Llama",
    "LlamaConfig",
    "ParamCount",
    "Qwen2Moe",
    "Qwen2MoeConfig",
    "TransformerConfig",
    "build_model",
    "config_from_dict",
    "count_params",
    "fold_gpas",
    "from_hf",
    "preset",
    "preset_lr",
    "to_hf",
]
