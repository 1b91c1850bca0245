"""The decoder stack shared by LLaMA and Qwen2-MoE, with every normalisation scheme.

A model is ``model.embed_tokens -> model.layers[i] -> model.norm -> lm_head``
(Hugging Face names). Each layer places its RMSNorms and its GPAS gate by the
config's ``norm`` (see :mod:`gradpower.models.norms`):

- pre:       h = R(x + attn(ln1(x)));           y = R(h + mlp(ln2(h)))
- sandwich:  h = R(x + ln_a(attn(ln1(x))));     y = R(h + ln_m(mlp(ln2(h))))
- post:      h = ln1(R(x) + attn(x));           y = ln2(R(h) + mlp(h))
- deepnorm:  h = ln1(a * R(x) + attn(x));       y = ln2(a * R(h) + mlp(h)),  a = (2N) ** 0.25

where R is the layer's GPAS (one gate shared by both residual points) for
``*_gpas`` schemes and the identity otherwise. Mix-LN runs ``post`` in the
first N/4 layers and ``pre`` after; LNS is ``pre`` with norm weights
initialised to 1/sqrt(layer + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import BadInput
from .config import TransformerConfig
from .gpas import GPAS
from .layers import Attention, RotaryEmbedding
from .norms import deepnorm_alpha, layer_placement, norm_init_value, uses_gpas


@dataclass
class CausalLMOutput:
    """``logits`` (batch, seq, vocab); ``loss`` the mean next-token cross-entropy
    when labels were given; ``aux_loss`` the MoE load-balancing loss (unweighted)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


class DecoderLayer(nn.Module):
    """Attention + MLP with norms and GPAS placed per the layer's scheme."""

    def __init__(self, config: TransformerConfig, layer_idx: int, mlp: nn.Module, qkv_bias: bool = False) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.placement = layer_placement(config.norm, layer_idx, config.n_layers, config.mix_post_layers)
        self.alpha = deepnorm_alpha(config.n_layers) if self.placement == "deepnorm" else 1.0
        self.norm_init = norm_init_value(config.norm, layer_idx)
        self.self_attn = Attention(config.d_model, config.n_heads, qkv_bias=qkv_bias)
        self.mlp = mlp
        self.input_layernorm = nn.RMSNorm(config.d_model, eps=config.rms_eps)
        self.post_attention_layernorm = nn.RMSNorm(config.d_model, eps=config.rms_eps)
        if self.placement == "sandwich":
            self.attn_out_norm = nn.RMSNorm(config.d_model, eps=config.rms_eps)
            self.mlp_out_norm = nn.RMSNorm(config.d_model, eps=config.rms_eps)
        self.gpas = GPAS() if uses_gpas(config.norm) else None

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.gpas(x) if self.gpas is not None else x

    def _mlp(self, x: torch.Tensor, router_logits: list[torch.Tensor]) -> torch.Tensor:
        out = self.mlp(x)
        if isinstance(out, tuple):
            out, logits = out
            router_logits.append(logits)
        return out

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], router_logits: list[torch.Tensor]
    ) -> torch.Tensor:
        if self.placement in ("pre", "sandwich"):
            attn = self.self_attn(self.input_layernorm(x), rope)
            if self.placement == "sandwich":
                attn = self.attn_out_norm(attn)
            h = self._residual(x + attn)
            mlp = self._mlp(self.post_attention_layernorm(h), router_logits)
            if self.placement == "sandwich":
                mlp = self.mlp_out_norm(mlp)
            return self._residual(h + mlp)
        # post / deepnorm: the sublayer reads the unscaled stream; GPAS scales the residual branch.
        h = self.input_layernorm(self.alpha * self._residual(x) + self.self_attn(x, rope))
        return self.post_attention_layernorm(self.alpha * self._residual(h) + self._mlp(h, router_logits))


class Backbone(nn.Module):
    """``embed_tokens``, the decoder ``layers`` and the final ``norm`` (HF's ``model.``)."""

    def __init__(self, config: TransformerConfig, layers: list[DecoderLayer]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(layers)
        self.norm = nn.RMSNorm(config.d_model, eps=config.rms_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)


class CausalLM(nn.Module):
    """Decoder-only language model; subclasses supply each layer's MLP.

    ``forward(input_ids, labels=None)``: labels are aligned with the inputs
    (usually ``labels = input_ids``) and shifted inside, as in Hugging Face;
    positions labelled -100 are ignored. Build on ``torch.device("meta")`` and
    call :meth:`init_weights` after ``to_empty`` to materialise.
    """

    config: TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        layers = [
            DecoderLayer(config, i, self.make_mlp(config), qkv_bias=self.qkv_bias(config))
            for i in range(config.n_layers)
        ]
        self.model = Backbone(config, layers)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()

    def make_mlp(self, config: TransformerConfig) -> nn.Module:
        raise NotImplementedError

    def qkv_bias(self, config: TransformerConfig) -> bool:
        return False

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every parameter per ``config.init``; biases 0, norms per scheme, gates 0.

        ``"normal"``: matrices and embeddings N(0, init_std). ``"gpas"``, the
        GPAS authors' code: embeddings N(0, sqrt(2/5)) ("Spike No More",
        Takase et al.), other matrices N(0, init_std), and for plain DeepNorm
        (not ``deepnorm_gpas``, as in their code) Xavier-normal with gain
        (8N)^-1/4 on v, o and the MLP projections and gain 1 on q and k.
        """
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (GPAS, RotaryEmbedding)):
                module.reset_parameters()
        for layer in self.model.layers:
            for module in layer.children():
                if isinstance(module, nn.RMSNorm):
                    nn.init.constant_(module.weight, layer.norm_init)
        nn.init.ones_(self.model.norm.weight)
        if self.config.init == "gpas":
            nn.init.normal_(self.model.embed_tokens.weight, mean=0.0, std=(2 / 5) ** 0.5)
            if self.config.norm == "deepnorm":
                self._deepnorm_xavier_init()

    def _deepnorm_xavier_init(self) -> None:
        gain = (8 * self.config.n_layers) ** -0.25
        for layer in self.model.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj):
                nn.init.xavier_normal_(proj.weight, gain=1.0)
            for proj in (attn.v_proj, attn.o_proj):
                nn.init.xavier_normal_(proj.weight, gain=gain)
            for name, module in layer.mlp.named_modules():
                if name.rsplit(".", 1)[-1] in ("gate_proj", "up_proj", "down_proj"):
                    nn.init.xavier_normal_(module.weight, gain=gain)

    def _check_input(self, input_ids: torch.Tensor) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise BadInput(
                f"input_ids must be an integer tensor (batch, seq), got {input_ids.dtype} {tuple(input_ids.shape)}"
            )
        seq = input_ids.shape[1]
        if seq > self.config.max_seq_len:
            raise BadInput(f"sequence length {seq} exceeds the configured max_seq_len {self.config.max_seq_len}")
        # Range-check ids on the CPU only: there it costs one reduction and no device sync. On an accelerator
        # it would stall the pipeline every forward; an out-of-range id still fails there (the embedding's
        # device-side check), and the harness's batches are in range by construction.
        if input_ids.numel() and input_ids.device.type == "cpu" and not torch.compiler.is_compiling():
            low, high = torch.aminmax(input_ids)
            low, high = int(low), int(high)
            if low < 0 or high >= self.config.vocab_size:
                raise BadInput(f"token ids must be in [0, {self.config.vocab_size}), got range [{low}, {high}]")

    def aux_loss(self, router_logits: list[torch.Tensor]) -> torch.Tensor | None:
        return None

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> CausalLMOutput:
        self._check_input(input_ids)
        h = self.model.embed_tokens(input_ids)
        rope = self.model.rotary(input_ids.shape[1], h.dtype)
        router_logits: list[torch.Tensor] = []
        for layer in self.model.layers:
            h = layer(h, rope, router_logits)
        logits = self.lm_head(self.model.norm(h))
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise BadInput(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
            # Shift the labels, not the logits: slicing the (large) logits would copy them.
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        return CausalLMOutput(logits=logits, loss=loss, aux_loss=self.aux_loss(router_logits))
