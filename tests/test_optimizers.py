"""Each power optimizer against torch's own optimizer run on hand-transformed gradients."""

import json
from pathlib import Path

import pytest
import torch

from gradpower import AdagradPower, AdamPower, GradPower, MuonPower
from gradpower.optim import routes
from gradpower.optim.muonpower import default_ns_dtype
from gradpower.optim.param_groups import uses_muon

from .helpers import TinyNet, assert_params_close, batches, loss_of, reference_phi, run_reference, twin


def run_ours(model, opt, data, scheduler=None):
    for batch in data:
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


ADAM_KW = dict(lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


PATHS = [dict(fused=True), dict(foreach=True), dict(foreach=False, fused=False), dict(one_pass=True), {},
         dict(one_pass=False)]


@pytest.fixture(autouse=True)
def _small_tensors_through_the_one_pass_kernel(monkeypatch):
    """TinyNet's tensors are below the one-pass kernel's size threshold: the one-pass paths take them anyway."""
    monkeypatch.setattr(routes, "MIN_NUMEL", 1)


@pytest.mark.parametrize("path", PATHS)
def test_adampower_p1_equals_adamw(path):
    a = TinyNet()
    b = twin(a)
    run_ours(a, AdamPower(a.parameters(), p=1.0, **ADAM_KW, **path), batches(100))
    run_ours(b, torch.optim.AdamW(b.parameters(), **ADAM_KW), batches(100))
    assert_params_close(a, b, rtol=1e-6, atol=1e-6)


#: Each AdamPower route that calls a torch kernel and the torch AdamW route it matches bit for bit at p = 1. The
#: one-pass kernel (the CPU default for large tensors) and different routes round differently: within the
#: tolerance of the test above.
MATCHING_ROUTES = [(dict(fused=True), dict(fused=True)), (dict(one_pass=False), dict(fused=True)),
                   (dict(foreach=True), {}), (dict(foreach=False, fused=False), dict(foreach=False))]


@pytest.mark.parametrize("ours, theirs", MATCHING_ROUTES)
def test_adampower_p1_is_bit_identical_to_adamw_on_the_matching_route(ours, theirs):
    a = TinyNet()
    b = twin(a)
    run_ours(a, AdamPower(a.parameters(), p=1.0, **ADAM_KW, **ours), batches(50))
    run_ours(b, torch.optim.AdamW(b.parameters(), **ADAM_KW, **theirs), batches(50))
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("p", [0.8, 1.2])
def test_adampower_equals_adamw_on_transformed_grads(path, p):
    a = TinyNet()
    b = twin(a)
    run_ours(a, AdamPower(a.parameters(), p=p, **ADAM_KW, **path), batches(30))
    base = {k: v for k, v in path.items() if k != "one_pass"}
    run_reference(b, torch.optim.AdamW(b.parameters(), **ADAM_KW, **base), batches(30), lambda g: p)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


def test_adampower_state_layout_and_defaults():
    model = TinyNet()
    opt = AdamPower(model.parameters())
    run_ours(model, opt, batches(2))
    g = opt.param_groups[0]
    assert (g["p"], g["betas"], g["eps"], g["weight_decay"]) == (1.2, (0.9, 0.95), 1e-8, 0.1)
    state = opt.state[model.q_proj.weight]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    assert opt.one_pass is True and g["fused"] is None  # CPU fp32 params: the one-pass kernel by default
    # the state dict's groups hold torch AdamW's keys plus p, and nothing of the route
    reference_keys = set(torch.optim.AdamW(TinyNet().parameters()).state_dict()["param_groups"][0])
    assert set(opt.state_dict()["param_groups"][0]) == reference_keys | {"p"}
    separate = AdamPower(TinyNet().parameters(), one_pass=False)
    assert separate.param_groups[0]["fused"] is True  # else the fused torch kernel
    with pytest.raises(ValueError, match=r"one_pass=True\) needs"):
        AdamPower(TinyNet().parameters(), one_pass=True, amsgrad=True)


def test_adampower_differs_from_adamw_when_p_not_one():
    a = TinyNet()
    b = twin(a)
    run_ours(a, AdamPower(a.parameters(), p=1.5, **ADAM_KW), batches(5))
    run_ours(b, torch.optim.AdamW(b.parameters(), **ADAM_KW), batches(5))
    assert not torch.allclose(a.q_proj.weight, b.q_proj.weight)


def test_adagradpower_matches_adagrad_on_transformed_grads():
    for p in (1.0, 1.3):
        a = TinyNet()
        b = twin(a)
        run_ours(a, AdagradPower(a.parameters(), lr=0.05, p=p), batches(25))
        run_reference(b, torch.optim.Adagrad(b.parameters(), lr=0.05, eps=1e-10), batches(25), lambda g, p=p: p)
        assert_params_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("base", ["sgd", "adamw_fused", "rmsprop"])
def test_wrapper_matches_base_on_transformed_grads(base):
    makers = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        "adamw_fused": lambda ps: torch.optim.AdamW(ps, lr=1e-2, fused=True),
        "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3),
    }
    a = TinyNet()
    b = twin(a)
    run_ours(a, GradPower(makers[base](a.parameters()), p=1.2), batches(20))
    run_reference(b, makers[base](b.parameters()), batches(20), lambda g: 1.2)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


def test_param_groups_with_different_p():
    a = TinyNet()
    b = twin(a)
    groups_a = [
        {"params": a.q_proj.parameters(), "p": 2.0},
        {"params": [p for n, p in a.named_parameters() if "q_proj" not in n]},
    ]
    groups_b = [
        {"params": b.q_proj.parameters(), "p": 2.0},
        {"params": [p for n, p in b.named_parameters() if "q_proj" not in n], "p": 1.2},
    ]
    run_ours(a, AdamPower(groups_a, p=1.2, **ADAM_KW), batches(10))
    run_reference(b, torch.optim.AdamW(groups_b, **ADAM_KW), batches(10), lambda g: g["p"])
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)
    # The wrapper takes per-group p too, and add_param_group accepts p.
    c = TinyNet()
    opt = GradPower(torch.optim.SGD(c.q_proj.parameters(), lr=0.1), p=1.2)
    opt.add_param_group({"params": c.lm_head.parameters(), "p": 0.9})
    assert [g["p"] for g in opt.param_groups] == [1.2, 0.9]
    with pytest.raises(ValueError, match="got -1"):
        opt.add_param_group({"params": c.up_proj.parameters(), "p": -1})


def test_none_grads_are_skipped():
    model = TinyNet()
    opt = AdamPower(model.parameters(), lr=0.1)
    frozen_before = model.lm_head.weight.detach().clone()
    x, y = batches(1)[0]
    # Only the embedding path gets a gradient; lm_head etc. keep grad None.
    opt.zero_grad()
    model.embed_tokens(x).sum().backward()
    assert model.lm_head.weight.grad is None
    opt.step()
    assert torch.equal(model.lm_head.weight, frozen_before)


def _muon_reference(model, lr, wd):
    muon = [p for n, p in model.named_parameters() if uses_muon(n, p)]
    rest = [p for n, p in model.named_parameters() if not uses_muon(n, p)]
    return [
        torch.optim.Muon(muon, lr=lr, weight_decay=wd, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw"),
        torch.optim.AdamW(rest, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd),
    ]


def _muon_reference_run(model, p, data, nesterov=True):
    """torch's Muon + AdamW (the same split) on gradients transformed by the float64 formula."""
    refs = _muon_reference(model, 2e-2, 0.1)
    refs[0].param_groups[0]["nesterov"] = nesterov
    for batch in data:
        for r in refs:
            r.zero_grad()
        loss_of(model, batch).backward()
        with torch.no_grad():
            for prm in model.parameters():
                prm.grad.copy_(reference_phi(prm.grad, p))
        for r in refs:
            r.step()


@pytest.mark.parametrize("p", [1.0, 1.2])
def test_muonpower_equals_torch_muon_plus_adamw(p):
    a = TinyNet()
    b = twin(a)
    opt = MuonPower(a.named_parameters(), lr=2e-2, p=p, weight_decay=0.1, ns_dtype="bfloat16")
    muon_names = {n for n, t in a.named_parameters() if uses_muon(n, t)}
    assert muon_names == {"q_proj.weight", "up_proj.weight"}
    run_ours(a, opt, batches(15))
    _muon_reference_run(b, p, batches(15))
    # Newton-Schulz in bf16 on both sides (same ops); the float64 reference transform allows tiny drift.
    assert_params_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("route", ["default", "separate"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_each_muonpower_route_equals_torch_muon_plus_adamw_on_powered_gradients(route, nesterov, monkeypatch):
    """Large enough that the AdamW half's embedding and head take the one-pass kernel: by default phi_p fused
    into Muon's momentum and into the AdamW step (C++ on the CPU); "separate": phi_p on the gradients, then
    torch's lerps and fused AdamW."""
    if route == "separate":
        monkeypatch.setattr(routes, "CPU_KERNEL", False)
    a = TinyNet(vocab=4099)
    assert a.embed_tokens.weight.numel() >= routes.MIN_NUMEL
    b = twin(a)
    opt = MuonPower(a, lr=2e-2, p=1.2, weight_decay=0.1, nesterov=nesterov, ns_dtype="bfloat16",
                    adam_fused=True if route == "separate" else None)
    assert opt.one_pass == (route == "default")
    run_ours(a, opt, batches(8, vocab=4099))
    _muon_reference_run(b, 1.2, batches(8, vocab=4099), nesterov)
    assert_params_close(a, b, rtol=1e-4, atol=1e-5)


def test_muonpower_at_p_1_is_torch_muon_plus_adamw_exactly():
    a = TinyNet(vocab=4099)
    b = twin(a)
    run_ours(a, MuonPower(a, lr=2e-2, p=1.0, weight_decay=0.1, ns_dtype="bfloat16"), batches(6, vocab=4099))
    _muon_reference_run(b, 1.0, batches(6, vocab=4099))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize("batch_numel", [1 << 24, 5000])
def test_batched_newton_schulz_equals_torch_muon_matrix_by_matrix(batch_numel, monkeypatch):
    """Matrices of one shape (tall and wide alike) are orthogonalised as one batch, in chunks of at most
    MAX_BATCH_NUMEL elements (5000: two or three matrices per chunk): on the CPU, to the bit torch's Muon
    stepping each matrix alone."""
    import gradpower.optim.muonpower as muonpower

    monkeypatch.setattr(muonpower, "MAX_BATCH_NUMEL", batch_numel)
    gen = torch.Generator().manual_seed(8)
    shapes = [(32, 64), (64, 32), (64, 32), (32, 64), (48, 48), (48, 48), (48, 48), (64, 32), (20, 70)]
    weights = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    refs = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    ours = MuonPower([(f"layers.{i}.mlp.up_proj.weight", w) for i, w in enumerate(weights)], lr=1e-2, p=1.0,
                     weight_decay=0.1, ns_dtype="bfloat16")
    theirs = [torch.optim.Muon([r], lr=1e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw") for r in refs]
    for _ in range(3):
        for w, r in zip(weights, refs):
            w.grad = torch.randn(w.shape, generator=gen) * 1e-3
            r.grad = w.grad.clone()
        ours.step()
        for opt in theirs:
            opt.step()
    for w, r in zip(weights, refs):
        assert torch.equal(w, r), w.shape


def test_muonpower_fp32_newton_schulz_stays_within_bf16_tolerance_of_torch_muon():
    """Newton-Schulz in fp32 (ns_dtype="float32"). One step's update against torch.optim.Muon's bf16 one."""
    torch.manual_seed(3)
    for shape in [(64, 32), (32, 96)]:
        w = torch.nn.Parameter(torch.randn(shape) * 0.02)
        w_ref = torch.nn.Parameter(w.detach().clone())
        grad = torch.randn(shape) * 1e-3
        ours = MuonPower([("block.q_proj.weight", w)], lr=1e-2, p=1.0, weight_decay=0.0, ns_dtype="float32")
        ref = torch.optim.Muon([w_ref], lr=1e-2, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
        w.grad, w_ref.grad = grad.clone(), grad.clone()
        before = w.detach().clone()
        ours.step()
        ref.step()
        delta, delta_ref = w.detach() - before, w_ref.detach() - before
        rel = (delta - delta_ref).norm() / delta_ref.norm()
        assert 0 < rel < 2e-2, rel  # differs (fp32 is not bf16) but only at bf16 precision


@pytest.fixture
def ns_cache(tmp_path, monkeypatch):
    """A fresh cache of measured Newton-Schulz dtypes, and a fake measurement that counts its calls."""
    from gradpower.optim import newton_schulz as ns_dtype

    monkeypatch.setenv("GRADPOWER_CACHE", str(tmp_path))
    ns_dtype.measured_cpu_choice.cache_clear()
    calls, timings = [], {"bfloat16": 3.0, "float32": 2.0}
    monkeypatch.setattr(ns_dtype, "measure", lambda: calls.append(1) or dict(timings))
    monkeypatch.setattr(ns_dtype, "cpu_has_bf16_matmul", lambda: True)
    yield ns_dtype, calls, timings
    ns_dtype.measured_cpu_choice.cache_clear()


def test_the_default_newton_schulz_dtype_is_the_faster_one_measured_once_per_machine(ns_cache, monkeypatch):
    ns_dtype, calls, timings = ns_cache
    cpu = torch.device("cpu")
    assert default_ns_dtype(cpu) == "float32" and len(calls) == 1  # fp32 measured faster
    saved = json.loads(ns_dtype.cache_file().read_text())
    assert [entry["dtype"] for entry in saved.values()] == ["float32"]
    ns_dtype.measured_cpu_choice.cache_clear()  # a new process on the same machine reads the cache
    timings.update(bfloat16=1.0)
    assert default_ns_dtype(cpu) == "float32" and len(calls) == 1
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # another torch: measured again, kept beside the first
    ns_dtype.measured_cpu_choice.cache_clear()
    assert default_ns_dtype(cpu) == "bfloat16" and len(calls) == 2 and len(json.loads(
        ns_dtype.cache_file().read_text())) == 2
    ns_dtype.cache_file().write_text("{not json")  # a damaged cache is measured again and rewritten
    ns_dtype.measured_cpu_choice.cache_clear()
    assert default_ns_dtype(cpu) == "bfloat16" and len(calls) == 3
    assert json.loads(ns_dtype.cache_file().read_text())
    # no measurement where the answer is known: CUDA bf16, a CPU without native bf16 fp32, other devices fp32
    monkeypatch.setattr(ns_dtype, "cpu_has_bf16_matmul", lambda: False)
    assert [default_ns_dtype(torch.device(d)) for d in ("cuda", "cpu", "meta")] == ["bfloat16", "float32", "float32"]
    assert len(calls) == 3


def test_a_default_muonpower_step_runs_newton_schulz_in_the_measured_dtype(ns_cache):
    _, _, timings = ns_cache
    torch.manual_seed(4)
    grad = torch.randn(64, 32) * 1e-3
    for faster in ("float32", "bfloat16"):
        timings.update({faster: 1.0, "bfloat16" if faster == "float32" else "float32": 5.0})
        ns_cache[0].measured_cpu_choice.cache_clear()
        ns_cache[0].cache_file().unlink(missing_ok=True)
        results = []
        for ns_dtype in (None, faster, "float32" if faster == "bfloat16" else "bfloat16"):
            w = torch.nn.Parameter(torch.full((64, 32), 0.01))
            w.grad = grad.clone()
            MuonPower([("block.q_proj.weight", w)], lr=1e-2, p=1.2, weight_decay=0.0, ns_dtype=ns_dtype).step()
            results.append(w.detach().clone())
        assert torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])
    # an optimizer keeps the dtype it started with, whatever a later measurement says (a run never switches)
    w = torch.nn.Parameter(torch.full((64, 32), 0.01))
    opt = MuonPower([("block.q_proj.weight", w)], lr=1e-2, p=1.2, weight_decay=0.0)
    w.grad = grad.clone()
    opt.step()
    timings.update(float32=1.0, bfloat16=5.0)
    ns_cache[0].measured_cpu_choice.cache_clear()
    ns_cache[0].cache_file().unlink()
    w.grad = grad.clone()
    opt.step()
    assert opt._default_ns_dtype(torch.device("cpu")) == "bfloat16"
    assert ns_cache[0].default_ns_dtype(torch.device("cpu")) == "float32"


def test_the_measurement_times_both_dtypes_of_the_real_iteration():
    from gradpower.optim.newton_schulz import measure

    timings = measure((2, 16, 64), repeats=2)
    assert set(timings) == {"bfloat16", "float32"} and all(0 < t < 1e4 for t in timings.values())


def test_muonpower_state_dict_round_trip_and_named_groups():
    model = TinyNet()
    groups = [
        {"params": [(n, t) for n, t in model.named_parameters() if "q_proj" in n], "lr": 1e-2},
        {"params": [(n, t) for n, t in model.named_parameters() if "q_proj" not in n], "lr": 2e-2, "p": 1.5},
    ]
    opt = MuonPower(groups, lr=5e-3)
    assert sorted((g["use_muon"], g["lr"], g["p"]) for g in opt.param_groups) == [
        (False, 0.02, 1.5), (True, 0.01, 1.2), (True, 0.02, 1.5)
    ]
    run_ours(model, opt, batches(3))
    with pytest.raises(TypeError, match="named_parameters"):
        MuonPower(model.parameters())


def _train_with_checkpoint(make_opt, steps_before, steps_after, tmp_path, resume):
    torch.manual_seed(0)
    model = TinyNet()
    opt = make_opt(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    data = batches(steps_before + steps_after)
    run_ours(model, opt, data[:steps_before], sched)
    if resume:
        path = tmp_path / "ckpt.pt"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, path)
        ckpt = torch.load(path, weights_only=True)
        model = TinyNet()
        model.load_state_dict(ckpt["model"])
        opt = make_opt(model)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
    run_ours(model, opt, data[steps_before:], sched)
    return model


MAKERS = {
    "adampower": lambda m: AdamPower(m.parameters(), lr=1e-2),
    "wrapper": lambda m: GradPower(torch.optim.AdamW(m.parameters(), lr=1e-2), p=1.3),
    "muonpower": lambda m: MuonPower(m.named_parameters(), lr=1e-2),
    "adagradpower": lambda m: AdagradPower(m.parameters(), lr=1e-2),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_state_dict_round_trip_mid_training_is_bit_identical(kind, tmp_path):
    straight = _train_with_checkpoint(MAKERS[kind], 5, 5, tmp_path, resume=False)
    resumed = _train_with_checkpoint(MAKERS[kind], 5, 5, tmp_path, resume=True)
    for (n, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n


def test_lambda_lr_drives_every_group():
    model = TinyNet()
    opt = MuonPower(model.named_parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    run_ours(model, opt, batches(3), sched)
    assert all(g["lr"] == pytest.approx(1e-2 * 0.125) for g in opt.param_groups)
    assert {g["use_muon"] for g in opt.param_groups} == {True, False}


@pytest.mark.parametrize("kind", ["adampower", "adampower_one_pass", "wrapper_fused"])
def test_grad_scaler_unscales_before_transform(kind):
    """With GradScaler the transform must see the unscaled gradient."""
    makers = {
        "adampower": lambda ps: AdamPower(ps, **ADAM_KW, fused=True),
        "adampower_one_pass": lambda ps: AdamPower(ps, **ADAM_KW),
        "wrapper_fused": lambda ps: GradPower(torch.optim.AdamW(ps, **ADAM_KW, fused=True), p=1.2),
    }
    a = TinyNet()
    b = twin(a)
    opt = makers[kind](a.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for batch in batches(5):
        opt.zero_grad()
        scaler.scale(loss_of(a, batch)).backward()
        scaler.step(opt)
        scaler.update()
    run_reference(b, torch.optim.AdamW(b.parameters(), **ADAM_KW), batches(5), lambda g: 1.2)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda m: AdamPower(m.parameters()),  # the one-pass route
    lambda m: AdamPower(m.parameters(), one_pass=False),  # the separate pass: phi_p, then torch's fused AdamW
    lambda m: MuonPower(m, lr=2e-2, ns_dtype="float32"),
    lambda m: AdagradPower(m.parameters(), lr=0.1),
    lambda m: GradPower(torch.optim.SGD(m.parameters(), lr=0.1)),
], ids=["adampower-one-pass", "adampower-separate", "muonpower", "adagradpower", "wrapper"])
def test_step_hooks_fire_once_per_step_around_phi_p(make):
    model = TinyNet()
    opt = make(model)
    if isinstance(opt, AdamPower):
        assert opt.one_pass is (opt.defaults["fused"] is None)
    calls, seen = [], []
    weight = model.q_proj.weight

    def pre_hook(*args):
        calls.append("pre")
        seen.append(weight.grad.clone())

    opt.register_step_pre_hook(pre_hook)
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    for batch in batches(2):
        opt.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        raw = weight.grad.clone()
        opt.step()
        if getattr(opt, "power_in_step", False):  # phi_p inside the update: a pre-hook sees the raw gradient
            assert torch.equal(seen[-1], raw)
        else:  # phi_p by the optimizer's own pre-hook, registered first: later pre-hooks see phi_p(g)
            torch.testing.assert_close(seen[-1], raw.sign() * raw.abs() ** 1.2)
    assert calls == ["pre", "post"] * 2


def _torch_adam_route(monkeypatch) -> list[str]:
    """The kernels torch's functional Adam(W) runs, recorded by name as they are called."""
    from torch.optim import adam as torch_adam

    called: list[str] = []
    for name in ("_single_tensor_adam", "_multi_tensor_adam", "_fused_adam"):
        real = getattr(torch_adam, name)
        monkeypatch.setattr(torch_adam, name, lambda *a, _real=real, _name=name, **k: called.append(_name)
                            or _real(*a, **k))
    return called


@pytest.mark.parametrize("flags", [dict(foreach=False), dict(foreach=True), dict(fused=True),
                                   dict(fused=False), dict(fused=False, foreach=False),
                                   dict(fused=False, foreach=True)], ids=str)
def test_the_fused_and_foreach_flags_mean_what_they_mean_to_torchs_adamw(flags, monkeypatch):
    """Asked for a route, AdamPower and MuonPower's AdamW half run the kernel torch's AdamW runs for the same flags
    (``foreach=False``: the single-tensor loop); equal to the bit at p=1."""
    called = _torch_adam_route(monkeypatch)
    start, runs = TinyNet(), {}
    for name, make in (("adamw", lambda m: torch.optim.AdamW(m.parameters(), **ADAM_KW, **flags)),
                       ("adampower", lambda m: AdamPower(m.parameters(), **ADAM_KW, p=1.0, **flags)),
                       ("muonpower", lambda m: MuonPower(m, lr=2e-2, p=1.0, ns_dtype="float32",
                                                         **{f"adam_{k}": v for k, v in flags.items()}))):
        called.clear()
        model = twin(start)
        run_ours(model, make(model), batches(2))
        runs[name] = (set(called), model)
    assert runs["adamw"][0] == runs["adampower"][0] == runs["muonpower"][0] and len(runs["adamw"][0]) == 1
    assert all(torch.equal(a, b) for a, b in zip(runs["adamw"][1].parameters(), runs["adampower"][1].parameters()))


def test_closure_is_evaluated_before_transform():
    model = TinyNet()
    ref = twin(model)
    opt = AdamPower(model.parameters(), **ADAM_KW)
    batch = batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.isclose(loss, loss_of(ref, batch))
    run_reference(ref, torch.optim.AdamW(ref.parameters(), **ADAM_KW), [batch], lambda g: 1.2)
    assert_params_close(model, ref, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    model = TinyNet()
    with pytest.raises(ValueError, match="got 0"):
        AdamPower(model.parameters(), p=0)
    with pytest.raises(TypeError, match="Optimizer instance"):
        GradPower(model.parameters())
    with pytest.raises(ValueError, match="nan"):
        AdagradPower(model.parameters(), p=float("nan"))


def test_the_muon_benchmark_steps_every_route_and_restores_the_batch_bound():
    """benchmarks/optimizer_step.py's Muon table (gpu_check's check 2 runs it too) on llama-tiny, one round: each
    route steps, and the earlier routes leave MuonPower's batch bound as they found it."""
    import importlib.util

    import gradpower.optim.muonpower as muonpower

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "optimizer_step.py"
    spec = importlib.util.spec_from_file_location("optimizer_step_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bound = muonpower.MAX_BATCH_NUMEL
    results = bench.muon_results("llama-tiny", torch.device("cpu"), 1)
    assert muonpower.MAX_BATCH_NUMEL == bound
    assert next(iter(results)) == bench.MUON_BASELINE and results[bench.MUON_BASELINE][2] == 1.0
    assert {"MuonPower(NS one matrix at a time)", "MuonPower(that, phi_p a separate pass)"} <= set(results)
    assert all(t > 0 and ratio > 0 for t, _, ratio in results.values())
