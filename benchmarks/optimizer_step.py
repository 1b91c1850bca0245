"""Median optimizer ``step()`` time for a ~45M-parameter LLaMA-like shape set.

Every variant runs in this one process on the same parameter shapes and the
same gradients, and is printed as a ratio to ``torch.optim.AdamW(fused=True)``
measured in the same run, with the first step's time (for the one-pass
AdamPower it includes compiling the kernel). Gradients are restored from a saved copy before
every step (outside the timed region), so repeated powering never drifts the
values into subnormals.

    python benchmarks/optimizer_step.py [--device cpu|cuda] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from gradpower import AdamPower, GradPower


def llama_like_shapes(vocab: int = 32000, dim: int = 512, ff: int = 1376, layers: int = 4) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, dim)]
    for _ in range(layers):
        shapes += [(dim, dim)] * 4 + [(ff, dim), (ff, dim), (dim, ff), (dim,), (dim,)]
    return shapes + [(dim,), (vocab, dim)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], params, grads, repeats: int,
               device) -> tuple[float, float]:
    """Median step time after two warm-up steps, and the first step's time (compilation included)."""
    opt = make(params)
    times = []
    first = 0.0
    for i in range(repeats + 2):
        for prm, g in zip(params, grads):
            prm.grad.copy_(g)
        sync(device)
        start = time.perf_counter()
        opt.step()
        sync(device)
        if i == 0:
            first = time.perf_counter() - start
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    shapes = llama_like_shapes()
    params = [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(device)) for s in shapes]
    grads = [(torch.randn(s, generator=gen) * 1e-3).to(device) for s in shapes]
    for prm in params:
        prm.grad = torch.zeros_like(prm)
    n = sum(p.numel() for p in params)
    kw = dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    variants: dict[str, Callable] = {
        "AdamW(fused=True)  [baseline]": lambda ps: torch.optim.AdamW(ps, fused=True, **kw),
        "AdamW(foreach=True)": lambda ps: torch.optim.AdamW(ps, foreach=True, **kw),
        "AdamW(for-loop)": lambda ps: torch.optim.AdamW(ps, foreach=False, **kw),
        "GradPower(AdamW(fused=True))": lambda ps: GradPower(torch.optim.AdamW(ps, fused=True, **kw), p=1.2),
        "AdamPower(default: one-pass)": lambda ps: AdamPower(ps, **kw),
        "AdamPower(fused=True)": lambda ps: AdamPower(ps, fused=True, **kw),
        "AdamPower(foreach=True)": lambda ps: AdamPower(ps, foreach=True, **kw),
        "AdamPower(single-tensor)": lambda ps: AdamPower(ps, foreach=False, fused=False, **kw),
    }
    print(f"device={device} params={n / 1e6:.1f}M tensors={len(params)} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} repeats={args.repeats}")
    results = {name: time_steps(make, params, grads, args.repeats, device) for name, make in variants.items()}
    base = results["AdamW(fused=True)  [baseline]"][0]
    for name, (t, first) in results.items():
        print(f"{name:34s} {t * 1e3:9.2f} ms   {t / base:6.2f}x fused AdamW   first step {first:6.2f} s")
    print("first step: includes torch.compile of the one-pass kernel when this process compiles it for the first "
          "time (the on-disk Inductor cache makes later processes faster)")


if __name__ == "__main__":
    main()
