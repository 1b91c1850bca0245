"""Model configs: dataclasses with the fields both architectures share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .gpas import check_norm


@dataclass
class TransformerConfig:
    """Decoder-only transformer shape (Hugging Face LLaMA conventions).

    ``norm`` selects the normalisation scheme and whether GPAS is on (see
    :data:`gradpower.models.gpas.NORM_SCHEMES`).
    """

    vocab_size: int = 32100
    d_model: int = 512
    n_layers: int = 8
    n_heads: int = 8
    d_ff: int = 2048
    max_seq_len: int = 256
    norm: str = "pre"
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_norm(self.norm)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model ({self.d_model}) must split into {self.n_heads} heads of even size"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def arch(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **asdict(self)}


@dataclass
class LlamaConfig(TransformerConfig):
    """LLaMA: RMSNorm, RoPE, SwiGLU MLP, no biases, untied embeddings."""

    @property
    def arch(self) -> str:
        return "llama"


@dataclass
class Qwen2MoeConfig(TransformerConfig):
    """Qwen2-MoE: LLaMA attention (with q/k/v biases) and a mixture-of-experts MLP.

    Each layer has ``n_experts`` routed experts of intermediate size
    ``expert_d_ff`` (default ``d_ff // 4``), top-``top_k`` softmax routing,
    and one shared expert of intermediate size ``shared_expert_d_ff``
    (default ``d_ff``) scaled by a sigmoid gate.
    """

    n_experts: int = 16
    top_k: int = 4
    expert_d_ff: int = 0
    shared_expert_d_ff: int = 0
    norm_topk_prob: bool = False
    qkv_bias: bool = True
    aux_loss_coef: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expert_d_ff == 0:
            self.expert_d_ff = self.d_ff // 4
        if self.shared_expert_d_ff == 0:
            self.shared_expert_d_ff = self.d_ff
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k must be in [1, n_experts={self.n_experts}], got {self.top_k}")

    @property
    def arch(self) -> str:
        return "qwen2moe"


def config_from_dict(data: dict[str, Any]) -> TransformerConfig:
    """Inverse of ``to_dict`` (used by checkpoints and run folders)."""
    data = dict(data)
    arch = data.pop("arch", "llama")
    classes = {"llama": LlamaConfig, "qwen2moe": Qwen2MoeConfig}
    if arch not in classes:
        raise ValueError(f"unknown architecture {arch!r}; valid: {sorted(classes)}")
    return classes[arch](**data)
