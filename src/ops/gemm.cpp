// Gemm: Y = alpha * op(A) op(B) + beta * C, C broadcast unidirectionally to [M, N].
// float32 runs on oneDNN matmul (transposes as strides, alpha as output scale, C as bias or
// pre-filled accumulator); other types on the reference kernel.
#include "backends/cpu/mm_ref.h"
#include "ops/common.h"
#include "ops/matmul_common.h"

namespace kiln {
namespace {

class GemmK : public ConstantBKernel {
 public:
  GemmK(const Node& n, int opset) : node_(n), opset_(opset) {
    alpha_ = n.attr_float("alpha", 1.0f);
    beta_ = n.attr_float("beta", 1.0f);
    ta_ = n.attr_int("transA", 0) != 0;
    tb_ = n.attr_int("transB", 0) != 0;
    const int need = opset < 11 ? 3 : 2;
    if (n.num_inputs() < need || n.num_inputs() > 3 || !n.has_input(0) || !n.has_input(1) || (need == 3 && !n.has_input(2)))
      fail(n.describe() + ": Gemm (opset " + std::to_string(opset) + ") expects " + (need == 3 ? "3 inputs (A, B, C)" : "2 or 3 inputs (A, B[, C])") +
           ", got " + std::to_string(n.num_inputs()));
  }

  void infer(InferContext& ctx) override {
    const TensorType& a = ctx.input_type(0);
    const TensorType& b = ctx.input_type(1);
    if (a.dtype != b.dtype) fail(node_.describe() + ": A and B must have the same type, got " + a.str() + " and " + b.str());
    if (!(a.dtype == DType::Float32 || a.dtype == DType::Float64 || a.dtype == DType::Int32 || a.dtype == DType::Int64 ||
          a.dtype == DType::UInt32 || a.dtype == DType::UInt64))
      unsupported(node_.describe() + ": Gemm of " + dtype_name(a.dtype) + " is not supported (float32, float64, int32, int64, uint32, uint64)");
    if (const Tensor* w = ctx.input_value(1)) const_b_.remember(*w);
    const TensorType* c = ctx.has_input(2) ? &ctx.input_type(2) : nullptr;
    if (c && c->dtype != a.dtype) fail(node_.describe() + ": C must have the type of A, got " + c->str() + " and A " + a.str());
    if (a.has_shape && a.rank() != 2) fail(node_.describe() + ": A must be 2-D, got " + a.str());
    if (b.has_shape && b.rank() != 2) fail(node_.describe() + ": B must be 2-D, got " + b.str());
    if (c && c->has_shape && c->rank() > 2) fail(node_.describe() + ": C must have rank <= 2, got " + c->str());
    Dim M = a.has_shape ? a.dims[ta_ ? 1 : 0] : Dim();
    Dim Ka = a.has_shape ? a.dims[ta_ ? 0 : 1] : Dim();
    Dim Kb = b.has_shape ? b.dims[tb_ ? 1 : 0] : Dim();
    Dim N = b.has_shape ? b.dims[tb_ ? 0 : 1] : Dim();
    if (Ka.known() && Kb.known() && Ka.value != Kb.value)
      fail(node_.describe() + ": inner dimensions do not match: op(A) from A " + a.str() + (ta_ ? " (transA)" : "") +
           " has K = " + std::to_string(Ka.value) + " but op(B) from B " + b.str() + (tb_ ? " (transB)" : "") +
           " has K = " + std::to_string(Kb.value));
    if (c && c->has_shape) {
      // Unidirectional: each dim of C (right-aligned) is 1 or equals the output dim.
      const Dim* out[2] = {&M, &N};
      for (int i = 0; i < c->rank(); ++i) {
        const Dim& cd = c->dims[i];
        const Dim& od = *out[2 - c->rank() + i];
        if (cd.known() && cd.value != 1 && od.known() && cd.value != od.value)
          fail(node_.describe() + ": C " + c->str() + " cannot be broadcast to the output [" + std::to_string(M.value) + ", " +
               std::to_string(N.value) + "]");
      }
    }
    TensorType y;
    y.dtype = a.dtype;
    y.has_shape = true;
    y.dims = {M, N};
    ctx.set_output(0, y);
  }

  void run(RunContext& ctx) override {
    const Tensor& A = ctx.input(0);
    const Tensor& B = ctx.input(1);
    const Tensor* C = ctx.has_input(2) ? &ctx.input(2) : nullptr;
    Tensor& Y = ctx.output(0);
    if (A.rank() != 2 || B.rank() != 2) fail(node_.describe() + ": A and B must be 2-D, got " + shape_str(A.shape()) + " and " + shape_str(B.shape()));
    const int64_t M = A.dim(ta_ ? 1 : 0), K = A.dim(ta_ ? 0 : 1), N = B.dim(tb_ ? 0 : 1);
    if (B.dim(tb_ ? 1 : 0) != K)
      fail(node_.describe() + ": inner dimensions do not match: A " + shape_str(A.shape()) + " and B " + shape_str(B.shape()));
    if (Y.shape() != Shape{M, N}) fail(node_.describe() + ": output buffer " + shape_str(Y.shape()) + " is not [M, N]");
    if (C) {
      const Shape& cs = C->shape();
      if (cs.size() > 2 || (cs.size() >= 1 && cs.back() != 1 && cs.back() != N) || (cs.size() == 2 && cs[0] != 1 && cs[0] != M))
        fail(node_.describe() + ": C " + shape_str(cs) + " cannot be broadcast to the output " + shape_str({M, N}));
    }
    if (M * N == 0) return;
    const bool use_c = C && beta_ != 0;
    Tensor b_staged;
    const Tensor* Bp = b_for_call(B, &b_staged);
    if (A.dtype() == DType::Float32 && K > 0) {
      mm::MatmulCall c;
      c.a = A.data<float>();
      c.as = {M, K};
      c.trans_a = ta_;
      c.b = Bp->data<float>();
      c.bs = {K, N};
      c.trans_b = tb_;
      c.b_const = const_b_.contains(B);
      c.y = Y.data<float>();
      c.ys = {M, N};
      c.alpha = alpha_;
      const Shape cs = C ? C->shape() : Shape{};
      const bool c_is_row = use_c && beta_ == 1 && alpha_ == 1 && cs.size() >= 1 && cs.back() == N && N > 1 &&
                            (cs.size() == 1 || cs[0] == 1);
      if (c_is_row) {
        c.bias = C->data<float>();
      } else if (use_c) {
        // Y starts as beta * C, the product is accumulated onto it.
        if (!dry_) fill_beta_c(*C, Y, M, N);
        c.accumulate = true;
      }
      if (fast_.run(c, !dry_)) {
        b_used(B);
        return;
      }
    }
    if (dry_) return;
    b_used(B);
    Tensor b_kept;  // a freed constant B, written back from oneDNN's copy for the reference kernel
    const void* b_raw = reference_b(node_, B, *Bp, K, N, tb_, &b_kept);
    mm::ref_gemm(A.dtype(), A.raw(), b_raw, use_c ? C->raw() : nullptr, use_c ? C->shape() : Shape{}, Y.raw(), M, N, K,
                 ta_, tb_, alpha_, beta_);
  }

 private:
  void fill_beta_c(const Tensor& C, Tensor& Y, int64_t M, int64_t N) {
    const Shape& cs = C.shape();
    const int64_t cm = cs.size() == 2 ? cs[0] : 1, cn = cs.empty() ? 1 : cs.back();
    const float* c = C.data<float>();
    float* y = Y.data<float>();
    const float beta = beta_;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] = beta * c[(cm == 1 ? 0 : m) * cn + (cn == 1 ? 0 : n)];
  }

  Node node_;
  int opset_;
  float alpha_, beta_;
  bool ta_, tb_;
};

}  // namespace

void register_gemm(Registry& r) {
  r.add("Gemm", 1, make_kernel<GemmK>());
}

}  // namespace kiln
