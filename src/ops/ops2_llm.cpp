// RotaryEmbedding (opset 23), Swish (opset 24), SwiGLU.
//
// RotaryEmbedding: input [B, H, S, D] or [B, S, H*D] (3-D needs num_heads). The first
// rotary_embedding_dim (default D) channels of each head are rotated, the rest pass through.
// cos/sin: [max_pos, rd/2] gathered by position_ids [B, S], or [B, S, rd/2] without position_ids.
// Non-interleaved pairs are (x[k], x[k + rd/2]); interleaved pairs are (x[2k], x[2k+1]):
//   out1 = cos * x1 - sin * x2, out2 = sin * x1 + cos * x2.
// Swish(x) = x * sigmoid(alpha * x); SwiGLU (opset 28)(a, b) = Swish(a, alpha) * b, identical shapes.
#include <cmath>

#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class RotaryK : public Kernel {
 public:
  RotaryK(const Node& n, int) : n_(n) {
    interleaved_ = n.attr_int("interleaved", 0) != 0;
    heads_ = n.attr_int("num_heads", 0);
    rd_ = n.attr_int("rotary_embedding_dim", 0);
    if (heads_ < 0 || rd_ < 0) fail(n.describe() + ": num_heads and rotary_embedding_dim must be non-negative");
  }
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!is_float(x.dtype)) unsupported(n_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported (float types only)");
    if (x.has_shape && x.rank() != 3 && x.rank() != 4) fail(n_.describe() + ": input must be 3-D or 4-D, got " + x.str());
    if (x.has_shape && x.rank() == 3 && heads_ <= 0) fail(n_.describe() + ": 3-D input needs the num_heads attribute");
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    const Tensor& Cc = ctx.input(1);
    const Tensor& Sc = ctx.input(2);
    int64_t B, H, S, D;
    const bool three = X.rank() == 3;
    if (three) {
      if (heads_ <= 0 || X.dim(2) % heads_) fail(n_.describe() + ": hidden size " + std::to_string(X.dim(2)) + " not divisible by num_heads");
      B = X.dim(0), S = X.dim(1), H = heads_, D = X.dim(2) / heads_;
    } else if (X.rank() == 4) {
      B = X.dim(0), H = X.dim(1), S = X.dim(2), D = X.dim(3);
    } else {
      fail(n_.describe() + ": input must be 3-D or 4-D, got " + shape_str(X.shape()));
    }
    const int64_t rd = rd_ > 0 ? rd_ : D;
    if (rd > D || rd % 2) fail(n_.describe() + ": rotary_embedding_dim " + std::to_string(rd) + " must be even and <= head size " + std::to_string(D));
    const int64_t half = rd / 2;
    if (Cc.shape() != Sc.shape()) fail(n_.describe() + ": cos_cache and sin_cache shapes differ");
    std::vector<int64_t> pos;
    if (ctx.has_input(3)) {
      pos = to_int64s(ctx.input(3));
      if (ctx.input(3).shape() != Shape{B, S}) fail(n_.describe() + ": position_ids must be [" + std::to_string(B) + ", " + std::to_string(S) + "]");
      if (Cc.rank() != 2 || Cc.dim(1) != half) fail(n_.describe() + ": cos_cache must be [max_pos, " + std::to_string(half) + "], got " + shape_str(Cc.shape()));
      for (auto p : pos)
        if (p < 0 || p >= Cc.dim(0)) fail(n_.describe() + ": position id " + std::to_string(p) + " outside the cache (" + std::to_string(Cc.dim(0)) + ")");
    } else if (Cc.shape() != Shape{B, S, half}) {
      fail(n_.describe() + ": without position_ids cos_cache must be [" + std::to_string(B) + ", " + std::to_string(S) + ", " + std::to_string(half) + "], got " + shape_str(Cc.shape()));
    }
    Tensor xf = cpu::red_as_f32(X), cf = cpu::red_as_f32(Cc), sf = cpu::red_as_f32(Sc);
    Tensor& Y = ctx.output(0);
    Tensor yf(DType::Float32, X.shape());
    const float* x = xf.data<float>();
    float* y = yf.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < S; ++s) {
          const int64_t off = three ? ((b * S + s) * H + h) * D : ((b * H + h) * S + s) * D;
          const int64_t row = pos.empty() ? b * S + s : pos[b * S + s];
          const float* cr = cf.data<float>() + row * half;
          const float* sr = sf.data<float>() + row * half;
          const float* xi = x + off;
          float* yo = y + off;
          for (int64_t k = 0; k < half; ++k) {
            const int64_t i1 = interleaved_ ? 2 * k : k, i2 = interleaved_ ? 2 * k + 1 : k + half;
            const float x1 = xi[i1], x2 = xi[i2];
            yo[i1] = cr[k] * x1 - sr[k] * x2;
            yo[i2] = sr[k] * x1 + cr[k] * x2;
          }
          for (int64_t k = rd; k < D; ++k) yo[k] = xi[k];
        }
    cpu::red_store_f32(yf, Y);
  }

 private:
  Node n_;
  bool interleaved_;
  int64_t heads_, rd_;
};

template <bool GLU>
class SwishK : public Kernel {
 public:
  SwishK(const Node& n, int) : n_(n), alpha_(n.attr_float("alpha", 1.f)) {}
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!is_float(x.dtype)) unsupported(n_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported (float types only)");
    if (!GLU) { ctx.set_output(0, x); return; }
    if (ctx.input_type(1).dtype != x.dtype) fail(n_.describe() + ": inputs must have the same type");
    const TensorType& b = ctx.input_type(1);
    if (x.has_shape && b.has_shape) {
      bool ok = x.rank() == b.rank();
      for (int d = 0; ok && d < x.rank(); ++d)
        if (x.dims[d].known() && b.dims[d].known() && x.dims[d].value != b.dims[d].value) ok = false;
      if (!ok) fail(n_.describe() + ": A and B must have identical shapes (no broadcasting), got " + x.str() + " and " + b.str());
    }
    ctx.set_output(0, x.has_shape ? x : b);
  }
  void run(RunContext& ctx) override {
    const Tensor& A = ctx.input(0);
    Tensor& Y = ctx.output(0);
    Tensor af = cpu::red_as_f32(A), yf(DType::Float32, Y.shape());
    float* y = yf.data<float>();
    auto swish = [&](float v) { return v / (1.f + std::exp(-alpha_ * v)); };
    if (!GLU) {
      for (int64_t i = 0; i < A.numel(); ++i) y[i] = swish(af.data<float>()[i]);
    } else {
      const Tensor& Bt = ctx.input(1);
      if (Bt.shape() != A.shape()) fail(n_.describe() + ": A and B must have identical shapes, got " + shape_str(A.shape()) + " and " + shape_str(Bt.shape()));
      Tensor bf = cpu::red_as_f32(Bt);
      for (int64_t i = 0; i < A.numel(); ++i) y[i] = swish(af.data<float>()[i]) * bf.data<float>()[i];
    }
    cpu::red_store_f32(yf, Y);
  }

 private:
  Node n_;
  float alpha_;
};

}  // namespace

void register_ops2_llm(Registry& r) {
  r.add("RotaryEmbedding", 23, make_kernel<RotaryK>());
  r.add("Swish", 24, make_kernel<SwishK<false>>());
  r.add("SwiGLU", 28, make_kernel<SwishK<true>>());
}

}  // namespace kiln
