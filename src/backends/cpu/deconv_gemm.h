// ConvTranspose whose kernel equals its stride (no padding, no dilation, one group): the 2x2(x2)/2 upsampling of
// U-Nets. Each input cell then owns its own output block of k taps, so the whole layer is one matrix product,
// Y_taps[cells, k*M] = X[cells, C] * W[C, k*M], whose rows are scattered to their blocks. oneDNN's deconvolution
// takes 4x longer on these (nnU-Net-style 3D U-Net, 64->32 channels up to 64x128x128: 93 ms against 21 ms).
#pragma once
#include <cstdint>
#include <vector>

#include "backends/cpu/conv_params.h"
#include "backends/cpu/conv_postops.h"

namespace kiln::cpu {

class GemmDeconv {
 public:
  // True for the problems this class computes: transposed, one group, kernel == stride, no padding or dilation, and
  // the output exactly in * stride on every axis (no output_padding / larger output_shape).
  static bool applies(const ConvParams& p);
  // Whether it pays here: oneDNN's sgemm generates its kernels on its first call in a process (~22 ms), more than
  // small layers gain (unet3d_small's start-up 21 -> 40 ms), so only outputs of >= 4M elements (16 MiB) take it
  // (unet3d's 128 MiB layer gains 70 ms per run, its 16 MiB one 19 ms).
  static bool worth_it(const ConvParams& p) { return p.N * p.M * p.out_size() >= (int64_t(1) << 22); }

  // Copies W (ONNX layout [C, M, k...]) into the product's layout; kept until the next pack.
  void pack(const ConvParams& p, const float* w);
  bool holds_weights() const { return !packed_.empty(); }
  // Writes the kept weights back in ONNX's layout (for the reference kernel).
  void unpack(const ConvParams& p, float* w) const;

  // y = post(deconv(x, W) + b) with the packed W; x and y plain [N, C/M, spatial] or channels-last as the flags say.
  // post: element-wise post-ops only (no Sum).
  void run(const ConvParams& p, const float* x, const float* b, float* y, bool x_cl, bool y_cl,
           const std::vector<PostOp>& post) const;

 private:
  std::vector<float> packed_;  // [C, taps, M], taps in (kd, kh, kw) order
};

}  // namespace kiln::cpu
