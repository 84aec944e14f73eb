// Shared helpers for the data-movement operators: strided copies, transposes, symbolic dim arithmetic.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ops/common.h"

namespace kiln {
namespace data {

// ---- kernels ---------------------------------------------------------------------------------

// Copies the elements of `src` addressed by `src_strides` (in elements, may be 0 or negative)
// over `shape` into the contiguous row-major `dst`. Merges axes and uses memcpy for contiguous
// runs; parallel (OpenMP) for large copies.
void strided_copy(void* dst, const void* src, const Shape& shape, const std::vector<int64_t>& src_strides, size_t esize);

// Plain reference: one element at a time, index decomposition per element (for tests).
void strided_copy_naive(void* dst, const void* src, const Shape& shape, const std::vector<int64_t>& src_strides, size_t esize);

// out[i_0..i_k] = in[i_perm...]: out dims are in_shape[perm[j]]. Fast blocked kernel.
void transpose(void* dst, const void* src, const Shape& in_shape, const std::vector<int>& perm, size_t esize);
// Layout change of a tensor of logical shape [N, C, S...] (S = product of the spatial dims):
// to_cl: plain [N, C, S] -> channels-last [N, S, C]; otherwise the reverse. esize: bytes per element.
void layout_copy(const void* src, void* dst, int64_t N, int64_t C, int64_t S, size_t esize, bool to_cl);
// Naive reference transpose.
void transpose_naive(void* dst, const void* src, const Shape& in_shape, const std::vector<int>& perm, size_t esize);

// ---- shape helpers -----------------------------------------------------------------------------

// A per-axis list (shape, strides, ...) of a ChannelsLast tensor, from logical order (N, C, D1..Dk) to physical
// order (N, D1..Dk, C); ranks below 3 are returned as they are.
std::vector<int64_t> physical_order(const std::vector<int64_t>& logical);

// Integer values of an optional input when known (int32/int64), else nullopt.
std::optional<std::vector<int64_t>> known_ints(const InferContext& ctx, int i);

// Product of dims: known if all known; a lone symbol times known 1s keeps the symbol; else unknown.
Dim dim_product(const std::vector<Dim>& dims, size_t begin, size_t end);

// Rank-unknown output check: true when the input's rank is unknown (sets output to unknown_type).
inline bool rank_unknown(InferContext& ctx, int in, int out, DType dt) {
  if (ctx.input_type(in).has_shape) return false;
  ctx.set_output(out, unknown_type(dt));
  return true;
}

inline TensorType make_type(DType dt, std::vector<Dim> dims) {
  TensorType t;
  t.dtype = dt;
  t.has_shape = true;
  t.dims = std::move(dims);
  return t;
}

inline std::vector<Dim> unknown_dims(int rank) { return std::vector<Dim>((size_t)rank, Dim()); }

// Merges two dims claimed equal (Concat non-axis dims, etc.); throws naming the node on a mismatch.
Dim merge_equal(const Node& n, const Dim& a, const Dim& b, const std::string& what);

}  // namespace data
}  // namespace kiln
