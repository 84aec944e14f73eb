// AVX2+FMA float32 kernels for exp, tanh, sigmoid, erf, erfc and GELU.
//
// exp: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite two-part ln2), expm1(r) by its Taylor series
// to r^8 (truncation < 6e-10 relative), scaled by 2^k in two steps so denormal results are right.
// tanh: e/(e+2) with e = expm1(2|x|), which has no cancellation for small |x|.
// erf/erfc: |x| < 0.875: erf = x P(x^2) (erfc = 1 - erf below 0.5); above: erfc = exp(-x^2) R(1/x) / x with exp(-x^2)
// computed from x^2 = hi + lo (FMA) so large arguments keep their relative accuracy. P and R are
// least-squares fits (relative error weighting) to mpmath values, about 1 ulp in float arithmetic.
// Max errors against double-precision std:: are asserted in tests/unit/elementwise_test.cpp.
#include "backends/cpu/ew_math.h"

#include <immintrin.h>

#include <cstring>

namespace kiln::cpu::ew {
namespace {

inline __m256 set1(float v) { return _mm256_set1_ps(v); }

// Keeps NaN lanes of x in r (the clamps below would otherwise turn NaN into a number).
inline __m256 keep_nan(__m256 r, __m256 x) { return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }

// expm1 of the reduced argument (|r| <= 0.3466).
inline __m256 expm1_poly(__m256 r) {
  __m256 p = set1(1.f / 40320.f);
  p = _mm256_fmadd_ps(p, r, set1(1.f / 5040.f));
  p = _mm256_fmadd_ps(p, r, set1(1.f / 720.f));
  p = _mm256_fmadd_ps(p, r, set1(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, set1(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, set1(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, set1(0.5f));
  return _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r);
}

// x -> (k, r) with x = k ln2 + r. x must already be clamped to [-104, 89].
inline __m256 reduce(__m256 x, __m256* k) {
  *k = _mm256_round_ps(_mm256_mul_ps(x, set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(*k, set1(0.693145751953125f), x);     // ln2 high part (exact k*hi for |k| < 2^8)
  return _mm256_fnmadd_ps(*k, set1(1.428606820309417e-06f), r);  // ln2 low part
}

// 2^k as two factors, each a normal float, for k in [-150, 128].
inline void pow2_split(__m256 k, __m256* s1, __m256* s2) {
  __m256i ki = _mm256_cvtps_epi32(k);
  __m256i k1 = _mm256_srai_epi32(ki, 1);
  __m256i k2 = _mm256_sub_epi32(ki, k1);
  *s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, _mm256_set1_epi32(127)), 23));
  *s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, _mm256_set1_epi32(127)), 23));
}

inline __m256 exp_clamped(__m256 xc) {
  __m256 k, s1, s2;
  __m256 r = reduce(xc, &k);
  __m256 p = _mm256_add_ps(expm1_poly(r), set1(1.f));
  pow2_split(k, &s1, &s2);
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

inline __m256 exp8(__m256 x) {
  __m256 xc = _mm256_max_ps(_mm256_min_ps(x, set1(89.f)), set1(-104.f));
  return keep_nan(exp_clamped(xc), x);
}

// expm1 for x in [0, 40] (used by tanh).
inline __m256 expm1_pos(__m256 x) {
  __m256 k, s1, s2;
  __m256 r = reduce(x, &k);
  __m256 q = expm1_poly(r);
  pow2_split(k, &s1, &s2);
  __m256 two_k = _mm256_mul_ps(s1, s2);
  // 2^k (1 + q) - 1 = 2^k q + (2^k - 1); exact q when k == 0.
  return _mm256_fmadd_ps(two_k, q, _mm256_sub_ps(two_k, set1(1.f)));
}

inline __m256 abs8(__m256 x) { return _mm256_andnot_ps(set1(-0.f), x); }
inline __m256 sign_of(__m256 x) { return _mm256_and_ps(set1(-0.f), x); }

inline __m256 tanh8(__m256 x) {
  __m256 a = _mm256_min_ps(abs8(x), set1(20.f));
  __m256 e = expm1_pos(_mm256_add_ps(a, a));
  __m256 t = _mm256_div_ps(e, _mm256_add_ps(e, set1(2.f)));
  return keep_nan(_mm256_or_ps(t, sign_of(x)), x);
}

inline __m256 sigmoid8(__m256 x) {
  __m256 a = _mm256_min_ps(abs8(x), set1(104.f));
  __m256 e = exp_clamped(_mm256_sub_ps(_mm256_setzero_ps(), a));   // exp(-|x|) in (0, 1]
  __m256 d = _mm256_add_ps(set1(1.f), e);
  __m256 num = _mm256_blendv_ps(set1(1.f), e, x);  // sign bit of x selects e (x < 0, also -0)
  return keep_nan(_mm256_div_ps(num, d), x);
}

// erf(a) / a for a < 0.875 as a polynomial in a^2.
inline __m256 erf_small(__m256 a) {
  __m256 u = _mm256_mul_ps(a, a);
  __m256 p = set1(-6.199344643e-04f);
  p = _mm256_fmadd_ps(p, u, set1(5.031424575e-03f));
  p = _mm256_fmadd_ps(p, u, set1(-2.679094858e-02f));
  p = _mm256_fmadd_ps(p, u, set1(1.128244102e-01f));
  p = _mm256_fmadd_ps(p, u, set1(-3.761254847e-01f));
  p = _mm256_fmadd_ps(p, u, set1(1.128379107e+00f));
  return _mm256_mul_ps(p, a);
}

// erfc(a) for a >= 0.5 (a is clamped to 10; erfc(10) < 2^-149 rounds to 0 anyway).
inline __m256 erfc_large(__m256 a) {
  a = _mm256_min_ps(a, set1(10.f));
  __m256 v = _mm256_div_ps(set1(1.f), a);
  // R(v) = erfc(1/v) exp(1/v^2) / v on two ranges of v, polynomials in v - m.
  __m256 t1 = _mm256_sub_ps(v, set1(1.2f));   // a in [0.5, 2.5)
  __m256 p1 = set1(-5.612536334e-04f);
  p1 = _mm256_fmadd_ps(p1, t1, set1(6.272775354e-04f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(6.805824814e-04f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(-1.685741590e-03f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(2.541111782e-03f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(-4.661623389e-03f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(7.219018415e-03f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(-7.403675467e-03f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(-1.563774189e-03f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(3.707758337e-02f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(-1.396578550e-01f));
  p1 = _mm256_fmadd_ps(p1, t1, set1(3.981708884e-01f));
  __m256 t2 = _mm256_sub_ps(v, set1(2.5e-01f));           // a in [2.5, 10]
  __m256 p2 = set1(-7.479631901e-01f);
  p2 = _mm256_fmadd_ps(p2, t2, set1(-2.679489553e-02f));
  p2 = _mm256_fmadd_ps(p2, t2, set1(4.117102921e-01f));
  p2 = _mm256_fmadd_ps(p2, t2, set1(-2.739415765e-01f));
  p2 = _mm256_fmadd_ps(p2, t2, set1(-2.808988467e-02f));
  p2 = _mm256_fmadd_ps(p2, t2, set1(2.195203006e-01f));
  p2 = _mm256_fmadd_ps(p2, t2, set1(-1.677861810e-01f));
  p2 = _mm256_fmadd_ps(p2, t2, set1(-1.194469407e-01f));
  p2 = _mm256_fmadd_ps(p2, t2, set1(5.479978323e-01f));
  __m256 r = _mm256_blendv_ps(p1, p2, _mm256_cmp_ps(a, set1(2.5f), _CMP_GE_OQ));
  // exp(-a^2) with a^2 = hi + lo exactly: exp(-hi) (1 - lo), |lo| < 2^-17.
  __m256 hi = _mm256_mul_ps(a, a);
  __m256 lo = _mm256_fmsub_ps(a, a, hi);
  __m256 e = exp_clamped(_mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), hi), set1(-104.f)));
  e = _mm256_fnmadd_ps(e, lo, e);
  return _mm256_mul_ps(_mm256_mul_ps(e, r), v);
}

// erf(|x|) and erfc(|x|) together.
inline void erf_pos(__m256 a, __m256* erf_a, __m256* erfc_a) {
  __m256 small = _mm256_cmp_ps(a, set1(0.875f), _CMP_LT_OQ);
  __m256 es = erf_small(a);
  __m256 el = erfc_large(_mm256_max_ps(a, set1(0.5f)));
  __m256 one = set1(1.f);
  // erf from the series below 0.875; erfc from the series only below 0.5 (less cancellation).
  *erf_a = _mm256_blendv_ps(_mm256_sub_ps(one, el), es, small);
  *erfc_a = _mm256_blendv_ps(el, _mm256_sub_ps(one, es), _mm256_cmp_ps(a, set1(0.5f), _CMP_LT_OQ));
}

inline __m256 erf8(__m256 x) {
  __m256 e, c;
  erf_pos(abs8(x), &e, &c);
  return keep_nan(_mm256_or_ps(e, sign_of(x)), x);
}

inline __m256 erfc8(__m256 x) {
  __m256 e, c;
  erf_pos(abs8(x), &e, &c);
  // erfc(-a) = 1 + erf(a)
  __m256 r = _mm256_blendv_ps(c, _mm256_add_ps(set1(1.f), e), x);
  return keep_nan(r, x);
}

inline __m256 gelu_erf8(__m256 x) {
  __m256 z = _mm256_mul_ps(x, set1(-0.70710678118654752f));
  return _mm256_mul_ps(_mm256_mul_ps(set1(0.5f), x), erfc8(z));
}

inline __m256 gelu_tanh8(__m256 x) {
  __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  __m256 z = _mm256_mul_ps(set1(2.f * 0.79788456080286535588f), _mm256_fmadd_ps(set1(0.044715f), x3, x));
  return _mm256_mul_ps(x, sigmoid8(z));
}

inline __m256 silu8(__m256 x) { return _mm256_mul_ps(x, sigmoid8(x)); }

template <__m256 (*F)(__m256)>
void apply(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, F(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(buf, x + i, sizeof(float) * (size_t)(n - i));
    _mm256_store_ps(buf, F(_mm256_load_ps(buf)));
    std::memcpy(y + i, buf, sizeof(float) * (size_t)(n - i));
  }
}

}  // namespace

void exp_f32(const float* x, float* y, int64_t n) { apply<exp8>(x, y, n); }
void tanh_f32(const float* x, float* y, int64_t n) { apply<tanh8>(x, y, n); }
void sigmoid_f32(const float* x, float* y, int64_t n) { apply<sigmoid8>(x, y, n); }
void erf_f32(const float* x, float* y, int64_t n) { apply<erf8>(x, y, n); }
void erfc_f32(const float* x, float* y, int64_t n) { apply<erfc8>(x, y, n); }
void gelu_erf_f32(const float* x, float* y, int64_t n) { apply<gelu_erf8>(x, y, n); }
void gelu_tanh_f32(const float* x, float* y, int64_t n) { apply<gelu_tanh8>(x, y, n); }
void silu_f32(const float* x, float* y, int64_t n) { apply<silu8>(x, y, n); }

}  // namespace kiln::cpu::ew

namespace kiln::cpu::ew {
void sqrt_f32(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(x[i])));
}
}  // namespace kiln::cpu::ew

namespace kiln::cpu::ew {
void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i*)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) y[i] = (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x[i]), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), 0);
}
void f16_to_f32(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(x + i))));
  for (; i < n; ++i) y[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x[i])));
}
void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, 4);
    bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    y[i] = nan ? (uint16_t)((u >> 16) | 0x40u) : (uint16_t)r;
  }
}
void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u = (uint32_t)x[i] << 16;
    std::memcpy(y + i, &u, 4);
  }
}
}  // namespace kiln::cpu::ew
