// AdamPower's one-pass step, phi_p in place and MuonPower's momentum on phi_p(g), for contiguous fp32 CPU tensors.
// Built by torch.utils.cpp_extension (gradpower/optim/onepass_cpu.py) and registered as torch ops under the
// namespace GRADPOWER_NS (``gradpower`` for the default build, ``gradpower_portable`` for the portable loop built
// on an AVX-512 machine to test it), each with a fake implementation on the Python side so torch.compile traces
// through them. The entry points check every tensor (TORCH_CHECK) before touching memory.
#include <torch/library.h>
#include <ATen/ATen.h>
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


static int64_t total(const at::TensorList tensors) {
    int64_t sum = 0;
    for (const auto& t : tensors) sum += t.numel();
    return sum;
}

// Every tensor fp32, contiguous, on the CPU and, list by list, of the size of the first list's tensor.
static void check_tensors(const char* op, std::initializer_list<at::TensorList> lists) {
    const at::TensorList first = *lists.begin();
    for (const at::TensorList& list : lists) {
        TORCH_CHECK(list.size() == first.size(), op, ": tensor lists of different lengths (", list.size(), " and ",
                    first.size(), ")");
        for (size_t t = 0; t < list.size(); ++t) {
            const at::Tensor& x = list[t];
            TORCH_CHECK(x.device().is_cpu(), op, ": tensor ", t, " is on ", x.device(), ", not the CPU");
            TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": tensor ", t, " is ", x.scalar_type(), ", not float32");
            TORCH_CHECK(x.is_contiguous(), op, ": tensor ", t, " is not contiguous");
            TORCH_CHECK(x.numel() == first[t].numel(), op, ": tensor ", t, " has ", x.numel(), " elements, its ",
                        "partner ", first[t].numel());
        }
    }
}

// The per-call scalars arrive as a float64 CPU tensor (values, not constants, for torch.compile: a new step or lr
// changes data, never a guard).
static std::vector<double> scalars_of(const char* op, const at::Tensor& scalars, int64_t count) {
    TORCH_CHECK(scalars.device().is_cpu() && scalars.scalar_type() == at::kDouble && scalars.dim() == 1, op,
                ": scalars must be a 1-D float64 CPU tensor, got ", scalars.scalar_type(), " on ", scalars.device());
    TORCH_CHECK(scalars.numel() == count, op, " takes ", count, " scalars, got ", scalars.numel());
    const at::Tensor values = scalars.contiguous();
    return std::vector<double>(values.data_ptr<double>(), values.data_ptr<double>() + count);
}

// The scalars of adam_loop for a tensor at its 1-based step, from hyper = {lr, beta1, beta2, weight_decay, eps,
// sign, p, p_head, p_tail}: the arithmetic of gradpower.optim.onepass.step_scalars, in double.
static std::vector<double> adam_scalars(const std::vector<double>& h, double step) {
    const double lr = h[0], beta1 = h[1], beta2 = h[2], weight_decay = h[3];
    return {1 - beta1, beta2, 1 - beta2, 1 - lr * weight_decay, lr / (1 - std::pow(beta1, step)),
            std::sqrt(1 - std::pow(beta2, step)), h[4], h[5], h[6], h[7], h[8]};
}

// Every tensor of a step in one call and one parallel region, each tensor split over the threads; each tensor's
// bias corrections from its own step count (steps: the counts before this step, float32 CPU scalars).
void adampower_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList steps, const at::Tensor& hyper_) {
    check_tensors("adampower_step", {params, grads, exp_avgs, exp_avg_sqs});
    TORCH_CHECK(steps.size() == params.size(), "adampower_step: ", steps.size(), " step counts for ", params.size(),
                " tensors");
    const std::vector<double> hyper = scalars_of("adampower_step", hyper_, 9);
    std::vector<std::vector<double>> scalars;
    for (const auto& step : steps) {
        TORCH_CHECK(step.device().is_cpu() && step.numel() == 1, "adampower_step: a step count must be a one-element "
                    "CPU tensor");
        scalars.push_back(adam_scalars(hyper, step.item<double>() + 1));
    }
    #pragma omp parallel if(total(params) > 32768)
    for (size_t t = 0; t < params.size(); ++t) {
        adam_loop(params[t].data_ptr<float>(), grads[t].data_ptr<float>(), exp_avgs[t].data_ptr<float>(),
                  exp_avg_sqs[t].data_ptr<float>(), params[t].numel(), scalars[t]);
    }
}

void sign_power_inplace(at::TensorList tensors, const at::Tensor& scalars_) {
    check_tensors("sign_power_inplace", {tensors});
    const std::vector<double> scalars = scalars_of("sign_power_inplace", scalars_, 3);
    #pragma omp parallel if(total(tensors) > 32768)
    for (size_t t = 0; t < tensors.size(); ++t) {
        power_loop(tensors[t].data_ptr<float>(), tensors[t].numel(), scalars);
    }
}

void muonpower_momentum(at::TensorList grads, at::TensorList bufs, const at::Tensor& scalars_) {
    check_tensors("muonpower_momentum", {grads, bufs});
    const std::vector<double> scalars = scalars_of("muonpower_momentum", scalars_, 6);
    #pragma omp parallel if(total(grads) > 32768)
    for (size_t t = 0; t < grads.size(); ++t) {
        muon_loop(grads[t].data_ptr<float>(), bufs[t].data_ptr<float>(), grads[t].numel(), scalars);
    }
}

// TORCH_LIBRARY stringifies its namespace argument: expand GRADPOWER_NS first.
#define GRADPOWER_REGISTER(ns) TORCH_LIBRARY(ns, m)
#define GRADPOWER_REGISTER_IMPL(ns) TORCH_LIBRARY_IMPL(ns, CPU, m)

GRADPOWER_REGISTER(GRADPOWER_NS) {
    m.def("adampower_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
          "Tensor[] steps, Tensor hyper) -> ()");
    m.def("sign_power_inplace(Tensor(a!)[] tensors, Tensor scalars) -> ()");
    m.def("muonpower_momentum(Tensor(a!)[] grads, Tensor(b!)[] bufs, Tensor scalars) -> ()");
}

GRADPOWER_REGISTER_IMPL(GRADPOWER_NS) {
    m.impl("adampower_step", &adampower_step);
    m.impl("sign_power_inplace", &sign_power_inplace);
    m.impl("muonpower_momentum", &muonpower_momentum);
}
