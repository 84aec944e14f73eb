// oneDNN fast paths for float32 MatMul / Gemm (dnnl::matmul) and pooling (pooling_v2_forward),
// with primitives cached per shape configuration. Each object belongs to one kernel (one node).
#pragma once
#include <memory>
#include <vector>

#include "backends/cpu/conv_postops.h"
#include "backends/cpu/dnnl_common.h"
#include "backends/cpu/mm_ref.h"
#include "core/staging.h"

namespace kiln::mm {

// One float32 matrix product: y = alpha * op(a) x op(b) [+ bias] [+ y_before].
struct MatmulCall {
  const float* a = nullptr;
  Shape as;                 // logical dims of op(a): [batch..., M, K]
  bool trans_a = false;     // a is stored as [batch..., K, M]
  const float* b = nullptr;  // may be nullptr for a b_const whose original was freed (MatmulCache::holds_weights)
  Shape bs;                 // logical dims of op(b): [batch..., K, N] (same rank as as)
  bool trans_b = false;     // b is stored as [batch..., N, K]
  bool b_const = false;     // b never changes (initializer): its layout may be reordered once and cached
  float* y = nullptr;
  Shape ys;                 // [batch..., M, N]
  float alpha = 1;
  const float* bias = nullptr;  // length N, added to every row (only with alpha == 1)
  bool accumulate = false;      // y += result (y holds beta * C already)
  std::vector<cpu::PostOp> post;  // elementwise post-ops after bias (no Sum), see backends/cpu/conv_postops.h
};

// Weights known at plan time (initializers, folded constants). Holding them keeps their buffers alive, so a
// tensor found at one of these addresses at run time really is that constant, and a reordered copy oneDNN
// keeps keyed by its address stays valid. The 8 most recent are kept.
class ConstWeights {
 public:
  void remember(const Tensor& w) {
    if (contains(w)) return;
    held_.push_back(w);
    if (held_.size() > 8) held_.erase(held_.begin());
  }
  // A tensor whose storage the plan freed (raw() == nullptr) is always one of these constants.
  bool contains(const Tensor& b) const {
    if (b.raw() == nullptr) return true;
    for (auto& w : held_)
      if (w.raw() == b.raw() && w.shape() == b.shape() && w.dtype() == b.dtype()) return true;
    return false;
  }
  bool empty() const { return held_.empty(); }
  void clear() { held_.clear(); }

 private:
  std::vector<Tensor> held_;
};

// A constant B that may come deferred (Tensor::deferred) to a kernel whose oneDNN path may keep a packed copy of it:
// until one is held, B is copied out for each call (core/staging.h); a call that ends with none held (oneDNN uses B
// as it is, or the reference kernel ran) keeps one plain copy for the calls after it.
class DeferredB {
 public:
  // Where this call reads B: `b` itself, the plain copy, or `staged` (filled here).
  const Tensor* source(const Tensor& b, bool packed_held, Tensor* staged) const {
    if (b.raw() == nullptr && !own_.empty()) return &own_;
    if (b.is_deferred() && !packed_held) {
      *staged = staged_copy(b);
      return staged;
    }
    return &b;
  }
  void keep_if_unheld(const Tensor& b, bool packed_held) {
    if (b.is_deferred() && !packed_held && own_.empty()) own_ = b.materialized();
  }
  bool empty() const { return own_.empty(); }

 private:
  Tensor own_;
};

class MatmulCache {
 public:
  MatmulCache();
  ~MatmulCache();
  // Runs the product with oneDNN; false when oneDNN cannot express it (the caller falls back). With `execute`
  // false it only makes the primitive and keeps a constant B in the layout it wants (Kernel::prepare); a and y
  // are not touched.
  bool run(const MatmulCall& c, bool execute = true);
  // True once a constant B has been copied into a oneDNN-chosen layout: later calls need no original.
  bool holds_weights() const { return static_cast<bool>(kept_); }
  // Writes the kept B back as logical [K, N] (stored [N, K] when trans_b). False when none is kept.
  bool unpack_b(int64_t K, int64_t N, bool trans_b, float* dst) const;

 private:
  struct Entry;
  std::vector<std::unique_ptr<Entry>> entries_;   // most recently used first
  cpu::KeptWeights kept_;  // a constant B, in the layout the first primitive that reordered it chose
};

class PoolCache {
 public:
  PoolCache();
  ~PoolCache();
  // float32 pooling through oneDNN; false when the configuration is not expressible
  // (Lp pooling, include-pad averaging over a ceil_mode overhang, unsupported geometry).
  // channels_last: x and y are stored N, spatial..., C (the logical shapes in g are unchanged).
  bool run(const PoolAttrs& a, const PoolGeom& g, const float* x, float* y, bool channels_last = false);

 private:
  struct Entry;
  std::vector<std::unique_ptr<Entry>> entries_;
};

}  // namespace kiln::mm
