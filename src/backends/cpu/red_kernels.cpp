// Fast float32 kernels for reductions, softmax and normalisations. See red_kernels.h.
#include "backends/cpu/red_kernels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define KILN_RED_AVX2 1
#endif

namespace kiln::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // elements below which threading costs more than it gains

#ifdef KILN_RED_AVX2
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
inline float hmax(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_max_ps(lo, hi);
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
inline float hmin(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_min_ps(lo, hi);
  lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_min_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
inline double hsum_pd(__m256d v) {
  __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
  lo = _mm_add_pd(lo, hi);
  return _mm_cvtsd_f64(lo) + _mm_cvtsd_f64(_mm_unpackhi_pd(lo, lo));
}

// e^x for x in [-87.3, 88.0]: x = n ln2 + r, |r| <= ln2/2, e^r by its degree-7 Taylor polynomial
// (truncation error < 1e-7 relative), times 2^n built in the exponent bits. Lanes outside the range
// (or NaN) are redone with std::exp so the result is always right.
inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.0f);
  __m256 outside = _mm256_or_ps(_mm256_cmp_ps(x, lo, _CMP_NGE_UQ), _mm256_cmp_ps(x, hi, _CMP_NLE_UQ));
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc);   // ln2 split in a part exact in float
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);   // and the rest
  __m256 p = _mm256_set1_ps(1.f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  if (__builtin_expect(_mm256_movemask_ps(outside) != 0, 0)) {
    alignas(32) float xs[8], ys[8];
    _mm256_store_ps(xs, x);
    _mm256_store_ps(ys, y);
    int m = _mm256_movemask_ps(outside);
    for (int i = 0; i < 8; ++i)
      if (m & (1 << i)) ys[i] = std::exp(xs[i]);
    y = _mm256_load_ps(ys);
  }
  return y;
}
#endif

// --- one contiguous row, reduced to a scalar ---------------------------------------------------

float row_sum(const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef KILN_RED_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
  s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; i < n; ++i) s += x[i];
  return s;
}

float row_abs_sum(const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef KILN_RED_AVX2
  const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_ps(a0, _mm256_and_ps(mask, _mm256_loadu_ps(x + i)));
    a1 = _mm256_add_ps(a1, _mm256_and_ps(mask, _mm256_loadu_ps(x + i + 8)));
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_add_ps(a0, _mm256_and_ps(mask, _mm256_loadu_ps(x + i)));
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) s += std::fabs(x[i]);
  return s;
}

float row_sq_sum(const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef KILN_RED_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (; i + 16 <= n; i += 16) {
    __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    a0 = _mm256_fmadd_ps(v, v, a0);
  }
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

float row_max(const float* x, int64_t n) {
  int64_t i = 0;
  float m = -std::numeric_limits<float>::infinity();
#ifdef KILN_RED_AVX2
  __m256 a0 = _mm256_set1_ps(m), a1 = a0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_max_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_max_ps(a1, _mm256_loadu_ps(x + i + 8));
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_max_ps(a0, _mm256_loadu_ps(x + i));
  m = hmax(_mm256_max_ps(a0, a1));
#endif
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

float row_min(const float* x, int64_t n) {
  int64_t i = 0;
  float m = std::numeric_limits<float>::infinity();
#ifdef KILN_RED_AVX2
  __m256 a0 = _mm256_set1_ps(m), a1 = a0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_min_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_min_ps(a1, _mm256_loadu_ps(x + i + 8));
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_min_ps(a0, _mm256_loadu_ps(x + i));
  m = hmin(_mm256_min_ps(a0, a1));
#endif
  for (; i < n; ++i) m = std::min(m, x[i]);
  return m;
}

float row_prod(const float* x, int64_t n) {
  float p = 1;
  for (int64_t i = 0; i < n; ++i) p *= x[i];
  return p;
}

// sum of exp(x - m), and writes exp(x - m) to out when out != nullptr.
float row_exp_sum(const float* x, float m, float* out, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef KILN_RED_AVX2
  __m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    if (out) _mm256_storeu_ps(out + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  s = hsum(acc);
#endif
  for (; i < n; ++i) {
    float e = std::exp(x[i] - m);
    if (out) out[i] = e;
    s += e;
  }
  return s;
}

float row_logsumexp(const float* x, int64_t n) {
  float m = row_max(x, n);
  if (!std::isfinite(m)) return m;  // all -inf (or empty) -> -inf; +inf -> inf; NaN stays
  return std::log(row_exp_sum(x, m, nullptr, n)) + m;
}

float reduce_row(RedOp op, const float* x, int64_t n) {
  switch (op) {
    case RedOp::Sum: return row_sum(x, n);
    case RedOp::Mean: return row_sum(x, n) / (float)n;
    case RedOp::Max: return row_max(x, n);
    case RedOp::Min: return row_min(x, n);
    case RedOp::Prod: return row_prod(x, n);
    case RedOp::L1: return row_abs_sum(x, n);
    case RedOp::L2: return std::sqrt(row_sq_sum(x, n));
    case RedOp::LogSum: return std::log(row_sum(x, n));
    case RedOp::LogSumExp: return row_logsumexp(x, n);
    case RedOp::SumSquare: return row_sq_sum(x, n);
  }
  return 0;
}

// --- reduce the middle axis of [R, w] into acc[w] (w a block of the inner axis) --------------------

void reduce_cols(RedOp op, const float* x, float* y, int64_t R, int64_t inner, int64_t w) {
  const float inf = std::numeric_limits<float>::infinity();
  float init = 0;
  if (op == RedOp::Max || op == RedOp::LogSumExp) init = -inf;
  if (op == RedOp::Min) init = inf;
  if (op == RedOp::Prod) init = 1;
  for (int64_t j = 0; j < w; ++j) y[j] = init;
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = x + r * inner;
    switch (op) {
      case RedOp::Sum: case RedOp::Mean: case RedOp::LogSum:
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) y[j] += xr[j];
        break;
      case RedOp::Max: case RedOp::LogSumExp:
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) y[j] = std::max(y[j], xr[j]);
        break;
      case RedOp::Min:
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) y[j] = std::min(y[j], xr[j]);
        break;
      case RedOp::Prod:
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) y[j] *= xr[j];
        break;
      case RedOp::L1:
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) y[j] += std::fabs(xr[j]);
        break;
      case RedOp::L2: case RedOp::SumSquare:
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) y[j] += xr[j] * xr[j];
        break;
    }
  }
  switch (op) {
    case RedOp::Mean: for (int64_t j = 0; j < w; ++j) y[j] /= (float)R; break;
    case RedOp::L2: for (int64_t j = 0; j < w; ++j) y[j] = std::sqrt(y[j]); break;
    case RedOp::LogSum: for (int64_t j = 0; j < w; ++j) y[j] = std::log(y[j]); break;
    case RedOp::LogSumExp: {
      float tmp[256], s[256];
      for (int64_t j = 0; j < w; ++j) s[j] = 0;
      for (int64_t r = 0; r < R; ++r) {
        const float* xr = x + r * inner;
        for (int64_t j = 0; j < w; ++j) tmp[j] = std::isfinite(y[j]) ? xr[j] - y[j] : 0.f;
        red_exp_f32(tmp, tmp, w);
        for (int64_t j = 0; j < w; ++j) s[j] += tmp[j];
      }
      for (int64_t j = 0; j < w; ++j)
        if (std::isfinite(y[j])) y[j] = std::log(s[j]) + y[j];
      break;
    }
    default: break;
  }
}

}  // namespace

void red_exp_f32(const float* x, float* y, int64_t n) {
  int64_t i = 0;
#ifdef KILN_RED_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp256(_mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) y[i] = std::exp(x[i]);
}

void red_reduce_f32(RedOp op, const float* x, float* y, int64_t outer, int64_t R, int64_t inner) {
  const int64_t total = outer * std::max<int64_t>(R, 1) * inner;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (total > kParallelMin && outer > 1)
    for (int64_t o = 0; o < outer; ++o) y[o] = reduce_row(op, x + o * R, R);
    return;
  }
  constexpr int64_t B = 256;
  const int64_t nb = (inner + B - 1) / B;
#pragma omp parallel for schedule(static) if (total > kParallelMin && outer * nb > 1)
  for (int64_t t = 0; t < outer * nb; ++t) {
    int64_t o = t / nb, j0 = (t % nb) * B, w = std::min(B, inner - j0);
    reduce_cols(op, x + o * R * inner + j0, y + o * inner + j0, R, inner, w);
  }
}

void red_softmax_f32(bool log, const float* x, float* y, int64_t outer, int64_t R, int64_t inner) {
  if (R == 0) return;
  const int64_t total = outer * R * inner;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (total > kParallelMin && outer > 1)
    for (int64_t o = 0; o < outer; ++o) {
      const float* xr = x + o * R;
      float* yr = y + o * R;
      float m = row_max(xr, R);
      if (std::isinf(m) && m < 0) m = 0;  // a row of -inf: keep exp(x - m) defined (gives 0/0 = NaN like the spec)
      float s = row_exp_sum(xr, m, yr, R);
      if (log) {
        float c = m + std::log(s);
#pragma omp simd
        for (int64_t i = 0; i < R; ++i) yr[i] = xr[i] - c;
      } else {
        float inv = 1.f / s;
#pragma omp simd
        for (int64_t i = 0; i < R; ++i) yr[i] *= inv;
      }
    }
    return;
  }
  constexpr int64_t B = 256;
  const int64_t nb = (inner + B - 1) / B;
#pragma omp parallel for schedule(static) if (total > kParallelMin && outer * nb > 1)
  for (int64_t t = 0; t < outer * nb; ++t) {
    int64_t o = t / nb, j0 = (t % nb) * B, w = std::min(B, inner - j0);
    const float* xb = x + o * R * inner + j0;
    float* yb = y + o * R * inner + j0;
    float m[B], s[B];
    for (int64_t j = 0; j < w; ++j) { m[j] = -std::numeric_limits<float>::infinity(); s[j] = 0; }
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < w; ++j) m[j] = std::max(m[j], xb[r * inner + j]);
    for (int64_t j = 0; j < w; ++j)
      if (std::isinf(m[j]) && m[j] < 0) m[j] = 0;
    for (int64_t r = 0; r < R; ++r) {
      float* yr = yb + r * inner;
      const float* xr = xb + r * inner;
      for (int64_t j = 0; j < w; ++j) yr[j] = xr[j] - m[j];
      red_exp_f32(yr, yr, w);
      for (int64_t j = 0; j < w; ++j) s[j] += yr[j];
    }
    if (log) {
      for (int64_t j = 0; j < w; ++j) s[j] = m[j] + std::log(s[j]);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < w; ++j) yb[r * inner + j] = xb[r * inner + j] - s[j];
    } else {
      for (int64_t j = 0; j < w; ++j) s[j] = 1.f / s[j];
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < w; ++j) yb[r * inner + j] *= s[j];
    }
  }
}

namespace {

// Shifted one-pass moments: with d = x - k (k = the row's first value, close to the data), accumulates
// sum d and sum d^2 in double. The shift removes the cancellation of the textbook E[x^2] - E[x]^2 form,
// so one read of the row gives mean and variance accurately.
void row_shifted_sums_d(const float* x, int64_t n, float k, double* s1, double* s2) {
  int64_t i = 0;
  double a = 0, q = 0;
#ifdef KILN_RED_AVX2
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, q0 = a0, q1 = a0;
  const __m256 vk = _mm256_set1_ps(k);
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + i), vk);
    __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    __m256d d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    a0 = _mm256_add_pd(a0, d0);
    a1 = _mm256_add_pd(a1, d1);
    q0 = _mm256_fmadd_pd(d0, d0, q0);
    q1 = _mm256_fmadd_pd(d1, d1, q1);
  }
  a = hsum_pd(_mm256_add_pd(a0, a1));
  q = hsum_pd(_mm256_add_pd(q0, q1));
#endif
  for (; i < n; ++i) {
    double d = (double)(x[i] - k);
    a += d;
    q += d * d;
  }
  *s1 = a;
  *s2 = q;
}

// sum of (x - c)^2 in double.
double row_centered_sq_d(const float* x, int64_t n, double c) {
  int64_t i = 0;
  double s = 0;
#ifdef KILN_RED_AVX2
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, vc = _mm256_set1_pd(c);
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vc);
    __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vc);
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
  }
  s = hsum_pd(_mm256_add_pd(a0, a1));
#endif
  for (; i < n; ++i) s += (x[i] - c) * (x[i] - c);
  return s;
}

}  // namespace

void red_row_moments_f32(const float* x, int64_t rows, int64_t n, float eps, float* mean, float* inv_std) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelMin && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double m = 0, v = 0;
    if (n) {
      const float k = xr[0];
      double s1, s2;
      row_shifted_sums_d(xr, n, k, &s1, &s2);
      const double md = s1 / (double)n;
      m = (double)k + md;
      v = std::max(0.0, s2 / (double)n - md * md);
    }
    mean[r] = (float)m;
    inv_std[r] = (float)(1.0 / std::sqrt(v + (double)eps));
  }
}

void red_row_normalize_f32(const float* x, float* y, int64_t rows, int64_t n, const float* mean, const float* inv_std,
                           const float* scale, const float* bias) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelMin && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float a = inv_std[r], b = -mean[r] * inv_std[r];
    if (bias) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * a + b) * scale[i] + bias[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * a + b) * scale[i];
    }
  }
}

void red_row_affine_f32(const float* x, float* y, int64_t rows, int64_t n, const float* a, const float* b) {
  const int64_t total = rows * n;
  if (rows >= 2 * omp_get_max_threads() || total <= kParallelMin) {
#pragma omp parallel for schedule(static) if (total > kParallelMin && rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      const float ar = a[r], br = b[r];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * ar + br;
    }
    return;
  }
  // Few long rows: split each row too.
  constexpr int64_t B = 1 << 14;
  const int64_t nb = (n + B - 1) / B;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows * nb; ++t) {
    int64_t r = t / nb, i0 = (t % nb) * B, i1 = std::min(n, i0 + B);
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float ar = a[r], br = b[r];
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) yr[i] = xr[i] * ar + br;
  }
}

void red_rms_norm_f32(const float* x, float* y, int64_t rows, int64_t n, float eps, const float* scale) {
#pragma omp parallel for schedule(static) if (rows * n > kParallelMin && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double ms = n ? row_centered_sq_d(xr, n, 0.0) / (double)n : 0.0;
    const float inv = (float)(1.0 / std::sqrt(ms + (double)eps));
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv * scale[i];
  }
}

void red_batched_matmul_f32(const float* A, const float* B, float* C, int64_t batch, int64_t M, int64_t K, int64_t N) {
  constexpr int64_t MB = 16, KB = 128, NB = 512;
  const int64_t mblocks = (M + MB - 1) / MB;
  const int64_t work = batch * M * N * std::max<int64_t>(K, 1);
#pragma omp parallel for schedule(static) if (work > kParallelMin && batch * mblocks > 1)
  for (int64_t t = 0; t < batch * mblocks; ++t) {
    const int64_t b = t / mblocks, i0 = (t % mblocks) * MB, i1 = std::min(M, i0 + MB);
    const float* Ab = A + b * M * K;
    const float* Bb = B + b * K * N;
    float* Cb = C + b * M * N;
    for (int64_t i = i0; i < i1; ++i) std::fill(Cb + i * N, Cb + (i + 1) * N, 0.f);
    for (int64_t j0 = 0; j0 < N; j0 += NB) {
      const int64_t j1 = std::min(N, j0 + NB);
      for (int64_t k0 = 0; k0 < K; k0 += KB) {
        const int64_t k1 = std::min(K, k0 + KB);
        for (int64_t i = i0; i < i1; ++i) {
          float* c = Cb + i * N;
          for (int64_t k = k0; k < k1; ++k) {
            const float a = Ab[i * K + k];
            const float* bk = Bb + k * N;
#pragma omp simd
            for (int64_t j = j0; j < j1; ++j) c[j] += a * bk[j];
          }
        }
      }
    }
  }
}

}  // namespace kiln::cpu
