"""The one-pass AdamPower kernels (the C++ loop on CPU, the Inductor kernel on CPU and CUDA): the same numbers
as AdamW on transformed gradients, the accuracy contract, no recompiles, fallbacks."""

import pytest
import torch

from gradpower import AdamPower, sign_power
from gradpower.cli import main
from gradpower.optim import onepass, onepass_cpu, routes

from .helpers import TinyNet, assert_params_close, batches, loss_of, run_reference, twin

ADAM_KW = dict(lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
# a silent fallback to the separate-pass path would make these tests pass without testing the kernel
pytestmark = [pytest.mark.filterwarnings("error:AdamPower's one-pass kernel could not be compiled"),
              pytest.mark.filterwarnings("error:AdamPower's C\\+\\+ CPU kernel could not be built")]


@pytest.fixture(autouse=True)
def _every_tensor_through_the_kernel(monkeypatch):
    """The small test models' tensors are below the kernel's size threshold: send them through it anyway."""
    monkeypatch.setattr(routes, "MIN_NUMEL", 1)


@pytest.fixture(params=["cpp", "inductor"])
def kernel(request, monkeypatch):
    """Each CPU route of the one-pass step: the C++ loop (the default) and the Inductor kernel."""
    monkeypatch.setattr(routes, "CPU_KERNEL", request.param == "cpp")
    return request.param


@pytest.fixture
def inductor(monkeypatch):
    """The Inductor kernel on CPU (the route CUDA takes), for what only it has: compiles and their failures (a
    failure turns that route off for the optimizer that met it)."""
    monkeypatch.setattr(routes, "CPU_KERNEL", False)


def reference(model, data, p_of, scheduler_fn=None, **kw):
    """torch's AdamW (with ``kw``) on hand-transformed gradients."""
    opt = torch.optim.AdamW(model.parameters() if "groups" not in kw else kw.pop("groups"), **{**ADAM_KW, **kw})
    sched = torch.optim.lr_scheduler.LambdaLR(opt, scheduler_fn) if scheduler_fn else None
    run_reference(model, opt, data, p_of, sched)


def test_maximize_and_per_group_p_on_the_one_pass_path(kernel):
    a = TinyNet()
    b = twin(a)
    groups_a = [{"params": list(a.q_proj.parameters()), "p": 1.6},
                {"params": [p for n, p in a.named_parameters() if "q_proj" not in n]}]
    opt = AdamPower(groups_a, p=0.9, maximize=True, **ADAM_KW)
    assert opt.one_pass
    for batch in batches(15):
        opt.zero_grad()
        loss_of(a, batch).backward()
        opt.step()
    groups_b = [{"params": list(b.q_proj.parameters()), "p": 1.6},
                {"params": [p for n, p in b.named_parameters() if "q_proj" not in n], "p": 0.9}]
    reference(b, batches(15), lambda g: g["p"], groups=groups_b, maximize=True)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_recompilation_across_steps_lr_schedules_and_groups(inductor):
    a = TinyNet()
    b = twin(a)
    opt = AdamPower(a.parameters(), **ADAM_KW)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    data = batches(8)
    for i, batch in enumerate(data):
        opt.zero_grad()
        loss_of(a, batch).backward()
        if i < 2:
            opt.step()
        else:  # later steps, new lrs and bias corrections: the compiled kernel is reused as it is
            with torch.compiler.set_stance("fail_on_recompile"):
                opt.step()
        sched.step()
    reference(b, data, lambda g: 1.2, scheduler_fn=lambda s: 1.0 / (1 + s))
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)
    other = TinyNet(vocab=13, dim=6)  # other shapes (compiled at the first step), another optimizer and p:
    opt2 = AdamPower(other.parameters(), p=1.4, **ADAM_KW)  # no recompilation after that, nor of the first sizes
    for i, batch in enumerate(batches(3, vocab=13)):
        opt2.zero_grad()
        loss_of(other, batch).backward()
        if i == 0:
            opt2.step()
        else:
            with torch.compiler.set_stance("fail_on_recompile"):
                opt2.step()
                opt.step()
    assert opt.one_pass and opt2.one_pass


def test_parameters_the_kernel_does_not_take_use_the_separate_pass_path():
    model = TinyNet().to(torch.bfloat16)
    opt = AdamPower(model.parameters(), **ADAM_KW)
    assert not opt.one_pass  # bf16: torch's kernels, phi_p computed in fp32
    ref_model = twin(model)
    for batch in batches(3):
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
    reference(ref_model, batches(3), lambda g: 1.2, fused=opt.param_groups[0]["fused"])
    assert_params_close(model, ref_model, rtol=1e-2, atol=1e-3)


def test_compiled_model_trains_like_the_eager_one(tmp_path):
    argv = ["train", "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--bpe-vocab-size", "300",
            "--eval-batches", "1", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--log-every", "1"]
    assert main([*argv, "--out", str(tmp_path / "eager")]) == 0
    assert main([*argv, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    import json

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert losses("compiled") == pytest.approx(losses("eager"), rel=1e-4)


def test_a_compiler_failure_falls_back_to_the_separate_pass_path(monkeypatch, inductor):
    def broken(numel):
        def fail(*args):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(onepass, "_kernel", broken)
    a = TinyNet()
    b = twin(a)
    opt = AdamPower(a.parameters(), **ADAM_KW)
    with pytest.warns(UserWarning, match="could not be compiled.*separate-pass path"):
        for batch in batches(5):
            opt.zero_grad()
            loss_of(a, batch).backward()
            opt.step()
    assert opt.one_pass and opt.router.inductor_failed  # the optimizer's choice stands; the route is off
    assert not AdamPower(twin(a).parameters()).router.inductor_failed  # for that optimizer only
    reference(b, batches(5), lambda g: 1.2)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


def fp32_range_gradient(n: int = 1 << 18) -> torch.Tensor:
    """Magnitudes across the whole fp32 range (subnormals to 1e38), random signs, and the special values."""
    gen = torch.Generator().manual_seed(3)
    mags = torch.logspace(-45.5, 38.5, n - 6, dtype=torch.float64)
    signs = torch.where(torch.rand(n - 6, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45], dtype=torch.float64)
    return torch.cat([mags * signs, special]).float()


@pytest.mark.parametrize("p", [0.3, 0.8, 1.2, 2.0, 8.0])
def test_the_kernels_power_is_within_fp32_rounding_over_the_whole_range(p, kernel):
    # beta1 = 0 and no decay: after one step exp_avg holds exactly the transformed gradient the kernel computed
    g = fp32_range_gradient()
    w = torch.nn.Parameter(torch.zeros_like(g))
    w.grad = g.clone()
    opt = AdamPower([w], p=p, lr=1e-3, betas=(0.0, 0.95), weight_decay=0.0, one_pass=True)
    opt.step()
    got = opt.state[w]["exp_avg"].double()
    x = g.double()
    exact = torch.sign(x) * x.abs() ** p  # the float64 formula
    normal = (exact.abs() >= 2.0**-126) & (exact.abs() < 3e38)
    rel = ((got - exact).abs() / exact.abs())[normal]
    assert rel.max().item() <= onepass.ACCURACY  # the contract; exp(p * log|g|) errs by up to 8e-6 here
    below = exact.isfinite() & (exact.abs() < 2.0**-126)
    # subnormal results: the same relative accuracy, plus rounding to the subnormal grid (2^-149)
    assert ((got - exact).abs()[below] <= 2.0**-149 + onepass.ACCURACY * exact.abs()[below]).all()
    assert torch.equal(got[-6:-1].isnan(), exact[-6:-1].isnan())
    assert got[-6:-2].tolist() == exact[-6:-2].tolist()  # +-0 stay 0, +-inf stay inf
    assert torch.equal(got.sign()[normal], exact.sign()[normal])


@pytest.mark.parametrize("p", [0.3, 0.6, 1.2, 2.0, 2.5, routes.MAX_P])
def test_the_kernels_accuracy_contract_on_the_gradient_range(p):
    """The documented contract: relative error <= onepass.ACCURACY (2e-6) against float64 on [1e-30, 1e4], the
    kernel compiled as the optimizer compiles it; 0, inf and NaN exact."""
    x = torch.cat([torch.logspace(-30, 4, 1 << 18, dtype=torch.float64).float(),
                   torch.tensor([0.0, float("inf"), float("nan")])])
    scalars = [torch.tensor(v, dtype=torch.float32) for v in onepass.split_p(p)]
    got = torch.compile(onepass.power_abs, dynamic=False, fullgraph=True)(x, *scalars).double()
    exact = x[:-3].double() ** p
    normal = (exact >= 2.0**-126) & (exact < 3e38)
    assert normal.float().mean() > 0.25  # p = 8 sends three quarters of the range below fp32
    assert ((got[:-3] - exact).abs() / exact)[normal].max().item() <= onepass.ACCURACY
    assert got[-3].item() == 0.0 and got[-2].item() == float("inf") and got[-1].isnan()


def test_an_exponent_above_the_kernels_range_uses_the_separate_pass_path():
    a = TinyNet()
    b = twin(a)
    groups_a = [{"params": list(a.q_proj.parameters()), "p": routes.MAX_P * 2},
                {"params": [p for n, p in a.named_parameters() if "q_proj" not in n]}]
    opt = AdamPower(groups_a, **{**ADAM_KW, "lr": 1e-3})
    for batch in batches(4):
        opt.zero_grad()
        loss_of(a, batch).backward()
        opt.step()
    groups_b = [{"params": list(b.q_proj.parameters()), "p": routes.MAX_P * 2},
                {"params": [p for n, p in b.named_parameters() if "q_proj" not in n], "p": 1.2}]
    reference(b, batches(4), lambda g: g["p"], groups=groups_b, lr=1e-3)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_power_benchmark_runs_and_shows_the_kernels_accuracy():
    """benchmarks/power_kernel.py at a tiny size: the accuracy columns it prints back the README's claim."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "power_kernel.py"
    out = subprocess.run([sys.executable, str(script), "--elements", "200000", "--repeats", "1"],
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if " ms " in line}
    kernel = rows["exponent split (the kernel's)"]
    short = rows["exp(p log|g|), compiled"]
    assert float(kernel[-2]) < 5e-7 and float(kernel[-1]) < 5e-7
    assert float(short[-2]) > 1e-6  # the faster route it replaces is not accurate enough
    cpp = [row for name, row in rows.items() if name.startswith("C++ loop")]
    assert cpp and all(float(row[-2]) < 5e-7 and float(row[-1]) < 5e-7 for row in cpp)


def test_a_compiler_failure_partway_through_a_step_steps_every_tensor_once(monkeypatch, inductor):
    # the kernel compiles for the embedding, fails for q_proj (later in the same group): the embedding must
    # not be stepped again by the fallback, and the next group's gradients must still be transformed
    real = onepass._kernel
    q_numel = TinyNet().q_proj.weight.numel()

    def fails_for_q(numel):
        if numel == q_numel:
            raise RuntimeError("no C++ compiler for this size")
        return real(numel)

    monkeypatch.setattr(onepass, "_kernel", fails_for_q)
    a = TinyNet()
    b = twin(a)

    def groups(model):
        first = [model.embed_tokens.weight, model.q_proj.weight]
        return [{"params": first}, {"params": [p for p in model.parameters() if all(p is not q for q in first)]}]

    opt = AdamPower(groups(a), **ADAM_KW)
    with pytest.warns(UserWarning, match="could not be compiled"):
        for batch in batches(5):
            opt.zero_grad()
            loss_of(a, batch).backward()
            opt.step()
    assert opt.router.inductor_failed
    assert all(s["step"].item() == 5 for s in opt.state.values())
    reference(b, batches(5), lambda g: 1.2, groups=groups(b))
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [0.5, 1.2, 2.0])
def test_the_kernels_power_and_the_transform_are_the_same_phi_p(p):
    """onepass.power_abs is phi_p's fused form, transform.sign_power its definition: they agree to fp32 rounding."""
    g = fp32_range_gradient()
    p32, head, tail = onepass.split_p(p)
    fused = torch.copysign(onepass.power_abs(g.abs(), torch.tensor(p32), torch.tensor(head), torch.tensor(tail)), g)
    plain = sign_power(g, p)
    normal = plain.isfinite() & (plain.abs() >= 2.0**-126) & (fused.abs() >= 2.0**-126)
    assert normal.sum() > 0.9 * g.numel() / 2
    assert ((fused - plain).abs() / plain.abs())[normal].max().item() < 1e-5
    assert torch.equal(fused[-6:].isnan(), plain[-6:].isnan()) and fused[-6:-2].tolist() == plain[-6:-2].tolist()


def test_a_cpu_kernel_that_cannot_be_built_falls_back_to_the_inductor_kernel(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(onepass_cpu, "build", no_compiler)
    calls, real = [], onepass._kernel
    monkeypatch.setattr(onepass, "_kernel", lambda numel: calls.append(numel) or real(numel))
    routes.reset()
    try:
        a = TinyNet()
        b = twin(a)
        opt = AdamPower(a.parameters(), **ADAM_KW)
        with pytest.warns(UserWarning, match="C\\+\\+ CPU kernel could not be built.*Inductor"):
            for batch in batches(4):
                opt.zero_grad()
                loss_of(a, batch).backward()
                opt.step()
        assert opt.one_pass and calls  # the Inductor kernel stepped them
        reference(b, batches(4), lambda g: 1.2)
        assert_params_close(a, b, rtol=1e-5, atol=1e-6)
    finally:
        routes.reset()


@pytest.mark.parametrize("p", [0.6, 1.2, 2.0])
def test_the_step_pre_hook_powers_fp32_cpu_gradients_with_the_cpp_loop_within_the_contract(p, monkeypatch):
    """MuonPower's, AdagradPower's and the wrapper's phi_p: the C++ loop on fp32 CPU gradients, held to the
    one-pass contract; without it, exactly gradpower.transform's (tested in test_transform.py)."""
    from gradpower.optim.power_hook import power_group_grads_

    g = fp32_range_gradient()
    w = torch.nn.Parameter(torch.zeros_like(g))
    w.grad = g.clone()
    power_group_grads_([{"params": [w], "p": p}])
    got, x = w.grad.double(), g.double()
    exact = torch.sign(x) * x.abs() ** p
    normal = (exact.abs() >= 2.0**-126) & (exact.abs() < 3e38)
    assert ((got - exact).abs() / exact.abs())[normal].max().item() <= onepass.ACCURACY
    assert torch.equal(got[-6:-1].isnan(), exact[-6:-1].isnan()) and got[-6:-2].tolist() == exact[-6:-2].tolist()
    monkeypatch.setattr(routes, "CPU_KERNEL", False)
    w.grad = g.clone()
    power_group_grads_([{"params": [w], "p": p}])
    torch.testing.assert_close(w.grad, sign_power(g, p), rtol=0, atol=0, equal_nan=True)


@pytest.mark.skipif(not onepass_cpu.avx512(),
                    reason="without AVX-512 the default build is the portable loop, which the tests above check")
def test_the_portable_cpp_loop_holds_the_contract_and_steps_like_the_avx512_one():
    """CPUs without AVX-512 compile the plain loop: built here (for this CPU), its power holds the contract over
    the whole fp32 range and its AdamPower steps match the AVX-512 path's to fp32 rounding."""
    portable, fast = onepass_cpu.build(portable=True), onepass_cpu.build()
    g = fp32_range_gradient()
    x = g.double()
    for p in (0.6, 1.2, routes.MAX_P):
        got = g.clone()
        onepass_cpu.sign_power_([got], *onepass.split_p(p), module=portable)
        exact = torch.sign(x) * x.abs() ** p
        normal = (exact.abs() >= 2.0**-126) & (exact.abs() < 3e38)
        assert ((got.double() - exact).abs() / exact.abs())[normal].max().item() <= onepass.ACCURACY
        assert torch.equal(got[-6:-1].isnan(), exact[-6:-1].isnan())
        assert got[-6:-2].tolist() == exact[-6:-2].tolist()
        other = g.clone()
        onepass_cpu.sign_power_([other], *onepass.split_p(p), module=fast)
        assert not torch.equal(got[normal], other[normal])  # really the other code path: it rounds differently
    gen = torch.Generator().manual_seed(5)
    n = 100_003  # not a multiple of the vector width: the masked tail too
    states = {}
    for name, module in (("portable", portable), ("fast", fast)):
        w, m, v = torch.randn(n, generator=torch.Generator().manual_seed(6)), torch.zeros(n), torch.zeros(n)
        gen.manual_seed(5)
        for step in range(1, 6):
            grad = torch.randn(n, generator=gen) * 1e-3
            hyper = onepass_cpu.hyper(lr=1e-2, beta1=0.9, beta2=0.95, weight_decay=0.1, eps=1e-8,
                                      maximize=step % 2 == 0, p=1.2)
            onepass_cpu.step([w], [grad], [m], [v], [torch.tensor(step - 1.0)], hyper, module=module)
        states[name] = (w, m, v)
    for a, b in zip(states["portable"], states["fast"]):  # moments cancel to ~0 under the alternating sign
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


@pytest.mark.parametrize("build", ["default", "portable"])
def test_muons_fused_momentum_rounds_as_torchs_lerps_on_the_powered_gradient(build):
    """MuonPower's CPU momentum: phi_p, then torch's ``buf.lerp_(g, 1 - m)`` and ``g.lerp(buf, m)`` to the bit
    (on the same build's power), within the contract of the float64 formula; Nesterov's update replaces the
    gradient, which is left as it was without Nesterov."""
    if build == "portable" and not onepass_cpu.avx512():
        pytest.skip("without AVX-512 the default build is the portable loop")
    module = onepass_cpu.build(portable=build == "portable")
    gen = torch.Generator().manual_seed(7)
    for n, momentum, nesterov in ((100_003, 0.95, True), (17, 0.95, False), (4096, 0.3, True)):
        g, buf = torch.randn(n, generator=gen) * 1e-3, torch.randn(n, generator=gen) * 1e-3
        raw = g.clone()
        powered = g.clone()
        onepass_cpu.sign_power_([powered], *onepass.split_p(1.2), module=module)
        ref_buf = buf.clone().lerp_(powered, 1 - momentum)
        exact_buf = buf.double() + (1 - momentum) * (torch.sign(g.double()) * g.double().abs() ** 1.2 - buf.double())
        onepass_cpu.muon_momentum([g], [buf], [*onepass.split_p(1.2), 1 - momentum, momentum, float(nesterov)],
                                  module=module)
        assert torch.equal(buf, ref_buf)
        torch.testing.assert_close(buf.double(), exact_buf, rtol=onepass.ACCURACY, atol=1e-9)  # fp32 ulps of 1e-3
        assert torch.equal(g, powered.lerp(ref_buf, momentum) if nesterov else raw)


def test_each_cpu_instruction_set_gets_its_own_build(monkeypatch):
    """-march=native builds hold the building CPU's instructions: nodes of different CPUs sharing a home
    directory (one torch extensions cache) must not load each other's build."""
    monkeypatch.setattr(onepass_cpu, "cpu_features", lambda: "flags\t\t: fpu sse2 avx2 avx512f")
    with_avx512 = onepass_cpu._build_name()
    monkeypatch.setattr(onepass_cpu, "cpu_features", lambda: "flags\t\t: fpu sse2 avx2")
    assert onepass_cpu._build_name() != with_avx512 and not onepass_cpu.avx512()
    assert with_avx512.startswith("gradpower_onepass_cpu_")
