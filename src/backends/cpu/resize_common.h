// Resize/Upsample machinery shared by the op and its kernels: per-axis sampling taps computed once per
// shape (coordinate transformation + interpolation coefficients), a plain reference kernel that applies
// them directly in N-D, and fast float32 / data-movement kernels that apply them separably.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::cpu {

enum class ResizeMode { Nearest, Linear, Cubic };
enum class CoordMode { HalfPixel, HalfPixelSymmetric, PytorchHalfPixel, AlignCorners, Asymmetric, TfHalfPixelForNN, TfCropAndResize };
// Simple: the pre-opset-11 rule (ceil when downsampling, truncate otherwise).
enum class NearestMode { RoundPreferFloor, RoundPreferCeil, Floor, Ceil, Simple };

struct ResizeOptions {
  ResizeMode mode = ResizeMode::Nearest;
  CoordMode coord = CoordMode::HalfPixel;
  NearestMode nearest = NearestMode::RoundPreferFloor;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  bool antialias = false;
  float extrapolation_value = 0.f;
};

// Sampling of one axis: output index o reads input indices idx[o*taps + k] with weights w[o*taps + k]
// (indices already clamped into [0, in)). extrap[o] marks outputs that take the extrapolation value.
struct ResizeAxis {
  int64_t in = 0, out = 0;
  int taps = 1;
  bool identity = false;   // out == in and output o is exactly input o
  bool any_extrap = false;
  std::vector<int64_t> idx;
  std::vector<float> w;    // empty for nearest
  std::vector<uint8_t> extrap;
};

// scale: the axis' scale factor (out/in for sizes); roi_start/end used only by tf_crop_and_resize.
ResizeAxis make_resize_axis(int64_t in, int64_t out, double scale, double roi_start, double roi_end, const ResizeOptions& o);

struct ResizePlan {
  Shape in_shape, out_shape;
  std::vector<ResizeAxis> axes;  // one per dimension
  bool nearest = true;
  bool any_extrap = false;
  float extrapolation_value = 0.f;
};

ResizePlan make_resize_plan(const Shape& in, const Shape& out, const std::vector<double>& scales,
                            const std::vector<double>& roi_start, const std::vector<double>& roi_end, const ResizeOptions& o);

// Plain N-D reference: every output element sums the tensor product of its axes' taps in double.
template <class T>
void resize_reference(const ResizePlan& p, const T* x, T* y);

// Fast paths. They return false when the plan's layout is not one they handle (then use the reference).
// Float32 separable kernel: resized axes must lie within the last three dimensions.
bool resize_fast_f32(const ResizePlan& p, const float* x, float* y);
// Nearest gather for any element size (no extrapolation): pure data movement.
bool resize_nearest_bytes(const ResizePlan& p, const void* x, void* y, size_t elem_size);

}  // namespace kiln::cpu
