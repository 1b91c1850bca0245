"""Model configs: dataclasses with the fields both architectures share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import BadInput
from .norms import check_norm

#: ``init=`` values: torch-style N(0, init_std), or the GPAS authors' scheme.
INIT_SCHEMES = ("normal", "gpas")


@dataclass
class TransformerConfig:
    """Decoder-only transformer shape (Hugging Face LLaMA conventions).

    ``norm`` selects the normalisation scheme and whether GPAS is on (see
    :data:`gradpower.models.norms.NORM_SCHEMES`). ``init`` is ``"normal"``
    (every matrix and embedding N(0, init_std)) or ``"gpas"``, the GPAS
    authors' initialisation (see :meth:`CausalLM.init_weights`).
    ``mix_post_layers`` is the number of Post-LN layers of Mix-LN (default
    ``n_layers // 4``).
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
    init: str = "normal"
    mix_post_layers: int | None = None

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if self.init not in INIT_SCHEMES:
            raise BadInput(f"unknown init {self.init!r}; valid: {', '.join(INIT_SCHEMES)}")
        if self.mix_post_layers is not None and not 0 <= self.mix_post_layers <= self.n_layers:
            raise BadInput(f"mix_post_layers must be in [0, n_layers={self.n_layers}], got {self.mix_post_layers}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise BadInput(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise BadInput(
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
            raise BadInput(f"top_k must be in [1, n_experts={self.n_experts}], got {self.top_k}")

    @property
    def arch(self) -> str:
        return "qwen2moe"


def config_from_dict(data: dict[str, Any]) -> TransformerConfig:
    """Inverse of ``to_dict`` (used by checkpoints and run folders)."""
    data = dict(data)
    arch = data.pop("arch", "llama")
    classes = {"llama": LlamaConfig, "qwen2moe": Qwen2MoeConfig}
    if arch not in classes:
        raise BadInput(f"unknown architecture {arch!r}; valid: {sorted(classes)}")
    return classes[arch](**data)
