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
available, :func:`kernel` returns None and the caller uses the TorchInductor
kernel instead.
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
#include <vector>

// torch's CPU lerp(start, end, w) with a scalar weight, rounded as its vectorised kernel rounds it: one fma from
// the nearer end, fma(w, end - start, start) for |w| < 0.5, else fma(w - 1, end - start, end), w in fp32.
struct Lerp {
    float coeff;
    bool from_end;
    explicit Lerp(double w) : coeff((float)w), from_end(!(std::fabs((float)w) < 0.5f)) {
        if (from_end) coeff -= 1.0f;
    }
};

#if defined(__AVX512F__) && !defined(GRADPOWER_PORTABLE)
#include <immintrin.h>
#include <cfloat>

// log2 on [1, 2) by table: 32 subintervals, indexed by a float's top five mantissa bits; for each, 1/c at its
// centre c rounded to fp32, and -log2 of that rounded value, so log2 m = log2(m * inv_c) + log2_c exactly.
struct LogTable {
    alignas(64) float inv_c[32];
    alignas(64) float log2_c[32];
    LogTable() {
        for (int i = 0; i < 32; ++i) {
            inv_c[i] = (float)(1.0 / (1.0 + (i + 0.5) / 32.0));
            log2_c[i] = (float)(-std::log2((double)inv_c[i]));
        }
    }
};

// a^p for 16 lanes of a >= 0: a = 2^e m (getexp / getmant, subnormals included), log2 m = log2_c + log2(1 + r)
// with |r| < 1/64 (a degree-3 polynomial), p e split as n + frac exactly (p_head has 12 significant bits),
// 2^(frac + p_tail e + p log2 m) = 2^k (1 + f P(f)) with |f| <= 1/2, and 2^(n + k) applied by scalef, which
// rounds over- and underflow as a multiplication would.
struct Power16 {
    __m512 p, p_head, p_tail, inv_lo, inv_hi, log2_lo, log2_hi;
    Power16(float p_, float p_head_, float p_tail_)
        : p(_mm512_set1_ps(p_)), p_head(_mm512_set1_ps(p_head_)), p_tail(_mm512_set1_ps(p_tail_)) {
        static const LogTable table;
        inv_lo = _mm512_load_ps(table.inv_c);
        inv_hi = _mm512_load_ps(table.inv_c + 16);
        log2_lo = _mm512_load_ps(table.log2_c);
        log2_hi = _mm512_load_ps(table.log2_c + 16);
    }
    inline __m512 operator()(__m512 a) const {
        const __m512 one = _mm512_set1_ps(1.0f);
        const __m512 m = _mm512_getmant_ps(a, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
        const __m512 e = _mm512_getexp_ps(a);
        const __m512i idx = _mm512_srli_epi32(_mm512_castps_si512(m), 18);   // permutex2var reads 5 bits
        const __m512 r = _mm512_fmsub_ps(m, _mm512_permutex2var_ps(inv_lo, idx, inv_hi), one);
        __m512 q = _mm512_fmadd_ps(r, _mm512_set1_ps(0.480964988f), _mm512_set1_ps(-0.721414208f));
        q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.44269502f));
        const __m512 log2_m = _mm512_fmadd_ps(r, q, _mm512_permutex2var_ps(log2_lo, idx, log2_hi));  // err < 6e-9
        const __m512 head = _mm512_mul_ps(p_head, e);                         // exact
        const __m512 n = _mm512_roundscale_ps(head, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512 y = _mm512_fmadd_ps(p, log2_m, _mm512_fmadd_ps(p_tail, e, _mm512_sub_ps(head, n)));
        const __m512 k = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512 f = _mm512_sub_ps(y, k);
        __m512 ef = _mm512_fmadd_ps(f, _mm512_set1_ps(0.00133335183f), _mm512_set1_ps(0.00966624636f));
        ef = _mm512_fmadd_ps(ef, f, _mm512_set1_ps(0.0555050038f));
        ef = _mm512_fmadd_ps(ef, f, _mm512_set1_ps(0.240223512f));
        ef = _mm512_fmadd_ps(ef, f, _mm512_set1_ps(0.693147123f));
        ef = _mm512_fmadd_ps(ef, f, one);                                     // 2^f, err < 1.8e-7
        const __m512 power = _mm512_scalef_ps(ef, _mm512_add_ps(n, k));
        const __mmask16 special = _mm512_fpclass_ps_mask(a, 0x01 | 0x02 | 0x04 | 0x08 | 0x80);  // NaN, 0, inf
        return _mm512_mask_mov_ps(power, special, a);                         // pass through
    }
};

static inline __mmask16 lanes(int64_t i, int64_t n) {
    return n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
}

// sign(g) |g|^p for 16 lanes of g.
static inline __m512 signed_power(__m512 g, const Power16& power) {
    const __m512i abs_bits = _mm512_set1_epi32(0x7FFFFFFF), bits = _mm512_castps_si512(g);
    const __m512 magnitude = power(_mm512_castsi512_ps(_mm512_and_si512(bits, abs_bits)));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(magnitude), _mm512_andnot_si512(abs_bits, bits)));
}

// One tensor's share of the step, as a worksharing loop of the enclosing parallel region (no barrier after it).
static void adam_loop(float* __restrict w, const float* __restrict gr, float* __restrict ma, float* __restrict va,
                      int64_t n, const std::vector<double>& scalars) {
    const __m512 one_minus_beta1 = _mm512_set1_ps(scalars[0]), beta2 = _mm512_set1_ps(scalars[1]),
                 one_minus_beta2 = _mm512_set1_ps(scalars[2]), decay = _mm512_set1_ps(scalars[3]),
                 step_size = _mm512_set1_ps(scalars[4]), bc2_sqrt = _mm512_set1_ps(scalars[5]),
                 eps = _mm512_set1_ps(scalars[6]), sign = _mm512_set1_ps(scalars[7]);
    const Power16 power(scalars[8], scalars[9], scalars[10]);
    #pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 live = lanes(i, n);
        const __m512 gp = signed_power(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, gr + i), sign), power);
        __m512 m = _mm512_maskz_loadu_ps(live, ma + i);
        m = _mm512_fmadd_ps(one_minus_beta1, _mm512_sub_ps(gp, m), m);
        const __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(live, va + i), beta2,
                                         _mm512_mul_ps(_mm512_mul_ps(one_minus_beta2, gp), gp));
        _mm512_mask_storeu_ps(ma + i, live, m);
        _mm512_mask_storeu_ps(va + i, live, v);
        const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), bc2_sqrt), eps);
        const __m512 update = _mm512_div_ps(_mm512_mul_ps(step_size, m), denom);
        _mm512_mask_storeu_ps(w + i, live, _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, w + i), decay),
                                                         update));
    }
}

static void power_loop(float* x, int64_t n, const std::vector<double>& scalars) {
    const Power16 power(scalars[0], scalars[1], scalars[2]);
    #pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 live = lanes(i, n);
        _mm512_mask_storeu_ps(x + i, live, signed_power(_mm512_maskz_loadu_ps(live, x + i), power));
    }
}

static inline __m512 lerp(__m512 start, __m512 end, const Lerp& weight) {
    return _mm512_fmadd_ps(_mm512_set1_ps(weight.coeff), _mm512_sub_ps(end, start), weight.from_end ? end : start);
}

// Muon's momentum on phi_p(g): buf <- lerp(buf, phi_p(g), 1 - momentum); with Nesterov the update
// lerp(phi_p(g), buf, momentum) then replaces g (each element read before it is written), else g is left.
static void muon_loop(float* gr, float* __restrict buf, int64_t n, const std::vector<double>& scalars) {
    const Power16 power(scalars[0], scalars[1], scalars[2]);
    const Lerp to_grad(scalars[3]), to_buf(scalars[4]);
    const bool nesterov = scalars[5] != 0.0;
    #pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 live = lanes(i, n);
        const __m512 gp = signed_power(_mm512_maskz_loadu_ps(live, gr + i), power);
        const __m512 b = lerp(_mm512_maskz_loadu_ps(live, buf + i), gp, to_grad);
        _mm512_mask_storeu_ps(buf + i, live, b);
        if (nesterov) _mm512_mask_storeu_ps(gr + i, live, lerp(gp, b, to_buf));
    }
}

#else  // portable: plain loops that the compiler vectorises for the machine

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

static void adam_loop(float* __restrict w, const float* __restrict gr, float* __restrict ma, float* __restrict va,
                      int64_t n, const std::vector<double>& scalars) {
    const float one_minus_beta1 = scalars[0], beta2 = scalars[1], one_minus_beta2 = scalars[2],
                decay = scalars[3], step_size = scalars[4], bc2_sqrt = scalars[5], eps = scalars[6],
                sign = scalars[7], p = scalars[8], p_head = scalars[9], p_tail = scalars[10];
    #pragma omp for simd schedule(static) nowait
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

static void power_loop(float* __restrict x, int64_t n, const std::vector<double>& scalars) {
    const float p = scalars[0], p_head = scalars[1], p_tail = scalars[2];
    #pragma omp for simd schedule(static) nowait
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::copysign(power_abs(std::fabs(x[i]), p, p_head, p_tail), x[i]);
    }
}

static inline float lerp(float start, float end, const Lerp& weight) {
    return std::fma(weight.coeff, end - start, weight.from_end ? end : start);
}

static void muon_loop(float* gr, float* __restrict buf, int64_t n, const std::vector<double>& scalars) {
    const float p = scalars[0], p_head = scalars[1], p_tail = scalars[2];
    const Lerp to_grad(scalars[3]), to_buf(scalars[4]);
    if (scalars[5] != 0.0) {
        #pragma omp for simd schedule(static) nowait
        for (int64_t i = 0; i < n; ++i) {
            const float gp = std::copysign(power_abs(std::fabs(gr[i]), p, p_head, p_tail), gr[i]);
            const float b = lerp(buf[i], gp, to_grad);
            buf[i] = b;
            gr[i] = lerp(gp, b, to_buf);
        }
    } else {
        #pragma omp for simd schedule(static) nowait
        for (int64_t i = 0; i < n; ++i) {
            const float gp = std::copysign(power_abs(std::fabs(gr[i]), p, p_head, p_tail), gr[i]);
            buf[i] = lerp(buf[i], gp, to_grad);
        }
    }
}
#endif

static int64_t total(const std::vector<int64_t>& numels) {
    int64_t sum = 0;
    for (const int64_t n : numels) sum += n;
    return sum;
}

// The entry points take tensors as data pointers (the caller checks each is contiguous fp32 on the CPU): every
// tensor of a step in one call and one parallel region, each tensor split over the threads.
void adampower_step(std::vector<int64_t> params, std::vector<int64_t> grads, std::vector<int64_t> exp_avgs,
                    std::vector<int64_t> exp_avg_sqs, std::vector<int64_t> numels, std::vector<double> scalars) {
    #pragma omp parallel if(total(numels) > 32768)
    for (size_t t = 0; t < params.size(); ++t) {
        adam_loop(reinterpret_cast<float*>(params[t]), reinterpret_cast<const float*>(grads[t]),
                  reinterpret_cast<float*>(exp_avgs[t]), reinterpret_cast<float*>(exp_avg_sqs[t]), numels[t], scalars);
    }
}

void sign_power_inplace(std::vector<int64_t> tensors, std::vector<int64_t> numels, std::vector<double> scalars) {
    #pragma omp parallel if(total(numels) > 32768)
    for (size_t t = 0; t < tensors.size(); ++t) {
        power_loop(reinterpret_cast<float*>(tensors[t]), numels[t], scalars);
    }
}

void muonpower_momentum(std::vector<int64_t> grads, std::vector<int64_t> bufs, std::vector<int64_t> numels,
                        std::vector<double> scalars) {
    #pragma omp parallel if(total(numels) > 32768)
    for (size_t t = 0; t < grads.size(); ++t) {
        muon_loop(reinterpret_cast<float*>(grads[t]), reinterpret_cast<float*>(bufs[t]), numels[t], scalars);
    }
}
"""

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


def build(*, portable: bool = False) -> ModuleType:
    """Compile the extension for this machine, or load it from torch's cache. ``portable`` compiles the plain loop
    CPUs without AVX-512 take, vectorised for this one, under a name of its own: the tests and benchmarks that
    check or time that path on an AVX-512 machine."""
    from torch.utils import cpp_extension

    return cpp_extension.load_inline(_build_name() + ("_portable" if portable else ""), cpp_sources=SOURCE,
                                     functions=["adampower_step", "sign_power_inplace", "muonpower_momentum"],
                                     extra_cflags=CFLAGS + (["-DGRADPOWER_PORTABLE"] if portable else []),
                                     extra_ldflags=["-fopenmp"])


@functools.cache
def kernel() -> ModuleType | None:
    """The built extension (compiled on the first call in a machine's lifetime, loaded from torch's cache after),
    or None with one warning when it cannot be built."""
    started = time.perf_counter()
    _log.info("building AdamPower's CPU one-pass kernel (C++, once per machine)")
    try:
        module = build()
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, a failed build: the Inductor kernel remains
        warnings.warn(f"AdamPower's C++ CPU kernel could not be built ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); using the compiled (Inductor) kernel",
                      stacklevel=3)
        return None
    _log.info("AdamPower's CPU one-pass kernel ready in %.1f s", time.perf_counter() - started)
    return module


def sign_power_(tensors: list[torch.Tensor], p: float, p_head: float, p_tail: float, *,
                module: ModuleType | None = None) -> None:
    """phi_p in place on contiguous fp32 CPU tensors (not DTensor shards), in one call (``p`` split as
    :func:`gradpower.optim.onepass.split_p`); ``module``: another build than :func:`kernel`'s."""
    (module or kernel()).sign_power_inplace([t.data_ptr() for t in tensors], [t.numel() for t in tensors],
                                            [p, p_head, p_tail])


def step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
         exp_avg_sqs: list[torch.Tensor], scalars: list[float], *, module: ModuleType | None = None) -> None:
    """One AdamPower step of contiguous fp32 CPU tensors at one step count, in place and in one call (``scalars``
    as :func:`onepass.step_scalars`); ``module``: another build than :func:`kernel`'s."""
    (module or kernel()).adampower_step([t.data_ptr() for t in params], [t.data_ptr() for t in grads],
                                        [t.data_ptr() for t in exp_avgs], [t.data_ptr() for t in exp_avg_sqs],
                                        [t.numel() for t in params], scalars)


def muon_momentum(grads: list[torch.Tensor], bufs: list[torch.Tensor], scalars: list[float], *,
                  module: ModuleType | None = None) -> None:
    """Muon's momentum on phi_p(g) for contiguous fp32 CPU matrices, in one call: each buffer updated in place
    and, with Nesterov, the update written over its gradient (no new tensor, each element read before it is
    written); without, the gradients are left. ``scalars``: ``p`` split as
    :func:`gradpower.optim.onepass.split_p`, ``1 - momentum`` and ``momentum`` (the two lerp weights, rounded as
    torch rounds them), then 1.0 for Nesterov or 0.0; ``module``: another build than :func:`kernel`'s."""
    (module or kernel()).muonpower_momentum([t.data_ptr() for t in grads], [t.data_ptr() for t in bufs],
                                            [t.numel() for t in grads], scalars)
