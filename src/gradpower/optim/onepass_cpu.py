"""AdamPower's one-pass step on CPU as a C++ loop, built by ``torch.utils.cpp_extension`` at first use; and
phi_p in place with the same power, for the step pre-hook of MuonPower, AdagradPower and the wrapper.

The same arithmetic as :func:`gradpower.optim.onepass._update` (phi_p, both
moments, bias correction, decoupled decay, the update; one read and one write
of each element), written as one plain loop that GCC/Clang vectorise for the
machine (``-march=native``) and OpenMP splits over the cores. ``|g|^p`` is
computed without calls into a vector math library: the exponent is split off
the float's bits as in the compiled kernel, ``ln m`` is ``2 atanh(s)`` as an
odd series in ``s = (m - 1) / (m + 1)`` (four terms) with ``m`` in [0.71, 1.42),
and the exponential is a degree-6 polynomial after reduction by ``ln 2``; the
result holds :data:`gradpower.optim.onepass.ACCURACY` (tested over the whole
fp32 range). It runs at about half the Inductor kernel's time on this 2-core
CPU (``benchmarks/optimizer_step.py``).

The extension is compiled once per machine (cached by torch, one build per torch installation, under
``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); where no C++
compiler or ninja is available, :func:`kernel` returns None and the caller uses
the TorchInductor kernel instead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import time
import warnings
from types import ModuleType

import torch

_log = logging.getLogger(__name__)

SOURCE = r"""
#include <cstdint>
#include <cstring>
#include <cmath>

static inline float as_float(int32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
static inline int32_t as_int(float f) { int32_t b; std::memcpy(&b, &f, 4); return b; }

// a^p for a >= 0; branch-free, so the loop below vectorises.
static inline float power_abs(float a, float p, float p_head, float p_tail) {
    const bool tiny = a < 1.17549435e-38f;                   // subnormal: scale by 2^24 first
    const int32_t bits = as_int(tiny ? a * 16777216.0f : a);
    const int32_t frac = bits & 0x7FFFFF;
    const bool big = frac > 0x3504F3;                        // mantissa above sqrt(2): halve it
    const float m = as_float(frac | (big ? 0x3F000000 : 0x3F800000));
    const float e = (float)(bits >> 23) - (tiny ? 151.0f : 127.0f) + (big ? 1.0f : 0.0f);
    const float x = m - 1.0f;
    const float s = x / (x + 2.0f);
    const float s2 = s * s;
    const float ln_m = 2.0f * s * (1.0f + s2 * (0.333333343f + s2 * (0.2f + s2 * 0.142857149f)));  // err < 3e-8
    const float head = p_head * e;                           // exact: p_head has 12 significant bits
    const float n = std::floor(head);
    const float y = ((head - n) + p_tail * e) * 0.693147182f + p * ln_m;
    const float k = std::nearbyint(y * 1.44269502f);
    const float f = (y - k * 0.693145752f) - k * 1.42860677e-06f;
    const float ef = 1.0f + f * (1.0f + f * (0.5f + f * (0.166666672f + f * (0.0416666679f + f * (0.00833333377f
                     + f * 0.00138888892f)))));                // |f| <= ln2 / 2: err < 1.3e-7
    float total = n + k;
    total = total < -252.0f ? -252.0f : (total > 254.0f ? 254.0f : total);
    const int32_t n_int = (int32_t)total;
    const int32_t n_half = n_int >> 1;                       // 2^n as two normal factors
    const float r = ef * as_float((n_half + 127) << 23) * as_float((n_int - n_half + 127) << 23);
    return (a == 0.0f || !(a <= 3.40282347e38f)) ? a : r;   // 0, inf and NaN pass through
}

void adampower_step(int64_t param, int64_t grad, int64_t exp_avg, int64_t exp_avg_sq, int64_t n,
                    std::vector<double> scalars) {
    float* __restrict w = reinterpret_cast<float*>(param);
    const float* __restrict gr = reinterpret_cast<const float*>(grad);
    float* __restrict ma = reinterpret_cast<float*>(exp_avg);
    float* __restrict va = reinterpret_cast<float*>(exp_avg_sq);
    const float one_minus_beta1 = scalars[0], beta2 = scalars[1], one_minus_beta2 = scalars[2],
                decay = scalars[3], step_size = scalars[4], bc2_sqrt = scalars[5], eps = scalars[6],
                sign = scalars[7], p = scalars[8], p_head = scalars[9], p_tail = scalars[10];
    #pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        const float g = gr[i] * sign;
        const float gp = std::copysign(power_abs(std::fabs(g), p, p_head, p_tail), g);
        const float m = ma[i] + one_minus_beta1 * (gp - ma[i]);
        const float v = va[i] * beta2 + one_minus_beta2 * gp * gp;
        ma[i] = m;
        va[i] = v;
        w[i] = w[i] * decay - step_size * m / (std::sqrt(v) / bc2_sqrt + eps);
    }
}

void sign_power_inplace(int64_t data, int64_t n, std::vector<double> scalars) {
    float* __restrict x = reinterpret_cast<float*>(data);
    const float p = scalars[0], p_head = scalars[1], p_tail = scalars[2];
    #pragma omp parallel for simd schedule(static) if(n > 32768)
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::copysign(power_abs(std::fabs(x[i]), p, p_head, p_tail), x[i]);
    }
}
"""
#: -fno-math-errno / -fno-trapping-math let floor, nearbyint and sqrt vectorise; no -ffast-math (NaN and inf
#: must keep their meaning); 512-bit vectors where the CPU has them (measured 10% faster than GCC's 256-bit default).
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"] + (
    ["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64") else [])


def _build_name() -> str:
    """The extension's name, one per torch installation: the build folder's compile flags name torch's headers, so
    two virtual environments sharing one folder would rebuild it each time they alternate."""
    where = hashlib.sha256(f"{torch.__file__}|{torch.__version__}".encode()).hexdigest()[:10]
    return f"gradpower_onepass_cpu_{where}"


@functools.cache
def kernel() -> ModuleType | None:
    """The built extension (compiled on the first call in a machine's lifetime, loaded from torch's cache after),
    or None with one warning when it cannot be built."""
    from torch.utils import cpp_extension

    started = time.perf_counter()
    _log.info("building AdamPower's CPU one-pass kernel (C++, once per machine)")
    try:
        module = cpp_extension.load_inline(_build_name(), cpp_sources=SOURCE,
                                           functions=["adampower_step", "sign_power_inplace"],
                                           extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"])
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, a failed build: the Inductor kernel remains
        warnings.warn(f"AdamPower's C++ CPU kernel could not be built ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); using the compiled (Inductor) kernel",
                      stacklevel=3)
        return None
    _log.info("AdamPower's CPU one-pass kernel ready in %.1f s", time.perf_counter() - started)
    return module


def takes(t: torch.Tensor) -> bool:
    """A tensor the C++ loops can own: dense, contiguous fp32 on the CPU, not a DTensor shard."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided and t.is_contiguous()
            and not hasattr(t, "to_local"))


def sign_power_(t: torch.Tensor, p: float, p_head: float, p_tail: float) -> None:
    """phi_p in place on a tensor it :func:`takes` (``p`` split as :func:`gradpower.optim.onepass.split_p`)."""
    kernel().sign_power_inplace(t.data_ptr(), t.numel(), [p, p_head, p_tail])


def step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
         scalars: list[float]) -> None:
    """One AdamPower step of contiguous fp32 CPU tensors, in place (``scalars`` as :func:`onepass.step_scalars`)."""
    kernel().adampower_step(param.data_ptr(), grad.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(),
                            param.numel(), scalars)
