"""build_optimizer: names, weight-decay split, blockwise lr by HF parameter names."""

import pytest
import torch

from gradpower import AdagradPower, AdamPower, GradPower, MuonPower, build_optimizer
from gradpower.optim import OPTIMIZERS, block_of

from .helpers import TinyNet


@pytest.mark.parametrize(
    "name, block",
    [
        ("model.embed_tokens.weight", "embedding"),
        ("model.layers.3.self_attn.q_proj.weight", "attn_qk"),
        ("model.layers.3.self_attn.k_proj.weight", "attn_qk"),
        ("model.layers.3.self_attn.v_proj.weight", "attn_vo"),
        ("model.layers.3.self_attn.o_proj.weight", "attn_vo"),
        ("model.layers.0.mlp.gate_proj.weight", "mlp"),
        ("model.layers.0.mlp.up_proj.weight", "mlp"),
        ("model.layers.0.mlp.down_proj.weight", "mlp"),
        ("model.layers.0.mlp.experts.12.down_proj.weight", "mlp"),
        ("model.layers.0.mlp.shared_expert.gate_proj.weight", "mlp"),
        ("model.layers.0.mlp.gate.weight", "router"),
        ("model.layers.0.mlp.shared_expert_gate.weight", "router"),
        ("model.layers.0.input_layernorm.weight", "norm"),
        ("model.layers.0.post_attention_layernorm.weight", "norm"),
        ("model.norm.weight", "norm"),
        ("lm_head.weight", "head"),
        ("model.layers.0.gpas.gate", "other"),
    ],
)
def test_block_rules_follow_hf_names(name, block):
    assert block_of(name) == block


def test_every_name_builds_the_right_class():
    expected = {
        "adamw": torch.optim.AdamW, "adampower": AdamPower, "muon": MuonPower, "muonpower": MuonPower,
        "adagrad": torch.optim.Adagrad, "adagradpower": AdagradPower, "sgd": torch.optim.SGD, "sgdpower": GradPower,
    }
    assert set(expected) == set(OPTIMIZERS)
    for name, cls in expected.items():
        opt = build_optimizer(name, TinyNet().named_parameters(), lr=1e-3)
        assert type(opt) is cls, name
        ps = {g.get("p") for g in opt.param_groups}
        assert ps == ({1.2} if name.endswith("power") else ({1.0} if name.startswith("muon") else {None})), name


def test_unknown_name_and_option():
    with pytest.raises(ValueError, match="valid names: adamw, adampower"):
        build_optimizer("lion", TinyNet().named_parameters())
    with pytest.raises(TypeError, match="unknown optimizer option"):
        build_optimizer("adamw", TinyNet().named_parameters(), momentom=0.9)
    with pytest.raises(ValueError, match="got -2"):
        build_optimizer("adampower", TinyNet().named_parameters(), p=-2)


def _decay_of(opt):
    return {name: g["weight_decay"] for g in opt.param_groups for name in g["param_names"]}


def test_weight_decay_on_matrices_only_unless_decay_all():
    decay = _decay_of(build_optimizer("adampower", TinyNet().named_parameters(), weight_decay=0.1))
    assert decay["q_proj.weight"] == 0.1 and decay["embed_tokens.weight"] == 0.1
    assert decay["norm.weight"] == 0.0 and decay["norm.bias"] == 0.0 and decay["up_proj.bias"] == 0.0
    everything = _decay_of(build_optimizer("adamw", TinyNet().named_parameters(), decay_all=True))
    assert set(everything.values()) == {0.1}


def test_blockwise_lr_multipliers():
    opt = build_optimizer("muonpower", TinyNet().named_parameters(), lr=1e-3, blockwise_lr=True)
    lr = {name: g["lr"] for g in opt.param_groups for name in g["param_names"]}
    assert lr["embed_tokens.weight"] == pytest.approx(1e-2)
    assert lr["q_proj.weight"] == pytest.approx(8e-3)
    assert lr["up_proj.weight"] == pytest.approx(6e-3)
    assert lr["norm.weight"] == pytest.approx(1e-3)
    assert lr["lm_head.weight"] == pytest.approx(1e-3)
    muon = {name for g in opt.param_groups if g["use_muon"] for name in g["param_names"]}
    assert muon == {"q_proj.weight", "up_proj.weight"}


def test_frozen_parameters_are_left_out():
    model = TinyNet()
    model.lm_head.weight.requires_grad_(False)
    opt = build_optimizer("adamw", model.named_parameters())
    assert all("lm_head.weight" not in g["param_names"] for g in opt.param_groups)


def test_every_optimizer_knob_is_a_config_key_and_a_flag_and_reaches_the_optimizer(tmp_path):
    """OptimizerConfig's fields all come from TrainConfig (TOML keys and flags alike), and the built optimizers
    hold the values given, not the defaults."""
    import dataclasses

    from gradpower.cli import build_parser, config_from_args
    from gradpower.optim import OptimizerConfig
    from gradpower.train.config import TrainConfig

    assert set(TrainConfig().optimizer_options()) == {f.name for f in dataclasses.fields(OptimizerConfig)}
    toml = tmp_path / "knobs.toml"
    toml.write_text('momentum = 0.8\nnesterov = false\nns-dtype = "float32"\ndecay-all = true\n')
    args = build_parser().parse_args(["train", "--config", str(toml), "--optim", "muonpower", "--no-fused",
                                      "--foreach"])
    cfg = config_from_args(args)
    options = cfg.optimizer_options()
    assert {k: options[k] for k in ("momentum", "nesterov", "ns_dtype", "decay_all", "fused", "foreach")} == {
        "momentum": 0.8, "nesterov": False, "ns_dtype": "float32", "decay_all": True, "fused": False,
        "foreach": True}
    opt = build_optimizer("muonpower", TinyNet().named_parameters(), **options)
    muon = next(g for g in opt.param_groups if g["use_muon"])
    adam = next(g for g in opt.param_groups if not g["use_muon"])
    assert (muon["momentum"], muon["nesterov"], muon["ns_dtype"]) == (0.8, False, "float32")
    assert (adam["fused"], adam["foreach"]) == (False, True)
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)  # decay_all: norms and embeddings too
    sgd = build_optimizer("sgd", TinyNet().named_parameters(), **{**options, "fused": None, "foreach": None})
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["nesterov"]) == (0.8, False)
    with pytest.raises(ValueError, match="unknown ns_dtype 'float16'; valid: bfloat16, float32"):
        TrainConfig(ns_dtype="float16")
    with pytest.raises(ValueError, match="momentum must be in"):
        TrainConfig(momentum=1.0)
