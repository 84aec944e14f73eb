// Reference (plain loop) kernels for MatMul, Gemm and pooling, and the pooling geometry shared
// by the reference and oneDNN paths. These are the semantics the fast kernels are tested against.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::mm {

// ---- MatMul / Gemm ---------------------------------------------------------------------------

// Y[batch..., M, N] = A[batchA..., M, K] x B[batchB..., K, N], batch dims broadcast numpy-style.
// All three shapes have rank >= 2 (1-D operands already promoted by the caller) and the same rank
// (caller left-pads with 1s). Float types accumulate in double, integers in int64 (wrapping to T).
void ref_matmul(DType t, const void* a, const Shape& as, const void* b, const Shape& bs, void* y, const Shape& ys);

// Y[M, N] = alpha * op(A) op(B) + beta * C, C (optional, may be null) broadcast unidirectionally
// from cs (rank <= 2) to [M, N]. op(A) is [M, K]: A is [M, K], or [K, M] when trans_a.
void ref_gemm(DType t, const void* a, const void* b, const void* c, const Shape& cs, void* y, int64_t M, int64_t N,
              int64_t K, bool trans_a, bool trans_b, double alpha, double beta);

// ---- Pooling ----------------------------------------------------------------------------------

enum class PoolKind { Max, Avg, Lp };

// Attributes of a pooling node, normalised (one value per spatial axis).
struct PoolAttrs {
  PoolKind kind = PoolKind::Max;
  std::vector<int64_t> kernel, strides, dilations;
  std::vector<int64_t> pads;          // [b0, b1, ..., e0, e1, ...] as in ONNX; used when auto_pad is NOTSET
  std::string auto_pad = "NOTSET";    // NOTSET, VALID, SAME_UPPER, SAME_LOWER
  bool ceil_mode = false;
  bool count_include_pad = false;     // AveragePool
  int storage_order = 0;              // MaxPool Indices: 0 row major, 1 column major
  double p = 2;                       // LpPool
};

// Concrete geometry for one input shape.
struct PoolGeom {
  int nsp = 0;                                 // spatial rank
  int64_t N = 0, C = 0;
  std::vector<int64_t> in, out, kernel, strides, dilations, pad_l, pad_r;
  Shape out_shape() const;
};

// Output size of one spatial axis following the ONNX rules; -1 when in is unknown (-1).
// Writes the effective begin/end pads (auto_pad resolved) when pl/pr are given.
int64_t pool_out_dim(const PoolAttrs& a, int axis, int64_t in, int64_t* pl = nullptr, int64_t* pr = nullptr);

// Geometry for input shape xs (rank >= 3); throws kiln::Error(InvalidArgument) with `who` on bad shapes.
PoolGeom pool_geometry(const PoolAttrs& a, const Shape& xs, const std::string& who);

// Reference pooling over float32/float64/int8/uint8 x; indices (int64, may be null) for MaxPool.
// Avg: count_include_pad counts pad positions inside [-pad_l, in + pad_r) (not the extra ceil_mode
// overhang); otherwise only real elements. Lp: pads contribute 0.
void ref_pool(DType t, const PoolAttrs& a, const PoolGeom& g, const void* x, void* y, int64_t* indices);

// Global pooling over all spatial positions of each (n, c) plane: Max, Avg, or Lp with a.p.
void global_pool(DType t, PoolKind kind, double p, const void* x, void* y, int64_t planes, int64_t plane_size);

}  // namespace kiln::mm
