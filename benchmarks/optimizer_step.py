"""Median optimizer ``step()`` time: AdamPower on a ~45M-parameter LLaMA-like shape set, MuonPower on a model.

Every variant runs in this one process on the same parameters and the same
gradients, one step of each in turn per round, and is printed as the median
over rounds of its ratio to a baseline measured in the same round,
with the first step's time (for the one-pass AdamPower it includes compiling
the kernel):

- AdamW / AdamPower variants against ``torch.optim.AdamW(fused=True)``, on CPU
  with AdamPower's one-pass step through each of its routes (the default C++
  loop; on an AVX-512 CPU, the portable loop other CPUs compile; the Inductor
  kernel);
- MuonPower (its default: phi_p fused into Muon's momentum and the AdamW
  step, Newton-Schulz batched over matrices of one shape; the earlier routes,
  Newton-Schulz one matrix at a time, and that with phi_p as a separate pass
  before an unchanged update; ``adam_fused=True``; each Newton-Schulz dtype
  forced) against
  torch's own ``Muon`` on the same hidden matrices plus ``AdamW(fused=True)``
  on the rest, the split MuonPower makes (``--muon-preset``, default
  llama-small).

Gradients are restored from a saved copy before every step (outside the timed
region), so repeated powering never drifts the values into subnormals.

    python benchmarks/optimizer_step.py [--device cpu|cuda] [--repeats 15] [--muon-preset llama-small]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from gradpower import AdamPower, GradPower, MuonPower
from gradpower.models import build_model, preset
from gradpower.optim import muonpower, onepass_cpu, routes
from gradpower.optim.muonpower import default_ns_dtype
from gradpower.optim.param_groups import uses_muon
from gradpower.optim.power_hook import power_group_grads_


def llama_like_shapes(vocab: int = 32000, dim: int = 512, ff: int = 1376, layers: int = 4) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, dim)]
    for _ in range(layers):
        shapes += [(dim, dim)] * 4 + [(ff, dim), (ff, dim), (dim, ff), (dim,), (dim,)]
    return shapes + [(dim,), (vocab, dim)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(makers: dict[str, Callable], params, grads, repeats: int,
               device) -> dict[str, tuple[float, float, float]]:
    """Each optimizer's median step time after two warm-up rounds, its first step's time (compilation included),
    and the median over rounds of its step time over the baseline's (the first maker's) in the same round.

    Every round steps each optimizer once in turn, so the machine's drift (on a shared VM the memory bandwidth
    varies by 2x within a minute) falls on every variant alike and cancels out of the ratio."""
    opts = {name: make(params) for name, make in makers.items()}
    times: dict[str, list[float]] = {name: [] for name in opts}
    first: dict[str, float] = {}
    for i in range(repeats + 2):
        for name, opt in opts.items():
            for prm, g in zip(params, grads):
                prm.grad.copy_(g)
            sync(device)
            start = time.perf_counter()
            opt.step()
            sync(device)
            took = time.perf_counter() - start
            if i == 0:
                first[name] = took
            if i >= 2:
                times[name].append(took)
    base = times[next(iter(opts))]
    return {name: (statistics.median(ts), first[name], statistics.median(t / b for t, b in zip(ts, base)))
            for name, ts in times.items()}


MUON_BASELINE = "torch Muon + AdamW(fused)  [baseline]"


class TorchMuonPair:
    """torch's ``Muon`` on the hidden matrices and ``AdamW(fused=True)`` on the rest, stepped together."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], **kw) -> None:
        muon = [t for n, t in named if uses_muon(n, t)]
        rest = [t for n, t in named if not uses_muon(n, t)]
        self.parts = [torch.optim.Muon(muon, adjust_lr_fn="match_rms_adamw", **kw),
                      torch.optim.AdamW(rest, fused=True, betas=(0.9, 0.95), **kw)]

    def step(self) -> None:
        for part in self.parts:
            part.step()


class Patched:
    """An optimizer stepped with one module attribute set to ``value`` for the step (and restored after): another
    route of the same optimizer, timed in the same run as its default."""

    def __init__(self, opt: object, module: object, name: str, value: object) -> None:
        self.opt, self.module, self.name, self.value = opt, module, name, value

    def step(self) -> None:
        before = getattr(self.module, self.name)
        setattr(self.module, self.name, self.value)
        try:
            self.opt.step()
        finally:
            setattr(self.module, self.name, before)


class SeparatePower:
    """MuonPower at p = 1 with fused AdamW after phi_p as a pass of its own (the step pre-hook's
    ``power_group_grads_``, C++ on the CPU): phi_p before an unchanged update."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], **kw) -> None:
        self.opt = MuonPower(named, p=1.0, adam_fused=True, **kw)

    def step(self) -> None:
        power_group_grads_([{**group, "p": 1.2} for group in self.opt.param_groups])
        self.opt.step()


def one_matrix_at_a_time(opt: object) -> Patched:
    """``opt`` with Newton-Schulz in batches of one matrix."""
    return Patched(opt, muonpower, "MAX_BATCH_NUMEL", 1)


def muon_results(preset_name: str, device: torch.device, repeats: int) -> dict[str, tuple[float, float, float]]:
    """MuonPower (default and each Newton-Schulz dtype) and torch's Muon + fused AdamW, each as
    :func:`time_steps` gives it, on ``preset_name``'s parameters; the baseline is listed first."""
    torch.manual_seed(0)
    model = build_model(preset(preset_name)).to(device)
    named = list(model.named_parameters())
    params = [t for _, t in named]
    gen = torch.Generator().manual_seed(1)
    grads = [(torch.randn(t.shape, generator=gen) * 1e-3).to(device) for t in params]
    for prm in params:
        prm.grad = torch.zeros_like(prm)
    kw = dict(lr=1e-3, weight_decay=0.1)
    variants: dict[str, Callable] = {
        MUON_BASELINE: lambda ps: TorchMuonPair(named, **kw),
        f"MuonPower(default: {default_ns_dtype(device)} NS)": lambda ps: MuonPower(named, **kw),
        "MuonPower(NS one matrix at a time)": lambda ps: one_matrix_at_a_time(MuonPower(named, **kw)),
        "MuonPower(that, phi_p a separate pass)": lambda ps: one_matrix_at_a_time(SeparatePower(named, **kw)),
        "MuonPower(adam_fused=True)": lambda ps: MuonPower(named, adam_fused=True, **kw),
        "MuonPower(ns_dtype='float32')": lambda ps: MuonPower(named, ns_dtype="float32", **kw),
        "MuonPower(ns_dtype='bfloat16')": lambda ps: MuonPower(named, ns_dtype="bfloat16", **kw),
    }
    print(f"\nMuon: preset={preset_name} params={sum(t.numel() for t in params) / 1e6:.1f}M matrices to Muon="
          f"{sum(uses_muon(nm, t) for nm, t in named)} (torch's Muon runs Newton-Schulz in bf16)")
    return time_steps(variants, params, grads, repeats, device)


def portable_loop(opt: AdamPower) -> Patched:
    """``opt`` stepped through the plain C++ loop that CPUs without AVX-512 take, built here for this CPU (before
    the timing) in place of :func:`routes.cpp_ops`'s build."""
    module = onepass_cpu.build(portable=True)
    return Patched(opt, routes, "cpp_ops", lambda: module)


ADAM_BASELINE = "AdamW(fused=True)  [baseline]"
KW = dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
ADAM_VARIANTS: dict[str, Callable] = {
    ADAM_BASELINE: lambda ps: torch.optim.AdamW(ps, fused=True, **KW),
    "AdamW(foreach=True)": lambda ps: torch.optim.AdamW(ps, foreach=True, **KW),
    "AdamW(for-loop)": lambda ps: torch.optim.AdamW(ps, foreach=False, **KW),
    "GradPower(AdamW(fused=True))": lambda ps: GradPower(torch.optim.AdamW(ps, fused=True, **KW), p=1.2),
    "AdamPower(default: one-pass)": lambda ps: AdamPower(ps, **KW),
    "AdamPower(one-pass, portable C++ loop)": lambda ps: portable_loop(AdamPower(ps, **KW)),
    # the Inductor kernel, CUDA's route, on the CPU too
    "AdamPower(one-pass, Inductor kernel)": lambda ps: Patched(AdamPower(ps, **KW), routes, "CPU_KERNEL", False),
    "AdamPower(fused=True)": lambda ps: AdamPower(ps, fused=True, **KW),
    "AdamPower(foreach=True)": lambda ps: AdamPower(ps, foreach=True, **KW),
    "AdamPower(single-tensor)": lambda ps: AdamPower(ps, foreach=False, fused=False, **KW),
}


def adam_results(shapes: list[tuple[int, ...]], device: torch.device, repeats: int,
                 names: list[str] | None = None) -> dict[str, tuple[float, float, float]]:
    """Each AdamW / AdamPower variant in ``names`` (default all; the baseline first) as :func:`time_steps` gives
    it, on parameters of ``shapes`` with fixed gradients."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(device)) for s in shapes]
    grads = [(torch.randn(s, generator=gen) * 1e-3).to(device) for s in shapes]
    for prm in params:
        prm.grad = torch.zeros_like(prm)
    chosen = names or list(ADAM_VARIANTS)
    return time_steps({name: ADAM_VARIANTS[name] for name in chosen}, params, grads, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--muon-preset", default="llama-small", help="model whose parameters the Muon table steps")
    args = parser.parse_args()
    device = torch.device(args.device)
    shapes = llama_like_shapes()
    n = sum(math.prod(s) for s in shapes)
    print(f"device={device} params={n / 1e6:.1f}M tensors={len(shapes)} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} repeats={args.repeats}")
    print("ms: median step; ratio: median over rounds of the step over the baseline's in the same round")
    portable, inductor = "AdamPower(one-pass, portable C++ loop)", "AdamPower(one-pass, Inductor kernel)"
    # CPU routes only; the portable loop is the default itself on a CPU without AVX-512
    skip = {portable, inductor} if device.type != "cpu" else set() if onepass_cpu.avx512() else {portable}
    results = adam_results(shapes, device, args.repeats, [name for name in ADAM_VARIANTS if name not in skip])
    for name, (t, first, ratio) in results.items():
        print(f"{name:38s} {t * 1e3:9.2f} ms   {ratio:6.2f}x fused AdamW   first step {first:6.2f} s")
    print("first step: includes torch.compile of the one-pass kernel when this process compiles it for the first "
          "time (the on-disk Inductor cache makes later processes faster)")
    results = muon_results(args.muon_preset, device, args.repeats)
    for name, (t, first, ratio) in results.items():
        print(f"{name:40s} {t * 1e3:9.2f} ms   {ratio:6.2f}x torch Muon+AdamW   first step {first:6.2f} s")


if __name__ == "__main__":
    main()
