// Vectorised float32 transcendental kernels (AVX2+FMA) used by the elementwise ops, with the
// plain std:: reference they are tested against (tests/unit/elementwise_test.cpp).
#pragma once
#include <cmath>
#include <cstdint>

namespace kiln::cpu::ew {

// Array kernels: y[i] = f(x[i]) for i < n. x and y may be the same pointer. Serial; callers parallelise.
void exp_f32(const float* x, float* y, int64_t n);
void tanh_f32(const float* x, float* y, int64_t n);
void sigmoid_f32(const float* x, float* y, int64_t n);
void erf_f32(const float* x, float* y, int64_t n);
void erfc_f32(const float* x, float* y, int64_t n);
void gelu_erf_f32(const float* x, float* y, int64_t n);   // 0.5 x (1 + erf(x / sqrt 2))
void gelu_tanh_f32(const float* x, float* y, int64_t n);  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
void silu_f32(const float* x, float* y, int64_t n);       // x * sigmoid(x)

// Scalar references (plain std::, evaluated in the argument's precision).
namespace ref {
template <class T> inline T sigmoid(T x) {
  // exp of a non-positive argument only, so neither side overflows.
  T e = std::exp(-std::fabs(x));
  return x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}
template <class T> inline T gelu_erf(T x) { return T(0.5) * x * std::erfc(-x * T(0.70710678118654752440)); }
template <class T> inline T gelu_tanh(T x) {
  // 0.5 (1 + tanh(z)) == sigmoid(2 z): same function, no cancellation for negative x.
  T z = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
  return x * sigmoid(T(2) * z);
}
}  // namespace ref

}  // namespace kiln::cpu::ew

namespace kiln::cpu::ew {
void sqrt_f32(const float* x, float* y, int64_t n);  // correctly rounded (vsqrtps), NaN for x < 0
}

namespace kiln::cpu::ew {
// float32 <-> float16 (F16C, round to nearest even) and bfloat16 (round to nearest even, NaN kept
// quiet). Same results as kiln::float_to_half / float_to_bfloat16, checked in the unit test.
void f32_to_f16(const float* x, uint16_t* y, int64_t n);
void f16_to_f32(const uint16_t* x, float* y, int64_t n);
void f32_to_bf16(const float* x, uint16_t* y, int64_t n);
void bf16_to_f32(const uint16_t* x, float* y, int64_t n);
}
