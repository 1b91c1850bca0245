"""Newton-Schulz, MuonPower's orthogonalisation: the batched iteration, and its default dtype, chosen by what this
machine measurably multiplies faster.

Its default dtype on CUDA is bf16 (tensor cores; torch.optim.Muon's choice). On a CPU without native bf16 matrix
instructions (:func:`cpu_has_bf16_matmul`) bf16 is emulated and slower, so fp32. On a CPU that reports them the
answer depends on the chip: with AMX tiles bf16 GEMMs run several times the fp32 rate, while with AVX512-BF16 dot
products alone the measured MuonPower step was slower in bf16 (docs/performance.md). There the first use times
the batched Newton-Schulz iteration in both dtypes on matrices of a typical hidden size (:func:`measure`) and
keeps the faster.

The choice is cached per machine, torch version and thread count in ``$GRADPOWER_CACHE/hardware/ns_dtype.json``
(a file lock makes concurrent first uses measure once, undisturbed), so every process on a machine takes the same
dtype and gives the same numbers for a seed. Runs record the dtype they used (``resolved.ns_dtype`` in their
``config.json``), and experiments refuse to reuse or pair runs of another dtype; ``ns_dtype`` set explicitly
overrides the choice.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import time
from pathlib import Path

import torch
from torch import Tensor

from ..fileio import atomic_write_text, default_cache_root, folder_lock

#: Keller Jordan's quintic Newton-Schulz coefficients (as in torch.optim.Muon).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
#: Newton-Schulz iterations per update (torch.optim.Muon's).
NS_STEPS = 5
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


_log = logging.getLogger(__name__)
#: The batch of matrices the measurement orthogonalises: a hidden size's square-by-4x block (the MLP matrices of
#: a 256-wide model), four at once as the batched iteration stacks them.
MEASURE_SHAPE = (4, 256, 1024)
#: Timed calls per dtype (after one warm-up call); the fastest decides (other load only ever adds time).
MEASURE_REPEATS = 5


def newton_schulz_batch(x: Tensor, steps: int, coefficients: tuple[float, float, float], eps: float) -> Tensor:
    """Approximate orthogonalisation U V^T of each matrix in a batch ``x`` (``B x rows x cols``, rows <= cols, in
    the dtype to compute in) by ``steps`` quintic iterations; ``x`` is normalised in place.

    torch.optim.Muon's iteration (normalise by the Frobenius norm, then ``X <- a X + (b G + c G^2) X`` with
    ``G = X X^T``) with batched matrix products: one ``bmm`` per product for the whole batch. On the CPU the
    results equal torch's one matrix at a time to the bit; ``benchmarks/optimizer_step.py`` measures what the
    batching saves.
    """
    a, b, c = coefficients
    x.div_(torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps))
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    return x


@functools.cache
def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16 tiles or AVX512-BF16 dot products), as
    torch's own CPU capability report (the one ``torch.backends.cpu.get_cpu_capability`` reads) says. A torch
    that lacks the report counts as no."""
    try:
        capability = torch._C._cpu._get_cpu_capability()
    except (AttributeError, RuntimeError):
        return False
    return bool(capability.get("amx_bf16") or capability.get("avx512_bf16"))


def default_ns_dtype(device: torch.device) -> str:
    """The dtype Newton-Schulz runs in when ``ns_dtype=None``: ``bfloat16`` on CUDA, ``float32`` on a CPU
    without native bf16 matrix instructions, and on one with them the faster of the two as measured once per
    machine, torch version and thread count (:func:`measured_cpu_choice`); ``float32`` on any other device."""
    if device.type == "cuda":
        return "bfloat16"
    if device.type == "cpu" and cpu_has_bf16_matmul():
        return measured_cpu_choice(torch.get_num_threads())
    return "float32"


def machine_key(threads: int) -> str:
    """What the measurement depends on: torch's version, the CPU (its model and capability) and the thread
    count."""
    try:
        capability = torch._C._cpu._get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = {}
    flags = ",".join(sorted(k for k, v in capability.items() if v is True))
    return f"torch {torch.__version__} | {_cpu_model()} [{flags}] | {threads} threads"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_file() -> Path:
    """Where the measured choices are kept."""
    return default_cache_root() / "hardware" / "ns_dtype.json"


@functools.cache
def measured_cpu_choice(threads: int) -> str:
    """The faster Newton-Schulz dtype of this CPU at ``threads`` torch threads: read from :func:`cache_file`, or
    measured once and written there (a damaged file is measured again and rewritten)."""
    file = cache_file()
    key = machine_key(threads)
    file.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(file.parent, wait=True, what="measurement"):
        try:
            known = json.loads(file.read_text())
            if not isinstance(known, dict):
                known = {}
        except (OSError, ValueError):
            known = {}
        entry = known.get(key)
        if isinstance(entry, dict) and entry.get("dtype") in ("bfloat16", "float32"):
            return entry["dtype"]
        _log.info("measuring MuonPower's Newton-Schulz in bf16 and fp32 on this CPU (once per machine, torch "
                  "version and thread count; cached in %s)", file)
        timings = measure()
        choice = min(timings, key=timings.__getitem__)
        known[key] = {"dtype": choice, "fastest_ms": timings, "shape": list(MEASURE_SHAPE)}
        atomic_write_text(file, json.dumps(known, indent=2) + "\n")
        _log.info("Newton-Schulz on this CPU: %s", ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items()))
        return choice


def measure(shape: tuple[int, int, int] = MEASURE_SHAPE, repeats: int = MEASURE_REPEATS) -> dict[str, float]:
    """Milliseconds of the fastest of ``repeats`` batched Newton-Schulz orthogonalisations (MuonPower's five
    steps) of ``shape`` in each dtype on the CPU."""
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(shape, generator=gen)
    timings = {}
    for name, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        seconds = []
        for _ in range(repeats + 1):
            x = source.to(dtype)
            start = time.perf_counter()
            newton_schulz_batch(x, NS_STEPS, NS_COEFFICIENTS, 1e-7)
            seconds.append(time.perf_counter() - start)
        timings[name] = 1e3 * min(seconds[1:])
    return timings
