// What MatMul and Gemm share about their B input (input 1): oneDNN keeps a constant B packed (mm::MatmulCache), a
// deferred one (Tensor::deferred) is copied out as it is packed (mm::DeferredB), `prepare` packs it ahead with a dry
// run, and once the original is freed the reference kernels get it back from the packed copy.
#pragma once
#include "backends/cpu/mm_dnnl.h"
#include "ops/common.h"

namespace kiln {

class ConstantBKernel : public Kernel {
 public:
  // Once oneDNN keeps a constant B in its own layout (or a deferred one was copied out), the original is not needed.
  bool owns_constant(int input) const override { return input == 1 && (fast_.holds_weights() || !own_b_.empty()); }
  void constant_released(int input) override {
    if (input == 1) const_b_.clear();
  }
  bool takes_deferred(int input) const override { return input == 1; }
  // oneDNN's primitive and packed copy of a constant B, made ahead (see Kernel::prepare): a run with dry_ set, in
  // which the kernel makes its oneDNN call with execute = false and computes nothing.
  void prepare(RunContext& ctx) override {
    const Tensor& B = ctx.input(1);
    if (ctx.input(0).dtype() != DType::Float32 || B.dtype() != DType::Float32 || fast_.holds_weights() ||
        (B.raw() == nullptr && !B.is_deferred()) || !const_b_.contains(B))
      return;
    dry_ = true;
    try {
      run(ctx);
    } catch (...) {
      dry_ = false;
      throw;
    }
    dry_ = false;
  }

 protected:
  // Where this call reads B (see mm::DeferredB::source); `staged` holds a copy made for the call.
  const Tensor* b_for_call(const Tensor& B, Tensor* staged) const { return own_b_.source(B, fast_.holds_weights(), staged); }
  // After oneDNN's call or before the reference kernel's: a deferred B that oneDNN did not keep is copied out once.
  void b_used(const Tensor& B) { own_b_.keep_if_unheld(B, fast_.holds_weights()); }
  // B's bytes for the reference kernel: `b` itself, or a freed B written back from oneDNN's copy into `kept` as
  // logical [K, N] (stored [N, K] when trans_b).
  const void* reference_b(const Node& n, const Tensor& B, const Tensor& b, int64_t K, int64_t N, bool trans_b,
                          Tensor* kept) const {
    if (b.raw() || B.numel() == 0) return b.raw();
    *kept = Tensor(B.dtype(), B.shape());
    if (B.dtype() != DType::Float32 || !fast_.unpack_b(K, N, trans_b, kept->data<float>()))
      fail(n.describe() + ": B was released but no prepared copy is held");
    return kept->raw();
  }

  mm::ConstWeights const_b_;  // B values known at plan time
  mm::DeferredB own_b_;       // a deferred B oneDNN does not keep, copied out once
  bool dry_ = false;          // prepare's run: primitive and packed B only
  mm::MatmulCache fast_;
};

}  // namespace kiln
