// Helpers shared by the reduction/normalisation ops: float32 staging for other float dtypes.
#pragma once
#include <cstring>

#include "kiln/tensor.h"

namespace kiln::cpu {

// A float32 view of x: x itself when already float32, else a converted copy (float16, bfloat16, float64).
inline Tensor red_as_f32(const Tensor& x) {
  if (x.dtype() == DType::Float32) return Tensor::view(DType::Float32, x.shape(), const_cast<void*>(x.raw()));
  Tensor t(DType::Float32, x.shape());
  float* d = t.data<float>();
  const int64_t n = x.numel();
  switch (x.dtype()) {
    case DType::Float16: for (int64_t i = 0; i < n; ++i) d[i] = half_to_float(x.data<uint16_t>()[i]); break;
    case DType::BFloat16: for (int64_t i = 0; i < n; ++i) d[i] = bfloat16_to_float(x.data<uint16_t>()[i]); break;
    case DType::Float64: for (int64_t i = 0; i < n; ++i) d[i] = (float)x.data<double>()[i]; break;
    default: break;  // callers only pass float dtypes
  }
  return t;
}

// Output staging: returns y itself when float32, else a float32 scratch tensor to fill then store_f32().
inline Tensor red_out_f32(Tensor& y) {
  if (y.dtype() == DType::Float32) return Tensor::view(DType::Float32, y.shape(), y.raw());
  return Tensor(DType::Float32, y.shape());
}

inline void red_store_f32(const Tensor& f, Tensor& y) {
  if (y.dtype() == DType::Float32) {
    if (f.raw() != y.raw() && y.nbytes()) std::memcpy(y.raw(), f.raw(), y.nbytes());
    return;
  }
  const float* s = f.data<float>();
  const int64_t n = y.numel();
  switch (y.dtype()) {
    case DType::Float16: for (int64_t i = 0; i < n; ++i) y.data<uint16_t>()[i] = float_to_half(s[i]); break;
    case DType::BFloat16: for (int64_t i = 0; i < n; ++i) y.data<uint16_t>()[i] = float_to_bfloat16(s[i]); break;
    case DType::Float64: for (int64_t i = 0; i < n; ++i) y.data<double>()[i] = s[i]; break;
    default: break;
  }
}

}  // namespace kiln::cpu
