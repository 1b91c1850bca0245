"""Fold trained GPAS gates into a plain model with identical logits.

GPAS multiplies the residual stream by a constant s_l = 1 - silu(gate_l) at
each of its two points in layer l. With Pre-LN (and LNS, Sandwich) every
sublayer reads the stream through an RMSNorm, which ignores a positive scale,
so the GPAS stream equals c * z for the plain stream z and a running product c.
Dividing each sublayer's output projection (or, for Sandwich, its output
norm's weight) by the running scale c in front of that residual point gives a
model without gates whose stream is z, and whose logits match up to the
norms' eps.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import BadInput
from .decoder import CausalLM

_FOLDABLE = {"pre_gpas": "pre", "lns_gpas": "pre", "sandwich_gpas": "sandwich"}


@torch.no_grad()
def fold_gpas(model: CausalLM) -> CausalLM:
    """Return a copy of ``model`` without GPAS gates and with the same logits.

    Supported for ``pre_gpas``, ``lns_gpas`` (both become ``pre``) and
    ``sandwich_gpas`` (becomes ``sandwich``). Post-LN-style schemes
    (``post``, ``deepnorm``, ``mix``) re-normalise the stream after each
    residual add, so their gates cannot be folded; each scale must be > 0.
    """
    norm = model.config.norm
    if norm not in _FOLDABLE:
        raise BadInput(f"fold_gpas supports {sorted(_FOLDABLE)}; this model uses norm={norm!r}")
    config = dataclasses.replace(model.config, norm=_FOLDABLE[norm])
    plain = type(model)(config).to(next(model.parameters()).device)
    source = {k: v for k, v in model.state_dict().items() if not k.endswith("gpas.gate")}
    plain.load_state_dict(source)
    running = torch.ones((), dtype=torch.float64)
    for layer, plain_layer in zip(model.model.layers, plain.model.layers):
        s = layer.gpas.scale().double()
        if s <= 0:
            raise BadInput(f"layer {layer.layer_idx}: GPAS scale {s.item():.4g} <= 0 cannot be folded")
        for branch_weights in _branch_output_weights(plain_layer):
            for weight in branch_weights:
                weight.div_(running.to(weight.dtype))
            running = running * s
    return plain


def _branch_output_weights(layer: torch.nn.Module) -> list[list[torch.Tensor]]:
    """The weights that set each residual branch's scale: attention's, then the MLP's."""
    if layer.placement == "sandwich":
        return [[layer.attn_out_norm.weight], [layer.mlp_out_norm.weight]]
    mlp = layer.mlp
    if hasattr(mlp, "experts"):
        mlp_out = [e.down_proj.weight for e in mlp.experts] + [mlp.shared_expert.down_proj.weight]
    else:
        mlp_out = [mlp.down_proj.weight]
    return [[layer.self_attn.o_proj.weight], mlp_out]
