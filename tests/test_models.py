"""Models: preset sizes, causality, GPAS identities, fold, norm schemes, MoE routing, bad input."""

import math

import pytest
import torch

from gradpower.models import (
    GPAS,
    NORM_SCHEMES,
    PRESETS,
    Llama,
    LlamaConfig,
    Qwen2Moe,
    Qwen2MoeConfig,
    build_model,
    count_params,
    fold_gpas,
    preset,
)
from gradpower.models.moe import load_balancing_loss

PAPER_SIZES = {name: p for name, p in PRESETS.items() if p.reported_params}


def tiny_llama(norm="pre", **kw):
    return Llama(
        LlamaConfig(vocab_size=64, d_model=32, n_layers=4, n_heads=4, d_ff=64, max_seq_len=32, norm=norm, **kw)
    )


def tiny_moe(norm="pre", **kw):
    cfg = dict(
        vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=32, n_experts=6, top_k=2, norm=norm
    )
    cfg.update(kw)
    return Qwen2Moe(Qwen2MoeConfig(**cfg))


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_paper_preset_parameter_counts(name):
    info = PAPER_SIZES[name]
    counts = count_params(info.config)
    tolerance = 0.05 if name == "llama-0.25b-owt" else 0.02
    assert abs(counts.total - info.reported_params) / info.reported_params < tolerance
    if info.reported_activated:
        assert abs(counts.activated - info.reported_activated) / info.reported_activated < 0.02
    else:
        assert counts.activated == counts.total


def test_count_params_matches_a_materialised_model():
    cfg = preset("qwen2moe-tiny")
    model = build_model(cfg)
    assert count_params(cfg).total == sum(p.numel() for p in model.parameters())
    per_expert = 3 * cfg.d_model * cfg.expert_d_ff
    assert (
        count_params(cfg).activated == count_params(cfg).total - (cfg.n_experts - cfg.top_k) * per_expert * cfg.n_layers
    )


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="llama-66m"):
        preset("llama-7b")


def test_preset_vocab_override_and_meta_build():
    cfg = preset("llama-1b", vocab_size=50304)
    assert cfg.vocab_size == 50304 and preset("llama-1b").vocab_size == 32100
    model = build_model(cfg, "meta")
    assert model.lm_head.weight.is_meta and model.lm_head.weight.shape == (50304, 1600)
    model = build_model(preset("qwen2moe-2b"), "meta")
    assert all(p.is_meta for p in model.parameters())


def test_hf_parameter_names():
    names = {n for n, _ in tiny_moe("pre_gpas").named_parameters()}
    for expected in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate.weight",
        "model.layers.0.mlp.experts.5.down_proj.weight",
        "model.layers.0.mlp.shared_expert.up_proj.weight",
        "model.layers.0.mlp.shared_expert_gate.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.1.gpas.gate",
        "model.norm.weight",
        "lm_head.weight",
    ]:
        assert expected in names
    llama_names = {n for n, _ in tiny_llama().named_parameters()}
    assert "model.layers.3.mlp.gate_proj.weight" in llama_names and not any("bias" in n for n in llama_names)


@pytest.mark.parametrize("make", [tiny_llama, tiny_moe])
def test_causality(make):
    model = make().eval()
    x = torch.randint(0, 64, (2, 20))
    t = 9
    y = x.clone()
    y[:, t + 1 :] = torch.randint(0, 64, (2, 20 - t - 1))
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_loss_is_shifted_next_token_cross_entropy_with_ignore_index():
    model = tiny_llama()
    x = torch.randint(0, 64, (2, 12))
    labels = x.clone()
    labels[0, 5:] = -100
    out = model(x, labels=labels)
    logits = out.logits[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    expected = -torch.log_softmax(logits.float(), -1)[keep].gather(-1, target[keep][:, None]).mean()
    torch.testing.assert_close(out.loss, expected)


def test_gpas_forward_and_gradients_against_hand_expression():
    gpas = GPAS()
    with torch.no_grad():
        gpas.gate.fill_(0.7)
    x = torch.randn(3, 5, requires_grad=True)
    grad_out = torch.randn(3, 5)
    y = gpas(x)
    silu = 0.7 / (1 + math.exp(-0.7))
    torch.testing.assert_close(y, (1 - silu) * x)
    y.backward(grad_out)
    torch.testing.assert_close(x.grad, grad_out)  # identity: the stop-gradient keeps the full gradient
    sigma = 1 / (1 + math.exp(-0.7))
    dsilu = sigma * (1 + 0.7 * (1 - sigma))
    expected_gate_grad = -dsilu * (x.detach() * grad_out).sum()
    torch.testing.assert_close(gpas.gate.grad, expected_gate_grad)


def test_gpas_starts_as_identity():
    import gradpower

    assert gradpower.GPAS is GPAS
    gpas = GPAS()
    x = torch.randn(4)
    assert gpas.gate.item() == 0.0 and torch.equal(gpas(x), x)


def _set_random_gates(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.gpas.gate.copy_(torch.rand((), generator=gen) * 1.5 - 0.5)


@pytest.mark.parametrize(
    "make, norm",
    [(tiny_llama, "pre_gpas"), (tiny_llama, "lns_gpas"), (tiny_llama, "sandwich_gpas"), (tiny_moe, "pre_gpas")],
)
def test_fold_gpas_preserves_logits(make, norm):
    # RMSNorm's eps is the only thing that breaks exact scale invariance: make it negligible.
    model = make(norm, rms_eps=1e-12).eval()
    _set_random_gates(model)
    plain = fold_gpas(model).eval()
    assert not any("gpas" in n for n, _ in plain.named_parameters())
    assert plain.config.norm in ("pre", "sandwich")
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, model(x).logits, rtol=1e-4, atol=1e-4)


def test_fold_gpas_refuses_post_ln_schemes():
    with pytest.raises(ValueError, match="fold_gpas supports"):
        fold_gpas(tiny_llama("deepnorm_gpas"))


@pytest.mark.parametrize("norm", NORM_SCHEMES)
def test_every_norm_scheme_trains(norm):
    torch.manual_seed(0)
    model = tiny_llama(norm)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 64, (4, 16))
    losses = []
    for _ in range(12):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.3, losses


def test_scheme_structure():
    deep = tiny_llama("deepnorm")
    assert deep.model.layers[0].alpha == pytest.approx((2 * 4) ** 0.25)
    mix = Llama(LlamaConfig(vocab_size=64, d_model=32, n_layers=8, n_heads=4, d_ff=64, norm="mix_gpas"))
    assert [layer.placement for layer in mix.model.layers] == ["post"] * 2 + ["pre"] * 6
    lns = tiny_llama("lns")
    for i, layer in enumerate(lns.model.layers):
        assert torch.allclose(layer.input_layernorm.weight, torch.full((32,), 1 / math.sqrt(i + 1)))
    assert sum(1 for n, _ in tiny_llama("sandwich").named_parameters() if "out_norm" in n) == 8
    assert sum(1 for n, _ in tiny_llama("pre_gpas").named_parameters() if n.endswith("gpas.gate")) == 4


def test_moe_routes_exactly_top_k_and_matches_per_token_reference():
    model = tiny_moe()
    moe = model.model.layers[0].mlp
    x = torch.randn(10, 32)
    logits, weights, experts = moe.route(x)
    probs = torch.softmax(x @ moe.gate.weight.T, dim=-1)
    ref_w, ref_e = probs.topk(2, dim=-1)
    assert torch.equal(experts, ref_e) and experts.shape == (10, 2)
    assert all(len(set(row.tolist())) == 2 for row in experts)
    torch.testing.assert_close(weights, ref_w)
    out, _ = moe(x[None])
    expected = torch.stack([
        sum(ref_w[t, s] * moe.experts[int(ref_e[t, s])](x[t]) for s in range(2))
        + torch.sigmoid(moe.shared_expert_gate(x[t])) * moe.shared_expert(x[t])
        for t in range(10)
    ])
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-6)


def test_aux_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.5, 0.4, 0.3]])
    probs = torch.softmax(logits, -1)
    # top-2 of each row by hand: rows choose {0,1}, {1,2}, {2,0}, {0,1}
    chosen = [{0, 1}, {1, 2}, {0, 2}, {0, 1}]
    fraction = torch.tensor([sum(e in c for c in chosen) / 4 for e in range(3)])
    expected = 3 * (fraction * probs.mean(0)).sum()
    torch.testing.assert_close(load_balancing_loss([logits[:2], logits[2:]], 3, 2), expected)
    uniform = torch.zeros(8, 4)
    assert load_balancing_loss([uniform], 4, 2).item() == pytest.approx(2.0)


def test_every_routed_expert_gets_gradient():
    torch.manual_seed(0)
    model = tiny_moe(n_experts=4, top_k=2)
    x = torch.randint(0, 64, (4, 24))
    out = model(x, labels=x)
    (out.loss + 0.01 * out.aux_loss).backward()
    moe = model.model.layers[0].mlp
    with torch.no_grad():
        h = model.model.layers[0].post_attention_layernorm(
            model.model.embed_tokens(x) + model.model.layers[0].self_attn(
                model.model.layers[0].input_layernorm(model.model.embed_tokens(x)),
                model.model.rotary(24, torch.float32)))
        _, _, experts = moe.route(h.reshape(-1, 32))
    for j, expert in enumerate(moe.experts):
        routed = bool((experts == j).any())
        grad = expert.down_proj.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == routed, j
    assert moe.gate.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [tiny_llama, tiny_moe])
def test_bad_input_is_refused_clearly(make):
    model = make()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 64\)"):
        model(torch.tensor([[1, 64]]))
    with pytest.raises(ValueError, match=r"token ids must be in"):
        model(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="exceeds the configured max_seq_len 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown norm scheme 'preln'"):
        LlamaConfig(norm="preln")
    with pytest.raises(ValueError, match="heads"):
        LlamaConfig(d_model=30, n_heads=4)
