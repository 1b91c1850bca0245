"""AdamPower's one-pass step on CPU in C++, built by ``torch.utils.cpp_extension`` at first use; with the same
power, MuonPower's momentum on phi_p(g) (:func:`muon_momentum`: torch's two lerps, rounded as torch rounds them,
in one pass) and phi_p in place for the step pre-hook of AdagradPower and the wrapper.

The same arithmetic as :func:`gradpower.optim.onepass._update` (phi_p, both
moments, bias correction, decoupled decay, the update; one read and one write
of each element), OpenMP splitting it over the cores. ``|g|^p`` is computed
without calls into a vector math library, holding
:data:`gradpower.optim.onepass.ACCURACY` (tested over the whole fp32 range), in
one of two ways chosen when the extension is compiled (``-march=native``):

- CPUs with AVX-512 (the fast path, written with intrinsics, because no
  compiler derives it from portable code): ``getexp``/``getmant`` split
  ``|g| = 2^e m`` (subnormals included), ``log2 m`` is a 32-entry table
  looked up in registers (``vpermt2ps``) plus a degree-3 polynomial, the
  exponential a degree-5 polynomial and ``scalef``; no division. Its cost
  against torch's fused AdamW step, and the portable loop's on the same CPU,
  is what ``benchmarks/optimizer_step.py`` measures (docs/performance.md).
- Every other CPU: a plain loop the compiler vectorises, with the exponent
  split off the float's bits as in the Inductor kernel, ``ln m = 2 atanh(s)``
  as an odd series in ``s = (m - 1) / (m + 1)`` and a degree-6 exponential.

The two round differently (both within the contract), so a CPU with AVX-512
and one without give slightly different AdamPower runs.

The extension is compiled once per machine type (cached by torch under
``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``, one build per
torch installation and CPU instruction set, so nodes of different CPUs sharing
a home directory each get their own); where no C++ compiler or ninja is
available, :func:`gradpower.optim.routes.cpp_ops` (the one caller of
:func:`build` in the library, which keeps the ops for the process) returns None
and the routes take the TorchInductor kernel instead. The source is
``csrc/onepass_cpu.cpp``: three ops registered with ``TORCH_LIBRARY``, taking
tensors (checked on the C++ side: dtype, device, contiguity, sizes), with fake
implementations here so ``torch.compile`` traces a call instead of breaking
the graph.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any

import torch

from .onepass import split_p

#: The C++ source (one file, three ops), compiled for this machine at first use.
SOURCE = Path(__file__).with_name("csrc") / "onepass_cpu.cpp"
#: The ops' namespace in each build (the portable loop on an AVX-512 machine registers under its own name).
NAMESPACES = {False: "gradpower", True: "gradpower_portable"}

#: -fno-math-errno / -fno-trapping-math let floor, nearbyint and sqrt vectorise; no -ffast-math (NaN and inf
#: must keep their meaning); 512-bit vectors where the CPU has them (measured 10% faster than GCC's 256-bit default).
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"] + (
    ["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64") else [])


def cpu_features() -> str:
    """What ``-march=native`` compiles for: the CPU's instruction-set flags (Linux), else its name."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor() or platform.machine()


def _build_name() -> str:
    """The extension's name, one per torch installation and CPU instruction set: the build folder's compile flags
    name torch's headers (two virtual environments sharing one folder would rebuild it each time they alternate),
    and a build for one CPU can hold instructions another lacks (nodes sharing a home directory)."""
    where = hashlib.sha256(f"{torch.__file__}|{torch.__version__}|{cpu_features()}".encode()).hexdigest()[:10]
    return f"gradpower_onepass_cpu_{where}"


def avx512() -> bool:
    """Whether this CPU takes the AVX-512 path (else the default build is the portable loop)."""
    return "avx512f" in cpu_features().split()


def build_folder(*, portable: bool = False) -> Path:
    """Where torch keeps this machine's build (under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``;
    torch's own rule for the folder, through its ``_get_build_directory``)."""
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(_build_name() + ("_portable" if portable else ""), False))


def is_built(*, portable: bool = False) -> bool:
    """Whether this machine's build is in torch's cache (loading it then takes a moment, not a compile)."""
    folder = build_folder(portable=portable)
    return (folder / f"{folder.name}.so").is_file()


def build(*, portable: bool = False) -> Any:
    """Compile the extension for this machine, or load it from torch's cache, and return its ops
    (``torch.ops.gradpower``, each with a fake implementation so ``torch.compile`` traces through it).
    ``portable`` compiles the plain loop CPUs without AVX-512 take, vectorised for this one, under a name and a
    namespace of its own (``torch.ops.gradpower_portable``): the tests and benchmarks that check or time that
    path on an AVX-512 machine."""
    from torch.utils import cpp_extension

    namespace = NAMESPACES[portable]
    if not hasattr(torch.ops, namespace) or not hasattr(getattr(torch.ops, namespace), "adampower_step"):
        cpp_extension.load(_build_name() + ("_portable" if portable else ""), sources=[str(SOURCE)],
                           extra_cflags=CFLAGS + [f"-DGRADPOWER_NS={namespace}"]
                           + (["-DGRADPOWER_PORTABLE"] if portable else []),
                           extra_ldflags=["-fopenmp"], is_python_module=False)
        _register_fakes(namespace)
    return getattr(torch.ops, namespace)


def _register_fakes(namespace: str) -> None:
    """The ops' fake implementations: each mutates its arguments in place and returns nothing, so tracing needs
    no more than their schemas (which the C++ side declares, with the mutated lists marked)."""
    for name in ("adampower_step", "sign_power_inplace", "muonpower_momentum"):
        torch.library.register_fake(f"{namespace}::{name}", lambda *args: None)


def _as_tensor(scalars: list[float]) -> torch.Tensor:
    """The ops' scalars as a float64 CPU tensor: data to ``torch.compile``, so a new step count or lr neither
    guards nor recompiles."""
    return torch.tensor(scalars, dtype=torch.float64)


def sign_power_(tensors: list[torch.Tensor], p: float, p_head: float, p_tail: float, *, module: Any) -> None:
    """phi_p in place on contiguous fp32 CPU tensors (not DTensor shards), in one call (``p`` split as
    :func:`gradpower.optim.onepass.split_p`); ``module``: the build's ops (:func:`build`)."""
    module.sign_power_inplace(tensors, _as_tensor([p, p_head, p_tail]))


def step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
         exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], hyper: torch.Tensor, *, module: Any) -> None:
    """One AdamPower step of contiguous fp32 CPU tensors, in place and in one call: each tensor's bias corrections
    from its count in ``steps`` (before this step; the caller increments them), ``hyper`` as :func:`hyper`
    makes it; ``module``: the build's ops (:func:`build`)."""
    module.adampower_step(params, grads, exp_avgs, exp_avg_sqs, steps, hyper)


def hyper(*, lr: float | torch.Tensor, beta1: float, beta2: float, weight_decay: float, eps: float,
          maximize: bool, p: float) -> torch.Tensor:
    """:func:`step`'s hyper-parameters as a float64 CPU tensor (``lr``, betas, decay, eps, the sign, then ``p``
    split as :func:`gradpower.optim.onepass.split_p`). A tensor ``lr`` stays tensor data, so under
    ``torch.compile`` a scheduler changes a value, never a guard."""
    rest = torch.tensor([beta1, beta2, weight_decay, eps, -1.0 if maximize else 1.0, *split_p(p)],
                        dtype=torch.float64)
    if isinstance(lr, torch.Tensor):
        return torch.cat([lr.detach().reshape(1).to("cpu", torch.float64), rest])
    return torch.cat([torch.tensor([lr], dtype=torch.float64), rest])


def muon_momentum(grads: list[torch.Tensor], bufs: list[torch.Tensor], scalars: list[float], *,
                  module: Any) -> None:
    """Muon's momentum on phi_p(g) for contiguous fp32 CPU matrices, in one call: each buffer updated in place
    and, with Nesterov, the update written over its gradient (no new tensor, each element read before it is
    written); without, the gradients are left. ``scalars``: ``p`` split as
    :func:`gradpower.optim.onepass.split_p`, ``1 - momentum`` and ``momentum`` (the two lerp weights, rounded as
    torch rounds them), then 1.0 for Nesterov or 0.0; ``module``: the build's ops (:func:`build`)."""
    module.muonpower_momentum(grads, bufs, _as_tensor(scalars))
