"""The one resolver of routes (gradpower.optim.routes) against the rule its docstring states, and the C++ power as
registered torch ops: their checks, and torch.compile tracing them to the eager numbers."""

import pytest
import torch

from gradpower import AdamPower, GradPower
from gradpower.optim import onepass, onepass_cpu, routes

from .helpers import TinyNet, batches, loss_of, twin

BIG, SMALL = (256, 256), (8,)  # above and below routes.MIN_NUMEL


@pytest.fixture(autouse=True)
def _fresh_resolver():
    yield
    routes.reset()


def tensors(*shapes, dtype=torch.float32):
    return [torch.zeros(s, dtype=dtype) for s in shapes]


def test_on_the_one_pass_route_large_fp32_cpu_tensors_take_the_cpp_loop_and_the_rest_fused_adamw():
    params = tensors(BIG, SMALL, BIG)
    params[2] = params[2].t()  # not contiguous
    got = routes.adam_routes(params, [torch.zeros_like(t) for t in params], 1.2, one_pass=True, fused=None,
                             foreach=None)
    assert got == {"onepass_cpp": [0], "fused": [1, 2]}
    assert routes.adam_routes(params[:1], params[:1], routes.MAX_P * 2, one_pass=True, fused=None,
                              foreach=None) == {"fused": [0]}  # p above the kernels' range


def test_without_the_cpp_loop_the_inductor_kernel_takes_them_until_a_compile_of_that_optimizer_fails(monkeypatch):
    monkeypatch.setattr(routes, "CPU_KERNEL", False)
    params = tensors(BIG, SMALL)
    router, other = routes.Router(), routes.Router()
    kw = dict(one_pass=True, fused=None, foreach=None)
    assert router.routes(0, params, params, 1.2, **kw) == {"onepass_inductor": [0], "fused": [1]}
    assert router.pending_compiles(params, 1.2) == {BIG[0] * BIG[1]}
    with pytest.warns(UserWarning, match="could not be compiled"):
        router.record_inductor_failure(RuntimeError("no compiler"))
    assert router.routes(0, params, params, 1.2, **kw) == {"fused": [0, 1]}  # resolved again after the failure
    assert router.pending_compiles(params, 1.2) == set()
    assert other.routes(0, params, params, 1.2, **kw) == {"onepass_inductor": [0], "fused": [1]}  # its own


def test_a_groups_routes_are_resolved_once_and_again_only_when_what_they_depend_on_changes(monkeypatch):
    calls = []
    real = routes.adam_routes
    monkeypatch.setattr(routes, "adam_routes", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    params = tensors(BIG, SMALL)
    router, kw = routes.Router(), dict(one_pass=True, fused=None, foreach=None)
    for _ in range(3):
        assert router.routes(0, params, params, 1.2, **kw) == {"onepass_cpp": [0], "fused": [1]}
    assert calls == [2]
    router.routes(0, params[:1], params[:1], 1.2, **kw)  # a tensor without a gradient this step
    router.routes(0, params[:1], params[:1], 1.3, **kw)  # p moved within MAX_P: the same routes
    assert router.routes(0, params[:1], params[:1], routes.MAX_P * 2, **kw) == {"fused": [0]}
    assert calls == [2, 1, 1]


def test_off_the_one_pass_route_the_groups_flags_decide_and_torchs_default_otherwise():
    params = tensors(BIG, SMALL)
    kw = dict(one_pass=False)
    assert routes.adam_routes(params, params, 1.2, fused=True, foreach=None, **kw) == {"fused": [0, 1]}
    assert routes.adam_routes(params, params, 1.2, fused=None, foreach=True, **kw) == {"foreach": [0, 1]}
    assert routes.adam_routes(params, params, 1.2, fused=None, foreach=None, **kw) == {"single": [0, 1]}  # CPU


def test_the_optimizer_resolves_each_groups_routes_on_its_first_step_only(monkeypatch):
    calls = []
    real = routes.adam_routes
    monkeypatch.setattr(routes, "adam_routes", lambda *a, **k: calls.append(k["one_pass"]) or real(*a, **k))
    model = TinyNet()
    opt = AdamPower([{"params": [model.embed_tokens.weight]},
                     {"params": [p for p in model.parameters() if p is not model.embed_tokens.weight]}])
    for batch in batches(3):
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
    assert calls == [True, True]


@pytest.mark.parametrize("bad, message", [
    (lambda: torch.zeros(40, dtype=torch.float64), "is Double, not float32"),
    (lambda: torch.zeros(8, 5).t(), "is not contiguous"),
])
def test_the_cpp_ops_check_their_tensors_before_touching_memory(bad, message):
    ops = routes.cpp_ops()
    if ops is None:
        pytest.skip("no C++ compiler on this machine")
    with pytest.raises(RuntimeError, match=message):
        onepass_cpu.sign_power_([bad()], *onepass.split_p(1.2), module=ops)
    with pytest.raises(RuntimeError, match="has 5 elements, its partner 4"):
        onepass_cpu.muon_momentum([torch.zeros(4)], [torch.zeros(5)], [*onepass.split_p(1.2), 0.05, 0.95, 1.0],
                                  module=ops)
    with pytest.raises(RuntimeError, match="takes 9 scalars, got 3"):
        onepass_cpu.step(*([t] for t in tensors(SMALL, SMALL, SMALL, SMALL)), [torch.tensor(0.0)],
                         torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), module=ops)


def test_a_compiled_function_traces_the_cpp_step_in_one_graph_and_matches_eager():
    ops = routes.cpp_ops()
    if ops is None:
        pytest.skip("no C++ compiler on this machine")
    gen = torch.Generator().manual_seed(0)
    w, grad = torch.randn(50_000, generator=gen), torch.randn(50_000, generator=gen) * 1e-3
    state = [(w.clone(), torch.zeros_like(w), torch.zeros_like(w)) for _ in range(2)]
    hyper = onepass_cpu.hyper(lr=1e-2, beta1=0.9, beta2=0.95, weight_decay=0.1, eps=1e-8, maximize=False, p=1.2)

    def step(param, exp_avg, exp_avg_sq):
        onepass_cpu.step([param], [grad], [exp_avg], [exp_avg_sq], [torch.tensor(0.0)], hyper,
                         module=routes.cpp_ops())
        return param * 2

    out = torch.compile(step, fullgraph=True)(*state[0])  # fullgraph: no graph break around the op
    assert torch.equal(out, step(*state[1]))
    assert all(torch.equal(a, b) for a, b in zip(*state))
    assert not torch.equal(state[0][0], w)


def test_a_compiled_adampower_step_on_the_cpp_route_matches_eager_without_recompiling():
    a = torch.nn.Sequential(torch.nn.Linear(200, 200), torch.nn.Tanh(), torch.nn.Linear(200, 4))
    b = twin(a)
    start = a[0].weight.detach().clone()
    opt_a, opt_b = (AdamPower(m.parameters(), lr=torch.tensor(1e-2)) for m in (a, b))
    assert routes.adam_routes([a[0].weight], [a[0].weight], 1.2, one_pass=opt_a.one_pass, fused=None,
                              foreach=None) == {"onepass_cpp": [0]}
    sched_a, sched_b = (torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s)) for o in (opt_a, opt_b))
    compiled = torch.compile(opt_a.step)
    gen = torch.Generator().manual_seed(3)
    for i in range(6):
        x = torch.randn(16, 200, generator=gen)
        for model in (a, b):
            model.zero_grad()
            model(x).pow(2).mean().backward()
        if i < 2:
            compiled()
        else:
            with torch.compiler.set_stance("fail_on_recompile"):
                compiled()
        opt_b.step()
        sched_a.step()
        sched_b.step()
    assert (a[0].weight - start).abs().max() > 1e-3
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_a_compiled_step_of_the_wrapper_traces_the_power_hook_and_matches_eager():
    def make():
        torch.manual_seed(1)
        lin = torch.nn.Linear(300, 300)
        return lin, GradPower(torch.optim.SGD(lin.parameters(), lr=0.1), p=1.2)

    (a, opt_a), (b, opt_b) = make(), make()
    routes.cpp_ops()
    compiled = torch.compile(opt_a.step)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(8, 300, generator=gen)
        for model in (a, b):
            model.zero_grad()
            model(x).pow(2).mean().backward()
        compiled()
        opt_b.step()
    start = make()[0]
    assert (a.weight - start.weight).abs().max() > 1e-4
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-7)
