// Resolved geometry of one convolution / transposed convolution, shared by the CPU conv kernels.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace kiln::cpu {

// Always stored as 3 spatial axes: a 1D/2D problem has leading unit axes (in = k = out = 1, no padding).
// Conv:          X [N, C, in...], W [M, C/G, k...],  Y [N, M, out...]
// ConvTranspose: X [N, C, in...], W [C, M/G, k...],  Y [N, M, out...]
// For ConvTranspose, input cell i and kernel tap t land on output cell i*stride + t*dil - pad_l (dropped when
// outside [0, out)); pad_r is informative only (out already accounts for it and for output_padding).
struct ConvParams {
  int nsp = 2;  // spatial dims of the original problem (1..3)
  bool transpose = false;
  int64_t N = 1, C = 1, M = 1, G = 1;
  std::array<int64_t, 3> in{1, 1, 1}, k{1, 1, 1}, out{1, 1, 1}, stride{1, 1, 1}, dil{1, 1, 1}, pad_l{0, 0, 0}, pad_r{0, 0, 0};

  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t k_size() const { return k[0] * k[1] * k[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
  // Upper bound on the number of products summed into one output element (for error bounds).
  int64_t reduction() const { return (C / G) * k_size(); }
  std::string str() const;   // for messages and tests
};

}  // namespace kiln::cpu
