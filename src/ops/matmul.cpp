// MatMul with numpy semantics: 1-D operands promoted (and the added axis removed from the result),
// leading (batch) dims broadcast. float32 runs on oneDNN; other types on the reference kernel.
#include <algorithm>
#include <cstring>
#include <memory>

#include "backends/cpu/mm_ref.h"
#include "ops/common.h"
#include "ops/matmul_common.h"

namespace kiln {
namespace {

bool mm_type_ok(DType t) {
  return t == DType::Float32 || t == DType::Float64 || t == DType::Int32 || t == DType::Int64 ||
         t == DType::UInt32 || t == DType::UInt64;
}

// MatMul, and kiln:FusedMatMul (made by graph/passes): inputs A, B, optional bias [N] (or [1, ..., 1, N]) added to
// every row of the product, then the kiln.post_* elementwise post-ops (backends/cpu/conv_postops.h); float32 only.
class MatMulK : public ConstantBKernel {
 public:
  MatMulK(const Node& n, int, bool fused) : node_(n), fused_(fused) {
    if (!fused && (n.num_inputs() != 2 || !n.has_input(0) || !n.has_input(1)))
      fail(n.describe() + ": MatMul expects 2 inputs (A, B), got " + std::to_string(n.num_inputs()));
    if (fused) {
      if (n.num_inputs() < 2 || n.num_inputs() > 3 || !n.has_input(0) || !n.has_input(1))
        fail(n.describe() + ": FusedMatMul expects 2 or 3 inputs (A, B[, bias]), got " + std::to_string(n.num_inputs()));
      post_ = cpu::post_ops_of(n);
      if (cpu::has_sum(post_)) fail(n.describe() + ": FusedMatMul does not take a 'sum' post-op");
    }
  }

  void infer(InferContext& ctx) override {
    const TensorType& a = ctx.input_type(0);
    const TensorType& b = ctx.input_type(1);
    if (a.dtype != b.dtype)
      fail(node_.describe() + ": A and B must have the same type, got " + a.str() + " and " + b.str());
    if (!mm_type_ok(a.dtype))
      unsupported(node_.describe() + ": MatMul of " + dtype_name(a.dtype) + " is not supported (float32, float64, int32, int64, uint32, uint64)");
    if (const Tensor* w = ctx.input_value(1)) const_b_.remember(*w);
    if (!a.has_shape || !b.has_shape) { ctx.set_output(0, unknown_type(a.dtype)); return; }
    if (a.rank() == 0 || b.rank() == 0)
      fail(node_.describe() + ": MatMul operands must have rank >= 1, got A " + a.str() + " and B " + b.str());
    // Promote 1-D operands: A [K] -> [1, K], B [K] -> [K, 1].
    std::vector<Dim> ad = a.dims, bd = b.dims;
    if (ad.size() == 1) ad.insert(ad.begin(), Dim::of(1));
    if (bd.size() == 1) bd.push_back(Dim::of(1));
    const Dim& ka = ad.back();
    const Dim& kb = bd[bd.size() - 2];
    if (ka.known() && kb.known() && ka.value != kb.value)
      fail(node_.describe() + ": inner dimensions do not match: A " + a.str() + " has K = " + std::to_string(ka.value) +
           " but B " + b.str() + " has K = " + std::to_string(kb.value));
    // Broadcast the batch dims.
    TensorType ab, bb;
    ab.dtype = bb.dtype = a.dtype;
    ab.has_shape = bb.has_shape = true;
    ab.dims.assign(ad.begin(), ad.end() - 2);
    bb.dims.assign(bd.begin(), bd.end() - 2);
    TensorType batch;
    try {
      batch = broadcast_types(node_, {&ab, &bb}, a.dtype);
    } catch (const Error&) {
      fail(node_.describe() + ": batch dimensions of A " + a.str() + " and B " + b.str() + " cannot be broadcast together");
    }
    TensorType y = batch;
    if (a.rank() != 1) y.dims.push_back(ad[ad.size() - 2]);
    if (b.rank() != 1) y.dims.push_back(bd.back());
    if (fused_) check_fused(ctx, y);
    ctx.set_output(0, y);
  }

  void run(RunContext& ctx) override {
    const Tensor& A = ctx.input(0);
    const Tensor& B = ctx.input(1);
    Tensor& Y = ctx.output(0);
    Shape as = A.shape(), bs = B.shape();
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    if (as.back() != bs[bs.size() - 2])
      fail(node_.describe() + ": inner dimensions do not match: A " + shape_str(A.shape()) + " and B " + shape_str(B.shape()));
    const size_t r = std::max(as.size(), bs.size());
    as.insert(as.begin(), r - as.size(), 1);
    bs.insert(bs.begin(), r - bs.size(), 1);
    Shape ys(r);
    for (size_t i = 0; i + 2 < r; ++i) {
      if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1)
        fail(node_.describe() + ": batch dimensions of A " + shape_str(A.shape()) + " and B " + shape_str(B.shape()) +
             " cannot be broadcast together");
      ys[i] = as[i] == 1 ? bs[i] : as[i];
    }
    ys[r - 2] = as[r - 2];
    ys[r - 1] = bs[r - 1];
    if (shape_numel(ys) != Y.numel())
      fail(node_.describe() + ": output buffer " + shape_str(Y.shape()) + " does not hold a product of shape " + shape_str(ys));
    const Tensor* bias = fused_ && ctx.has_input(2) ? &ctx.input(2) : nullptr;
    if (fused_) {
      if (A.dtype() != DType::Float32) unsupported(node_.describe() + ": FusedMatMul needs float32, got " + dtype_name(A.dtype()));
      if (bias && (bias->dtype() != DType::Float32 || bias->numel() != ys.back() || B.rank() < 2 ||
                   (bias->rank() > 0 && bias->dim(-1) != ys.back())))
        fail(node_.describe() + ": bias " + shape_str(bias->shape()) + " must hold one value per output column (" +
             std::to_string(ys.back()) + ")");
    }
    if (Y.numel() == 0) return;
    if (as.back() == 0) {  // K == 0: sum over nothing
      std::memset(Y.raw(), 0, Y.nbytes());
      finish_reference(Y, bias);
      return;
    }
    Tensor b_staged;
    const Tensor* Bp = b_for_call(B, &b_staged);
    if (A.dtype() == DType::Float32) {
      mm::MatmulCall c;
      c.a = A.data<float>();
      c.as = as;
      c.b = Bp->data<float>();
      c.bs = bs;
      c.b_const = const_b_.contains(B);
      c.y = Y.data<float>();
      c.ys = ys;
      if (bias) c.bias = bias->data<float>();
      c.post = post_;
      if (fast_.run(c, !dry_)) {
        b_used(B);
        return;
      }
    }
    if (dry_) return;
    b_used(B);
    Tensor b_kept;  // a freed constant B, written back from oneDNN's copy for the reference kernel
    const void* b_raw = reference_b(node_, B, *Bp, bs[r - 2], bs[r - 1], false, &b_kept);
    mm::ref_matmul(A.dtype(), A.raw(), as, b_raw, bs, Y.raw(), ys);
    finish_reference(Y, bias);
  }

 private:
  void check_fused(InferContext& ctx, const TensorType& y) const {
    if (y.dtype != DType::Float32) unsupported(node_.describe() + ": FusedMatMul needs float32, got " + dtype_name(y.dtype));
    if (!ctx.has_input(2)) return;
    const TensorType& b = ctx.input_type(2);
    if (b.dtype != DType::Float32) fail(node_.describe() + ": bias must be float32, got " + b.str());
    if (!b.has_shape || !y.has_shape) return;
    bool ok = ctx.input_type(1).has_shape && ctx.input_type(1).rank() >= 2 && b.rank() >= 1 && b.rank() <= y.rank();
    for (int i = 0; ok && i + 1 < b.rank(); ++i) ok = !(b.dims[i].known() && b.dims[i].value != 1);
    if (ok && b.dims.back().known() && y.dims.back().known()) ok = b.dims.back().value == y.dims.back().value;
    if (!ok) fail(node_.describe() + ": bias " + b.str() + " must be [N] (or [1, ..., N]) for the output " + y.str());
  }
  // Bias and post-ops on the reference result.
  void finish_reference(Tensor& Y, const Tensor* bias) const {
    if (!fused_) return;
    float* y = Y.data<float>();
    if (bias) {
      const int64_t N = Y.dim(-1), rows = Y.numel() / std::max<int64_t>(1, N);
      const float* bv = bias->data<float>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < N; ++j) y[r * N + j] += bv[j];
    }
    cpu::apply_post_ops_ref(post_, y, Y.numel(), nullptr);
  }

  Node node_;
  bool fused_ = false;
  std::vector<cpu::PostOp> post_;
};

}  // namespace

void register_matmul(Registry& r) {
  r.add("MatMul", 1, [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<MatMulK>(n, opset, false); });
  r.add_domain("kiln", "FusedMatMul", 1,
               [](const Node& n, int opset) -> std::unique_ptr<Kernel> { return std::make_unique<MatMulK>(n, opset, true); });
}

}  // namespace kiln
