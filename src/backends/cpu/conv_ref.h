// Plain reference kernels for Conv / ConvTranspose: direct loops, any float dtype.
#pragma once
#include "backends/cpu/conv_params.h"
#include "kiln/tensor.h"

namespace kiln::cpu {

// y = conv(x, w) + b (b may be null) for Float32, Float64, Float16, BFloat16 (the 16-bit types are widened to
// float). Sums are accumulated in double. Parallel over (n, output channel); deterministic.
void conv_reference(const ConvParams& p, const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y);

// Typed entry points (pointers to contiguous NC<spatial> / weight layouts described in ConvParams).
void conv_reference_f32(const ConvParams& p, const float* x, const float* w, const float* b, float* y);
void conv_reference_f64(const ConvParams& p, const double* x, const double* w, const double* b, double* y);

}  // namespace kiln::cpu

namespace kiln::cpu {


}  // namespace kiln::cpu
