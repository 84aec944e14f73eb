// NegativeLogLikelihoodLoss (opset 12/13/22) and SoftmaxCrossEntropyLoss (opset 12/13).
//
// NLL: input [N, C, d1..dk] of log-probabilities, target [N, d1..dk] of class indices, optional
// weight [C]. Element loss = -input[n, t, d...] * w[t] (w = 1 without weights), 0 where
// t == ignore_index. reduction "none" keeps [N, d1..dk]; "sum" adds; "mean" divides the sum by the
// sum of the weights of the non-ignored elements.
// SoftmaxCrossEntropyLoss: log_prob = LogSoftmax(scores, axis 1), then NLL as above; the optional
// second output is log_prob. Arithmetic in double; results stored in the input's float type.
#include <cmath>

#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class LossK : public Kernel {
 public:
  LossK(const Node& n, int opset, bool softmax) : n_(n), softmax_(softmax) {
    reduction_ = n.attr_string("reduction", "mean");
    if (reduction_ != "none" && reduction_ != "sum" && reduction_ != "mean")
      fail(n.describe() + ": reduction must be none, sum or mean, got '" + reduction_ + "'");
    has_ignore_ = n.has_attr("ignore_index");
    ignore_ = n.attr_int("ignore_index", 0);
  }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    const TensorType& t = ctx.input_type(1);
    if (!is_float(x.dtype)) unsupported(n_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported (float types only)");
    if (t.dtype != DType::Int32 && t.dtype != DType::Int64) fail(n_.describe() + ": target must be int32 or int64, got " + dtype_name(t.dtype));
    if (x.has_shape && x.rank() < 2) fail(n_.describe() + ": input must have rank >= 2 ([N, C, ...]), got " + x.str());
    if (x.has_shape && t.has_shape && t.rank() != x.rank() - 1)
      fail(n_.describe() + ": target rank must be input rank - 1, got " + x.str() + " and " + t.str());
    if (reduction_ != "none") {
      ctx.set_output(0, x.dtype, {});
    } else if (t.has_shape) {
      TensorType o = t;
      o.dtype = x.dtype;
      ctx.set_output(0, o);
    } else if (x.has_shape) {
      TensorType o = x;
      o.dims.erase(o.dims.begin() + 1);
      ctx.set_output(0, o);
    } else {
      ctx.set_output(0, unknown_type(x.dtype));
    }
    if (ctx.num_outputs() > 1) ctx.set_output(1, x);
  }

  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    const Tensor& Tg = ctx.input(1);
    if (X.rank() < 2) fail(n_.describe() + ": input must have rank >= 2, got " + shape_str(X.shape()));
    const int64_t N = X.dim(0), C = X.dim(1);
    int64_t inner = 1;
    for (int d = 2; d < X.rank(); ++d) inner *= X.dim(d);
    Shape ts = X.shape();
    ts.erase(ts.begin() + 1);
    if (Tg.shape() != ts) fail(n_.describe() + ": target shape " + shape_str(Tg.shape()) + " does not match input " + shape_str(X.shape()) + " (expected " + shape_str(ts) + ")");
    std::vector<double> w;
    if (ctx.has_input(2)) {
      const Tensor& W = ctx.input(2);
      if (W.rank() != 1 || W.dim(0) != C) fail(n_.describe() + ": weight must have shape [" + std::to_string(C) + "], got " + shape_str(W.shape()));
      w = to_doubles(W);
    }
    const std::vector<int64_t> tgt = to_int64s(Tg);
    Tensor xf = cpu::red_as_f32(X);
    const float* x = xf.data<float>();
    // log-probabilities (SoftmaxCrossEntropyLoss) into lp, else read x directly.
    Tensor lp;
    if (softmax_) {
      lp = Tensor(DType::Float32, X.shape());
      float* l = lp.data<float>();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < inner; ++i) {
          const float* xs = x + n * C * inner + i;
          float* ls = l + n * C * inner + i;
          double m = -INFINITY;
          for (int64_t c = 0; c < C; ++c) m = std::max<double>(m, xs[c * inner]);
          double s = 0;
          for (int64_t c = 0; c < C; ++c) s += std::exp((double)xs[c * inner] - m);
          const double lse = m + std::log(s);
          for (int64_t c = 0; c < C; ++c) ls[c * inner] = (float)((double)xs[c * inner] - lse);
        }
      x = lp.data<float>();
      if (ctx.has_output(1)) cpu::red_store_f32(lp, ctx.output(1));
    }
    const int64_t M = N * inner;
    std::vector<double> loss(M);
    double wsum = 0, lsum = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t e = n * inner + i;
        const int64_t t = tgt[e];
        if (has_ignore_ && t == ignore_) { loss[e] = 0; continue; }
        if (t < 0 || t >= C)
          fail(n_.describe() + ": target value " + std::to_string(t) + " is outside [0, " + std::to_string(C) + ")");
        const double wt = w.empty() ? 1.0 : w[t];
        loss[e] = -(double)x[(n * C + t) * inner + i] * wt;
        wsum += wt;
        lsum += loss[e];
      }
    Tensor& Y = ctx.output(0);
    Tensor out(DType::Float32, Y.shape());
    if (reduction_ == "none") {
      for (int64_t e = 0; e < M; ++e) out.data<float>()[e] = (float)loss[e];
    } else if (reduction_ == "sum") {
      out.data<float>()[0] = (float)lsum;
    } else {
      out.data<float>()[0] = (float)(lsum / wsum);
    }
    cpu::red_store_f32(out, Y);
  }

 private:
  Node n_;
  bool softmax_;
  std::string reduction_;
  bool has_ignore_;
  int64_t ignore_;
};

class NllK : public LossK {
 public:
  NllK(const Node& n, int opset) : LossK(n, opset, false) {}
};
class SceK : public LossK {
 public:
  SceK(const Node& n, int opset) : LossK(n, opset, true) {}
};

}  // namespace

void register_loss(Registry& r) {
  r.add("NegativeLogLikelihoodLoss", 12, make_kernel<NllK>());
  r.add("SoftmaxCrossEntropyLoss", 12, make_kernel<SceK>());
}

}  // namespace kiln
