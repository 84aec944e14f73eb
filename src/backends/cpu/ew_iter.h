// Iteration helpers for elementwise kernels: contiguous chunking with OpenMP for large tensors,
// and broadcast "row" plans that collapse an N-d broadcast into outer rows x a contiguous inner run.
#pragma once
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::cpu::ew {

// Below this many output elements, elementwise work runs on the calling thread (thread start-up
// costs more than the work).
constexpr int64_t kParallelMin = 32768;

// Calls f(begin, end) over [0, n) in chunks; in parallel when n is large.
template <class F>
void parallel_chunks(int64_t n, F&& f) {
  if (n < kParallelMin || omp_get_max_threads() == 1) {
    if (n > 0) f(int64_t(0), n);
    return;
  }
  constexpr int64_t kChunk = 16384;  // multiple of 64 bytes for every dtype; keeps chunks cache-sized
  int64_t nchunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < nchunks; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk));
}

constexpr int kMaxInputs = 3;

// Output shape split as rows x inner. For row r, input j starts at element offset in_off(r, j) and
// steps by inner_stride[j] (0: broadcast scalar along the row, 1: contiguous).
struct BroadcastPlan {
  int nin = 0;
  int64_t inner = 1, rows = 1;
  std::array<int64_t, kMaxInputs> inner_stride{};
  std::vector<int64_t> outer_dims;                          // collapsed outer dims (row-major)
  std::vector<std::array<int64_t, kMaxInputs>> outer_strides;  // per outer dim, per input

  // Element offsets of every input at the start of row r.
  void row_offsets(int64_t r, int64_t* off) const {
    for (int j = 0; j < nin; ++j) off[j] = 0;
    for (int d = (int)outer_dims.size() - 1; d >= 0 && r > 0; --d) {
      int64_t i = r % outer_dims[d];
      r /= outer_dims[d];
      for (int j = 0; j < nin; ++j) off[j] += i * outer_strides[d][j];
    }
  }
};

// Builds the plan for inputs of shapes `ins` broadcast to `out` (out must be their broadcast).
inline BroadcastPlan make_broadcast_plan(const Shape& out, const std::vector<Shape>& ins) {
  BroadcastPlan p;
  p.nin = (int)ins.size();
  int rank = (int)out.size();
  // Per dim (dims of size 1 dropped): size and per-input stride.
  std::vector<int64_t> dims;
  std::vector<std::array<int64_t, kMaxInputs>> st;
  std::vector<std::array<int64_t, kMaxInputs>> full(rank);
  for (int j = 0; j < p.nin; ++j) {
    const Shape& s = ins[j];
    int off = rank - (int)s.size();
    int64_t acc = 1;
    for (int d = rank - 1; d >= 0; --d) {
      int64_t sz = d >= off ? s[d - off] : 1;
      full[d][j] = sz == 1 ? 0 : acc;
      acc *= sz;
    }
  }
  for (int d = 0; d < rank; ++d) {
    if (out[d] == 1) continue;
    dims.push_back(out[d]);
    st.push_back(full[d]);
  }
  // Merge dim i into the following one when every input walks them as one dim.
  std::vector<int64_t> md;
  std::vector<std::array<int64_t, kMaxInputs>> ms;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (!md.empty()) {
      bool ok = true;
      for (int j = 0; j < p.nin; ++j)
        if (ms.back()[j] != st[d][j] * dims[d]) ok = false;
      if (ok) {
        md.back() *= dims[d];
        ms.back() = st[d];
        continue;
      }
    }
    md.push_back(dims[d]);
    ms.push_back(st[d]);
  }
  if (md.empty()) {  // scalar output
    p.inner = 1;
    for (int j = 0; j < p.nin; ++j) p.inner_stride[j] = 0;
    return p;
  }
  p.inner = md.back();
  for (int j = 0; j < p.nin; ++j) p.inner_stride[j] = ms.back()[j];
  md.pop_back();
  ms.pop_back();
  p.outer_dims = md;
  p.outer_strides = ms;
  for (int64_t d : md) p.rows *= d;
  return p;
}

// Calls g(r, in_offsets) for rows r0 <= r < r1 in order, stepping the offsets from one row to the next like an
// odometer (row_offsets' divisions only once, for r0: with short rows they cost as much as the row's own work).
template <class G>
void walk_rows(const BroadcastPlan& p, int64_t r0, int64_t r1, G&& g) {
  if (r0 >= r1) return;
  const int nd = (int)p.outer_dims.size();
  std::vector<int64_t> idx((size_t)nd);
  for (int64_t d = nd - 1, r = r0; d >= 0; --d) {
    idx[(size_t)d] = r % p.outer_dims[(size_t)d];
    r /= p.outer_dims[(size_t)d];
  }
  int64_t off[kMaxInputs];
  p.row_offsets(r0, off);
  for (int64_t r = r0;;) {
    g(r, off);
    if (++r == r1) return;
    for (int d = nd - 1; d >= 0; --d) {  // carry into the outer dims
      const auto& st = p.outer_strides[(size_t)d];
      if (++idx[(size_t)d] < p.outer_dims[(size_t)d]) {
        for (int j = 0; j < p.nin; ++j) off[j] += st[(size_t)j];
        break;
      }
      idx[(size_t)d] = 0;
      for (int j = 0; j < p.nin; ++j) off[j] -= (p.outer_dims[(size_t)d] - 1) * st[(size_t)j];
    }
  }
}

// Calls f(out_offset, in_offsets, n) for pieces of rows covering the output, in parallel when large.
// in_offsets[j] is input j's element offset for output element out_offset; along the piece input j
// advances by plan.inner_stride[j].
template <class F>
void for_each_row(const BroadcastPlan& p, F&& f) {
  int64_t total = p.rows * p.inner;
  if (total == 0) return;
  auto whole_rows = [&](int64_t r0, int64_t r1) {
    walk_rows(p, r0, r1, [&](int64_t r, const int64_t* off) { f(r * p.inner, off, p.inner); });
  };
  if (total < kParallelMin || omp_get_max_threads() == 1) {
    whole_rows(0, p.rows);
    return;
  }
  if (p.rows >= 64) {  // whole rows, one contiguous range of them per thread
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      whole_rows(p.rows * t / nt, p.rows * (t + 1) / nt);
    }
    return;
  }
  // Few rows: split the long ones so that there are enough pieces to balance threads.
  int64_t per_row = std::max<int64_t>(1, std::min<int64_t>(p.inner / 4096, (64 + p.rows - 1) / p.rows));
  int64_t piece = (p.inner + per_row - 1) / per_row;
  piece = (piece + 15) / 16 * 16;
  per_row = (p.inner + piece - 1) / piece;
  int64_t items = p.rows * per_row;
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    int64_t r = it / per_row, c = it % per_row;
    int64_t b = c * piece, e = std::min(p.inner, b + piece);
    int64_t off[kMaxInputs];
    p.row_offsets(r, off);
    for (int j = 0; j < p.nin; ++j) off[j] += b * p.inner_stride[j];
    f(r * p.inner + b, off, e - b);
  }
}

// Reference: element offsets by a plain N-d index walk (used to test the plan).
inline void reference_offsets(const Shape& out, const std::vector<Shape>& ins, std::vector<std::vector<int64_t>>* offs) {
  int rank = (int)out.size();
  int64_t n = shape_numel(out);
  offs->assign(ins.size(), std::vector<int64_t>((size_t)n));
  std::vector<int64_t> idx(rank, 0);
  for (int64_t e = 0; e < n; ++e) {
    for (size_t j = 0; j < ins.size(); ++j) {
      const Shape& s = ins[j];
      int off = rank - (int)s.size();
      int64_t o = 0;
      for (int d = 0; d < (int)s.size(); ++d) o = o * s[d] + (s[d] == 1 ? 0 : idx[off + d]);
      (*offs)[j][e] = o;
    }
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[d] < out[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace kiln::cpu::ew
