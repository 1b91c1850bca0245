"""Speed and accuracy of the ways to compute ``|g|^p`` elementwise, the one-pass kernel's choice among them.

Each route runs over the same 45.4M fp32 magnitudes (the optimizer-step
benchmark's parameter count, realistic gradient sizes 1e-12..1), compiled
as the one-pass kernel compiles (TorchInductor, static size), and is printed
as a ratio to a compiled copy ``|g| * 1`` (the memory traffic alone) measured
in the same run. The C++ loop AdamPower uses on CPU (``onepass_cpu``) is timed
too, in place (one read and one write, as the copy; the input restored
outside the timed region): its default build and, on an AVX-512 CPU, the
portable loop other CPUs compile. Accuracy is the largest relative error against the float64
formula, on realistic magnitudes [1e-12, 1) and over the whole normal fp32
range, for p = 1.2.

    python benchmarks/power_kernel.py [--repeats 15] [--p 1.2] [--elements 45416448]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from gradpower.optim import onepass_cpu
from gradpower.optim.onepass import power_abs, split_p

Route = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def copy_only(a: torch.Tensor, p: torch.Tensor, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    return a * 1.0


def exp_log(a: torch.Tensor, p: torch.Tensor, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    return torch.exp(p * torch.log(a))


def pow_op(a: torch.Tensor, p: torch.Tensor, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, p)


ROUTES: dict[str, Route] = {
    "copy |g| (memory traffic)  [baseline]": copy_only,
    "torch.pow, compiled": pow_op,
    "exp(p log|g|), compiled": exp_log,
    "exponent split (the kernel's)": power_abs,
}


def into(route: Route) -> Callable[..., None]:
    """``route`` writing its result into a preallocated ``out`` (fused into the same kernel)."""
    def write(a: torch.Tensor, out: torch.Tensor, *scalars: torch.Tensor) -> None:
        out.copy_(route(a, *scalars))
    return write


def in_place(module) -> Callable[..., torch.Tensor]:
    """The C++ loop's ``sign_power_inplace`` of ``module`` as a route (on a copy: the input stays as it is)."""
    def route(a: torch.Tensor, p: torch.Tensor, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        out = a.clone()
        onepass_cpu.sign_power_([out], p.item(), head.item(), tail.item(), module=module)
        return out
    return route


def cpp_builds() -> dict[str, object]:
    """The C++ loops to time: the default build, and the portable one where the default is AVX-512's."""
    builds = {"C++ loop, AVX-512 (CPU default)" if onepass_cpu.avx512() else "C++ loop (CPU default)":
              onepass_cpu.build()}
    if onepass_cpu.avx512():
        builds["C++ loop, portable (no AVX-512)"] = onepass_cpu.build(portable=True)
    return builds


def max_rel_error(route: Callable[..., torch.Tensor], x: torch.Tensor, p: float, scalars) -> float:
    exact = x.double() ** p
    got = route(x, *scalars).double()
    normal = (exact >= 2.0**-126) & (exact < 3e38)
    return ((got - exact).abs() / exact)[normal].max().item()


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--p", type=float, default=1.2)
    parser.add_argument("--elements", type=int, default=45_416_448)
    args = parser.parse_args()
    p32, head, tail = split_p(args.p)
    scalars = (torch.tensor(p32), torch.tensor(head, dtype=torch.float32), torch.tensor(tail, dtype=torch.float32))
    gen = torch.Generator().manual_seed(0)
    realistic = torch.exp(torch.empty(args.elements, dtype=torch.float64).uniform_(-27.6, 0.0, generator=gen)).float()
    whole = torch.logspace(-45.5, 38.5, 1 << 20, dtype=torch.float64).float()
    print(f"p={args.p} elements={realistic.numel() / 1e6:.1f}M threads={torch.get_num_threads()} "
          f"torch={torch.__version__} repeats={args.repeats}")
    out = torch.empty_like(realistic)  # written in place: no allocation or page faults in the timing
    results = {}
    for name, route in ROUTES.items():
        compiled = torch.compile(into(route), dynamic=False, fullgraph=True)
        times = []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            compiled(realistic, out, *scalars)
            times.append(time.perf_counter() - start)
        small = torch.compile(route, dynamic=False, fullgraph=True)  # another size: its own compile
        results[name] = (statistics.median(times[2:]), max_rel_error(small, realistic[: 1 << 20], args.p, scalars),
                         max_rel_error(small, whole, args.p, scalars))
    for name, module in cpp_builds().items():
        times = []
        for _ in range(args.repeats + 2):
            out.copy_(realistic)
            start = time.perf_counter()
            onepass_cpu.sign_power_([out], p32, head, tail, module=module)
            times.append(time.perf_counter() - start)
        route = in_place(module)
        results[name] = (statistics.median(times[2:]), max_rel_error(route, realistic[: 1 << 20], args.p, scalars),
                         max_rel_error(route, whole, args.p, scalars))
    base = results["copy |g| (memory traffic)  [baseline]"][0]
    print(f"{'route':38s} {'time':>10s} {'vs copy':>8s}   max rel. error [1e-12, 1)   whole fp32 range")
    for name, (t, err_real, err_whole) in results.items():
        errors = "" if ROUTES.get(name) is copy_only else f"{err_real:26.1e} {err_whole:18.1e}"
        print(f"{name:38s} {t * 1e3:7.2f} ms {t / base:7.2f}x {errors}")


if __name__ == "__main__":
    main()
