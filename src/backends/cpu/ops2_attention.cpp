#include "backends/cpu/ops2_attention.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace kiln::cpu::ops2 {

namespace {

inline float softcap_of(float s, float cap) { return cap > 0 ? cap * std::tanh(s / cap) : s; }

// In-place softmax of one row; a row with no finite-or-+inf entry (fully masked) becomes all zeros.
template <class T>
void softmax_row(T* s, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
  if (m == -std::numeric_limits<T>::infinity()) {
    for (int64_t j = 0; j < n; ++j) s[j] = 0;
    return;
  }
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) { s[j] = std::exp(s[j] - m); sum += s[j]; }
  const T inv = T(1) / sum;
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

// exp(x) for x <= 0 (scores minus the row max), vectorisable: x = n ln2 + r, |r| <= ln2 / 2,
// exp(r) by a degree-6 Taylor polynomial (relative error < 2e-7), 2^n by exponent bits.
// Inputs below -87 (including -inf) give 0.
inline float exp_nonpos(float x) {
  const float xc = x < -87.f ? -87.f : x;
  const float n = std::nearbyint(xc * 1.44269504f);
  const float r = xc - n * 0.693145752f - n * 1.42860677e-6f;
  float p = 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x < -87.f ? 0.f : p * scale;
}

// Softmax of one float row with the vectorised exp; fully masked rows become zeros.
void softmax_row_fast(float* s, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
  if (m == -std::numeric_limits<float>::infinity()) {
    for (int64_t j = 0; j < n; ++j) s[j] = 0;
    return;
  }
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    s[j] = exp_nonpos(s[j] - m);
    sum += s[j];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

}  // namespace

void attention_ref(const AttnArgs& a) {
  const int64_t group = a.Hq / a.Hkv;
  std::vector<double> s(a.T);
  std::vector<float> bias(a.T);
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t h = 0; h < a.Hq; ++h) {
      const int64_t hk = h / group;
      const float* K = a.k + (b * a.Hkv + hk) * a.T * a.D;
      const float* V = a.v + (b * a.Hkv + hk) * a.T * a.Dv;
      for (int64_t i = 0; i < a.Sq; ++i) {
        const float* q = a.q + ((b * a.Hq + h) * a.Sq + i) * a.D;
        attn_bias_row(a, b, h, i, bias.data());
        float* qk = a.qk_out ? a.qk_out + ((b * a.Hq + h) * a.Sq + i) * a.T : nullptr;
        for (int64_t j = 0; j < a.T; ++j) {
          double d = 0;
          for (int64_t c = 0; c < a.D; ++c) d += (double)q[c] * K[j * a.D + c];
          d *= a.scale;
          if (a.softcap > 0) d = a.softcap * std::tanh(d / a.softcap);
          if (qk && a.qk_mode <= 1) qk[j] = (float)d;
          s[j] = d + bias[j];
          if (qk && a.qk_mode == 2) qk[j] = (float)s[j];
        }
        softmax_row(s.data(), a.T);
        if (qk && a.qk_mode == 3)
          for (int64_t j = 0; j < a.T; ++j) qk[j] = (float)s[j];
        float* y = a.y + ((b * a.Hq + h) * a.Sq + i) * a.Dv;
        for (int64_t c = 0; c < a.Dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < a.T; ++j) acc += s[j] * V[j * a.Dv + c];
          y[c] = (float)acc;
        }
      }
    }
}

void attention_fast(const AttnArgs& a) {
  constexpr int64_t RB = 4;  // query rows per block (each K^T / V row loaded once per block)
  const int64_t group = a.Hq / a.Hkv;
  const int64_t nblk = (a.Sq + RB - 1) / RB;
  const int64_t T = a.T, D = a.D, Dv = a.Dv;
  const int64_t tasks = a.B * a.Hq;
#pragma omp parallel
  {
    std::vector<float> kt(D * T), s(RB * T), bias(T);
    int64_t kt_for = -1;  // (b * Hkv + hk) whose K^T is in kt
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / a.Hq, h = task % a.Hq, hk = h / group;
      const int64_t kv = b * a.Hkv + hk;
      const float* K = a.k + kv * T * D;
      const float* V = a.v + kv * T * Dv;
      if (kt_for != kv) {
        for (int64_t j = 0; j < T; ++j)
          for (int64_t c = 0; c < D; ++c) kt[c * T + j] = K[j * D + c];
        kt_for = kv;
      }
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t i0 = blk * RB, rows = std::min(RB, a.Sq - i0);
        const float* Q = a.q + ((b * a.Hq + h) * a.Sq + i0) * D;
        // Scores: s[r][j] = sum_c q[r][c] * K^T[c][j]
        std::fill(s.begin(), s.begin() + rows * T, 0.f);
        for (int64_t c = 0; c < D; ++c) {
          const float* kr = kt.data() + c * T;
          if (rows == RB) {
            const float q0 = Q[c], q1 = Q[D + c], q2 = Q[2 * D + c], q3 = Q[3 * D + c];
            float *s0 = s.data(), *s1 = s0 + T, *s2 = s1 + T, *s3 = s2 + T;
#pragma omp simd
            for (int64_t j = 0; j < T; ++j) {
              const float kv_ = kr[j];
              s0[j] += q0 * kv_; s1[j] += q1 * kv_; s2[j] += q2 * kv_; s3[j] += q3 * kv_;
            }
          } else {
            for (int64_t r = 0; r < rows; ++r) {
              const float qr = Q[r * D + c];
              float* sr = s.data() + r * T;
#pragma omp simd
              for (int64_t j = 0; j < T; ++j) sr[j] += qr * kr[j];
            }
          }
        }
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r;
          float* sr = s.data() + r * T;
          float* qk = a.qk_out ? a.qk_out + ((b * a.Hq + h) * a.Sq + i) * T : nullptr;
          attn_bias_row(a, b, h, i, bias.data());
          for (int64_t j = 0; j < T; ++j) {
            float d = softcap_of(sr[j] * a.scale, a.softcap);
            if (qk && a.qk_mode <= 1) qk[j] = d;
            sr[j] = d + bias[j];
          }
          if (qk && a.qk_mode == 2) std::copy(sr, sr + T, qk);
          softmax_row_fast(sr, T);
          if (qk && a.qk_mode == 3) std::copy(sr, sr + T, qk);
        }
        // Output: y[r][:] = sum_j p[r][j] * V[j][:]
        float* Y = a.y + ((b * a.Hq + h) * a.Sq + i0) * Dv;
        std::fill(Y, Y + rows * Dv, 0.f);
        for (int64_t j = 0; j < T; ++j) {
          const float* vr = V + j * Dv;
          for (int64_t r = 0; r < rows; ++r) {
            const float p = s[r * T + j];
            float* yr = Y + r * Dv;
#pragma omp simd
            for (int64_t c = 0; c < Dv; ++c) yr[c] += p * vr[c];
          }
        }
      }
    }
  }
}

}  // namespace kiln::cpu::ops2
