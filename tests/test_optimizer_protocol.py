"""The power optimizers behave like torch optimizers: hooks, copies, pickling, state dicts, options."""

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from gradpower import AdagradPower, AdamPower, GradPower, MuonPower, build_optimizer
from gradpower.models import build_model, preset

from .helpers import TinyNet, assert_params_close, batches, loss_of, reference_phi, run_reference, twin

ADAM_KW = dict(lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def train(model, opt, data):
    for batch in data:
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()


def reference_adamw(model, data, p=1.2, **kw):
    """AdamW on hand-transformed gradients (float64 formula)."""
    run_reference(model, torch.optim.AdamW(model.parameters(), **{**ADAM_KW, **kw}), data, lambda g: p)


POWER_OPTIMIZERS = {
    "adampower": lambda m: AdamPower(m.parameters(), lr=1e-2),
    "adagradpower": lambda m: AdagradPower(m.parameters(), lr=1e-2),
    "muonpower": lambda m: MuonPower(m.named_parameters(), lr=1e-2),
    "gradpower_sgd": lambda m: GradPower(torch.optim.SGD(m.parameters(), lr=1e-2), p=1.2),
    "gradpower_adamw": lambda m: GradPower(torch.optim.AdamW(m.parameters(), lr=1e-2), p=1.2),
    "sgdpower": lambda m: build_optimizer("sgdpower", m.named_parameters(), lr=1e-2),
}


@pytest.mark.parametrize("kind", sorted(POWER_OPTIMIZERS))
def test_every_step_hook_fires_exactly_once_per_step(kind):
    # Plain torch optimizers first: their classes' step wrappers are then installed in this
    # process, which is what made delegating optimizers fire hooks twice.
    for base in (torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad):
        base(TinyNet().parameters(), lr=1e-3).step()
    model = TinyNet()
    opt = POWER_OPTIMIZERS[kind](model)
    calls = {"global_pre": [], "global_post": [], "pre": [], "post": []}
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: calls["global_pre"].append(o)),
        register_optimizer_step_post_hook(lambda o, a, k: calls["global_post"].append(o)),
        opt.register_step_pre_hook(lambda o, a, k: calls["pre"].append(o)),
        opt.register_step_post_hook(lambda o, a, k: calls["post"].append(o)),
    ]
    try:
        train(model, opt, batches(3))
    finally:
        for handle in handles:
            handle.remove()
    assert {k: len(v) for k, v in calls.items()} == {"global_pre": 3, "global_post": 3, "pre": 3, "post": 3}
    assert all(o is opt for o in calls["pre"] + calls["post"])  # hooks on the wrapper see the wrapper


@pytest.mark.parametrize("make, transformed", [
    (lambda m: AdamPower(m.parameters(), lr=1e-2, one_pass=False), False),
    (lambda m: AdamPower(m.parameters(), lr=1e-2, one_pass=True), False),
    (lambda m: AdamPower(m.parameters(), lr=1e-2, foreach=True), False),
    (lambda m: MuonPower(m, lr=1e-2), False),
    (lambda m: MuonPower(m, lr=1e-2, adam_fused=True), False),
    (lambda m: GradPower(torch.optim.AdamW(m.parameters(), lr=1e-2)), True),
], ids=["adampower-separate", "adampower-one-pass", "adampower-foreach", "muonpower", "muonpower-adam-fused",
        "wrapper"])
def test_which_gradient_each_pre_hook_sees(make, transformed):
    """AdamPower and MuonPower apply phi_p inside their updates: every pre-hook sees the raw gradient, on every
    route. The wrapper's phi_p is a pre-hook: global pre-hooks see the raw gradient, its own later ones phi_p(g)."""
    model = TinyNet()
    opt = make(model)
    seen = {}

    def record(key):
        def hook(optimizer, args, kwargs):
            seen[key] = model.q_proj.weight.grad.clone()
        return hook

    handle = register_optimizer_step_pre_hook(record("global"))
    opt.register_step_pre_hook(record("local"))
    try:
        train(model, opt, batches(1))
    finally:
        handle.remove()
    expected = reference_phi(seen["global"], 1.2) if transformed else seen["global"]
    torch.testing.assert_close(seen["local"], expected)


@pytest.mark.parametrize("make", [
    lambda ps: AdamPower(ps, differentiable=True),
    lambda ps: AdagradPower(ps, differentiable=True),
    lambda ps: GradPower(torch.optim.AdamW(ps, differentiable=True)),
])
def test_differentiable_mode_is_refused_with_the_reason(make):
    with pytest.raises(ValueError, match="differentiable=True.*outside autograd"):
        make(TinyNet().parameters())


def test_wrapping_twice_is_refused():
    opt = AdamPower(TinyNet().parameters())
    with pytest.raises(TypeError, match="already applies GradPower"):
        GradPower(opt)
    wrapped = GradPower(torch.optim.SGD(TinyNet().parameters(), lr=0.1))
    with pytest.raises(TypeError, match="already applies GradPower"):
        GradPower(wrapped.optimizer)


def test_wrapper_state_dict_and_load_hooks_fire_with_the_wrapper():
    model = TinyNet()
    opt = GradPower(torch.optim.AdamW(model.parameters(), lr=1e-2), p=1.3)
    train(model, opt, batches(2))
    fired = []
    opt.register_state_dict_pre_hook(lambda o: fired.append(("sd_pre", o)))
    opt.register_state_dict_post_hook(lambda o, sd: fired.append(("sd_post", o)) or {**sd, "extra": 1})
    opt.register_load_state_dict_pre_hook(lambda o, sd: fired.append(("load_pre", o)))
    opt.register_load_state_dict_post_hook(lambda o: fired.append(("load_post", o)))
    state = opt.state_dict()
    assert state["extra"] == 1
    opt.load_state_dict(state)
    assert [name for name, _ in fired] == ["sd_pre", "sd_post", "load_pre", "load_post"]
    assert all(o is opt for _, o in fired)
    assert [g["p"] for g in opt.param_groups] == [1.3]


@pytest.mark.parametrize("kind", sorted(POWER_OPTIMIZERS))
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_training_exactly_like_the_original(kind, how):
    """EMA, model soups and multiprocessing copy optimizers: the copy must still apply phi_p."""
    model = TinyNet()
    opt = POWER_OPTIMIZERS[kind](model)
    train(model, opt, batches(2))
    bundle = {"model": model, "opt": opt}
    clone = copy.deepcopy(bundle) if how == "deepcopy" else pickle.loads(pickle.dumps(bundle))
    data = batches(4, seed=7)
    train(model, opt, data)
    train(clone["model"], clone["opt"], data)
    for (name, a), (_, b) in zip(model.named_parameters(), clone["model"].named_parameters()):
        assert torch.equal(a, b), name


def test_deepcopied_adampower_still_powers_the_gradient():
    a = TinyNet()
    b = twin(a)
    opt = copy.deepcopy(AdamPower(a.parameters(), **ADAM_KW))
    opt.param_groups[0]["params"] = list(a.parameters())  # point the copy at the live model
    opt.state.clear()
    train(a, opt, batches(5))
    reference_adamw(b, batches(5))
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


def test_loading_an_adamw_state_dict_keeps_the_fused_path_and_the_math():
    a = TinyNet()
    b = twin(a)
    plain = torch.optim.AdamW(a.parameters(), **ADAM_KW)  # fused=None in its groups
    train(a, plain, batches(3))
    reference = torch.optim.AdamW(b.parameters(), **ADAM_KW)
    train(b, reference, batches(3))
    one_pass = AdamPower(twin(a).parameters(), **ADAM_KW)
    one_pass.load_state_dict(plain.state_dict())
    assert one_pass.one_pass is True  # the default path survives the load too
    opt = AdamPower(a.parameters(), **ADAM_KW, one_pass=False)
    assert opt.param_groups[0]["fused"] is True
    opt.load_state_dict(plain.state_dict())
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["p"] == 1.2
    assert opt.state[a.q_proj.weight]["step"].item() == 3
    train(a, opt, batches(4, seed=5))
    run_reference(b, reference, batches(4, seed=5), lambda g: 1.2)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


def test_muonpower_defaults_carry_momentum_and_betas_so_one_cycle_cycles_beta1():
    model = TinyNet()
    opt = MuonPower(model.named_parameters(), lr=1e-2)
    assert opt.defaults["momentum"] == 0.95 and opt.defaults["betas"] == (0.9, 0.95)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10, cycle_momentum=True)
    beta1 = []
    for batch in batches(5):
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
        sched.step()
        beta1.append(opt.param_groups[0]["betas"][0])
    assert len(set(beta1)) > 1
    assert all(g["momentum"] == 0.95 for g in opt.param_groups)


def test_muonpower_accepts_unnamed_groups_with_the_model_and_explains_otherwise():
    model = TinyNet()
    groups = [{"params": [model.q_proj.weight, model.up_proj.weight], "weight_decay": 0.1},
              {"params": [model.embed_tokens.weight, model.up_proj.bias, model.norm.weight, model.norm.bias,
                          model.lm_head.weight], "weight_decay": 0.0}]
    opt = MuonPower(groups, lr=1e-2, model=model)
    muon = {n for g in opt.param_groups if g["use_muon"] for n in g["param_names"]}
    assert muon == {"q_proj.weight", "up_proj.weight"}
    train(model, opt, batches(2))
    with pytest.raises(TypeError, match="needs parameter names.*MuonPowerFactory"):
        MuonPower(groups, lr=1e-2)
    assert {n for g in MuonPower(model).param_groups if g["use_muon"] for n in g["param_names"]} == muon


class GPT2Like(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(20, 8)
        self.wpe = nn.Embedding(16, 8)
        self.h = nn.ModuleList([nn.ModuleDict({"c_attn": nn.Linear(8, 24), "c_proj": nn.Linear(8, 8)})])
        self.pooler = nn.Linear(8, 8)
        self.classifier = nn.Linear(8, 3)


def test_muonpower_warns_on_unknown_names_and_never_gives_embeddings_or_heads_to_muon():
    model = GPT2Like()
    with pytest.warns(UserWarning, match=r"2 matrices have names outside.*h\.0\.c_attn\.weight"):
        opt = MuonPower(model.named_parameters())
    muon = {n for g in opt.param_groups if g["use_muon"] for n in g["param_names"]}
    assert muon == {"h.0.c_attn.weight", "h.0.c_proj.weight"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explicit = MuonPower(model.named_parameters(), muon_params=["h.0.c_attn.weight"])
        by_rule = MuonPower(model.named_parameters(), muon_params=lambda name, t: name.startswith("h.") and t.ndim == 2)
    assert {n for g in explicit.param_groups if g["use_muon"] for n in g["param_names"]} == {"h.0.c_attn.weight"}
    assert {n for g in by_rule.param_groups if g["use_muon"] for n in g["param_names"]} == muon


def test_muonpower_gives_moe_router_and_shared_expert_gate_to_adamw():
    model = build_model(preset("qwen2moe-tiny", vocab_size=64, max_seq_len=8, n_layers=1))
    opt = MuonPower(model.named_parameters())
    adam = {n for g in opt.param_groups if not g["use_muon"] for n in g["param_names"]}
    assert {"model.layers.0.mlp.gate.weight", "model.layers.0.mlp.shared_expert_gate.weight"} <= adam
    muon = {n for g in opt.param_groups if g["use_muon"] for n in g["param_names"]}
    assert "model.layers.0.mlp.experts.0.up_proj.weight" in muon and "lm_head.weight" not in muon


def test_compiled_step_matches_eager_without_recompiling_under_a_scheduler():
    """The documented recipe: a tensor lr, so LambdaLR changes a value, not a guard."""
    a = TinyNet()
    b = twin(a)
    opt_a = AdamPower(a.parameters(), lr=torch.tensor(1e-2))
    opt_b = AdamPower(b.parameters(), lr=torch.tensor(1e-2))
    sched_a = torch.optim.lr_scheduler.LambdaLR(opt_a, lambda s: 1 / (1 + s))
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda s: 1 / (1 + s))
    compiled_step = torch.compile(opt_a.step)
    for i, batch in enumerate(batches(6)):
        for model in (a, b):
            model.zero_grad()
            loss_of(model, batch).backward()
        if i < 2:
            compiled_step()
        else:
            with torch.compiler.set_stance("fail_on_recompile"):
                compiled_step()
        opt_b.step()
        sched_a.step()
        sched_b.step()
    assert_params_close(a, b, rtol=1e-6, atol=1e-7)
