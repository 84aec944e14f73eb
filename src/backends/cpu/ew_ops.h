// Building blocks shared by the elementwise operator files: broadcast row loops for 1-3 inputs,
// unary contiguous loops, and float16/bfloat16 staging through float32.
#pragma once
#include <cmath>
#include <cstring>
#include <type_traits>

#include "backends/cpu/ew_iter.h"
#include "backends/cpu/ew_math.h"
#include "ops/common.h"

namespace kiln::cpu::ew {

// Note for op lambdas: GCC (with its default -ftrapping-math) vectorises selects only in the
// max/min shapes `a > b ? a : b` / `a < b ? a : b`; write other selects in those terms.

// One row of a binary op. sa/sb are 0 (broadcast scalar) or 1 (contiguous); each case is its own
// simple loop so the compiler vectorises it.
template <class TA, class TB, class R, class Op>
inline void binary_row(R* o, const TA* a, int64_t sa, const TB* b, int64_t sb, int64_t n, Op op) {
  if (sa && sb) {
    for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], b[i]);
  } else if (sa) {
    const TB bv = *b;
    for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], bv);
  } else if (sb) {
    const TA av = *a;
    for (int64_t i = 0; i < n; ++i) o[i] = op(av, b[i]);
  } else {
    const R v = op(*a, *b);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  }
}

// o = op(a, b) with numpy broadcasting; o has shape `out`.
template <class TA, class TB, class R, class Op>
void binary_broadcast(const TA* a, const Shape& as, const TB* b, const Shape& bs, R* o, const Shape& out, Op op) {
  BroadcastPlan p = make_broadcast_plan(out, {as, bs});
  for_each_row(p, [&](int64_t oo, const int64_t* off, int64_t n) {
    binary_row(o + oo, a + off[0], p.inner_stride[0], b + off[1], p.inner_stride[1], n, op);
  });
}

// Plain reference of binary_broadcast (N-d index walk), for tests.
template <class TA, class TB, class R, class Op>
void binary_reference(const TA* a, const Shape& as, const TB* b, const Shape& bs, R* o, const Shape& out, Op op) {
  std::vector<std::vector<int64_t>> offs;
  reference_offsets(out, {as, bs}, &offs);
  for (size_t e = 0; e < offs[0].size(); ++e) o[e] = op(a[offs[0][e]], b[offs[1][e]]);
}

// o = op(c, x, y) with 3-way broadcasting (Where).
template <class TC, class T, class R, class Op>
void ternary_broadcast(const TC* c, const Shape& cs, const T* x, const Shape& xs, const T* y, const Shape& ys,
                       R* o, const Shape& out, Op op) {
  BroadcastPlan p = make_broadcast_plan(out, {cs, xs, ys});
  for_each_row(p, [&](int64_t oo, const int64_t* off, int64_t n) {
    const TC* cp = c + off[0];
    const T* xp = x + off[1];
    const T* yp = y + off[2];
    int64_t s0 = p.inner_stride[0], s1 = p.inner_stride[1], s2 = p.inner_stride[2];
    R* op_ = o + oo;
    if (s0 && s1 && s2) {
      for (int64_t i = 0; i < n; ++i) op_[i] = op(cp[i], xp[i], yp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) op_[i] = op(cp[i * s0], xp[i * s1], yp[i * s2]);
    }
  });
}

// y[i] = f(x[i]) over contiguous data, chunked in parallel for large n.
template <class T, class R, class F>
inline void unary_loop(const T* x, R* y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}
template <class T, class R, class F>
void unary_map(const T* x, R* y, int64_t n, F f) {
  parallel_chunks(n, [&](int64_t b, int64_t e) { unary_loop(x + b, y + b, e - b, f); });
}

inline bool is_half(DType t) { return t == DType::Float16 || t == DType::BFloat16; }

// float16/bfloat16 -> float32 copy (other dtypes: returned as a view of the same data).
inline Tensor to_f32(const Tensor& t) {
  if (!is_half(t.dtype())) return Tensor::view(t.dtype(), t.shape(), const_cast<void*>(t.raw()));
  Tensor f(DType::Float32, t.shape());
  const uint16_t* s = t.data<uint16_t>();
  float* d = f.data<float>();
  bool h = t.dtype() == DType::Float16;
  parallel_chunks(t.numel(), [&](int64_t b, int64_t e) {
    if (h) f16_to_f32(s + b, d + b, e - b);
    else bf16_to_f32(s + b, d + b, e - b);
  });
  return f;
}

// float32 -> float16/bfloat16 into `out` (rounding to nearest even).
inline void from_f32(const Tensor& f, Tensor& out) {
  const float* s = f.data<float>();
  uint16_t* d = out.data<uint16_t>();
  bool h = out.dtype() == DType::Float16;
  parallel_chunks(f.numel(), [&](int64_t b, int64_t e) {
    if (h) f32_to_f16(s + b, d + b, e - b);
    else f32_to_bf16(s + b, d + b, e - b);
  });
}

// Calls f(T{}) for numeric dtypes and bool (as uint8 with is_bool set by the caller's dtype check).
template <class F>
void visit_numeric_or_bool(DType t, F&& f) {
  if (t == DType::Bool) { f(uint8_t{}); return; }
  visit_numeric(t, f);
}

}  // namespace kiln::cpu::ew
