// DFT (opset 17: axis attribute, default 1; opset 20: axis input, default -2).
// Input [..., n, ..., 1|2] (last dim: real, or real+imag). dft_length (optional input) zero-pads or
// truncates the signal. Forward: X[k] = sum_t x[t] exp(-2 pi i k t / n); onesided keeps
// k <= n/2 (real input). Inverse: x[t] = 1/n sum_k X[k] exp(2 pi i k t / n); inverse + onesided takes
// a half spectrum (default n = 2 (m - 1)), completes it by Hermitian symmetry and gives a real
// output (last dim 1). Naive O(n^2) with a twiddle table, double accumulation.
#include <cmath>
#include <complex>

#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class DftK : public Kernel {
 public:
  DftK(const Node& n, int opset) : n_(n), opset_(opset) {
    inverse_ = n.attr_int("inverse", 0) != 0;
    onesided_ = n.attr_int("onesided", 0) != 0;
    axis_ = n.attr_int("axis", opset >= 20 ? -2 : 1);
  }
  bool axis_from_input(int num_inputs) const { return opset_ >= 20 && num_inputs > 2; }

  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    if (!is_float(x.dtype)) unsupported(n_.describe() + ": input type " + dtype_name(x.dtype) + " is not supported (float types only)");
    if (!x.has_shape) { ctx.set_output(0, unknown_type(x.dtype)); return; }
    const int r = x.rank();
    if (r < 2) fail(n_.describe() + ": input must have rank >= 2 (signal dims + a last dim of 1 or 2), got " + x.str());
    if (x.dims[r - 1].known() && x.dims[r - 1].value != 1 && x.dims[r - 1].value != 2)
      fail(n_.describe() + ": last input dim must be 1 (real) or 2 (complex), got " + x.str());
    TensorType y = x;
    y.dims[r - 1] = Dim::of(inverse_ && onesided_ ? 1 : 2);
    int64_t axis = axis_;
    bool axis_known = true;
    if (axis_from_input(ctx.num_inputs()) && ctx.has_input(2)) {
      if (const Tensor* a = ctx.input_value(2)) axis = to_int64s(*a).at(0);
      else axis_known = false;
    }
    if (!axis_known) {
      for (int d = 0; d < r - 1; ++d) y.dims[d] = Dim();  // cannot tell which dim changes
      ctx.set_output(0, y);
      return;
    }
    const int ax = norm_axis(axis, r);
    Dim len = x.dims[ax];
    if (ctx.has_input(1)) {
      const Tensor* l = ctx.input_value(1);
      len = l ? Dim::of(to_int64s(*l).at(0)) : Dim();
    } else if (inverse_ && onesided_) {
      len = len.known() ? Dim::of(2 * (len.value - 1)) : Dim();
    }
    if (!inverse_ && onesided_) y.dims[ax] = len.known() ? Dim::of(len.value / 2 + 1) : Dim();
    else y.dims[ax] = len;
    ctx.set_output(0, y);
  }

  int norm_axis(int64_t axis, int r) const {
    // Signal axes are [0, r-2]; negative values count from the back of the full rank.
    int64_t a = axis < 0 ? axis + r : axis;
    if (a < 0 || a > r - 2) fail(n_.describe() + ": axis " + std::to_string(axis) + " is not a signal axis for rank " + std::to_string(r));
    return (int)a;
  }

  void run(RunContext& ctx) override {
    const Tensor& X = ctx.input(0);
    const int r = X.rank();
    if (r < 2 || (X.dim(-1) != 1 && X.dim(-1) != 2)) fail(n_.describe() + ": input must be [..., 1|2], got " + shape_str(X.shape()));
    int64_t axis = axis_;
    if (axis_from_input(ctx.num_inputs()) && ctx.has_input(2)) axis = to_int64s(ctx.input(2)).at(0);
    const int ax = norm_axis(axis, r);
    const int64_t m = X.dim(ax);  // input length along the axis
    int64_t n = inverse_ && onesided_ ? 2 * (m - 1) : m;
    if (ctx.has_input(1)) {
      n = to_int64s(ctx.input(1)).at(0);
      if (n <= 0) fail(n_.describe() + ": dft_length must be positive, got " + std::to_string(n));
    }
    if (n <= 0) fail(n_.describe() + ": signal length must be positive");
    const bool cin = X.dim(-1) == 2;
    const int64_t out_len = (!inverse_ && onesided_) ? n / 2 + 1 : n;
    const int cout = inverse_ && onesided_ ? 1 : 2;
    Shape ys = X.shape();
    ys[ax] = out_len;
    ys[r - 1] = cout;
    Tensor& Y = ctx.output(0);
    if (Y.shape() != ys) fail(n_.describe() + ": output shape " + shape_str(Y.shape()) + " differs from computed " + shape_str(ys));
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; ++d) outer *= X.dim(d);
    for (int d = ax + 1; d < r - 1; ++d) inner *= X.dim(d);
    Tensor xf = cpu::red_as_f32(X);
    Tensor yf(DType::Float32, ys);
    const float* x = xf.data<float>();
    float* y = yf.data<float>();
    const int cx = cin ? 2 : 1;
    std::vector<std::complex<double>> tw(n), sig(n);
    const double sign = inverse_ ? 1.0 : -1.0;
    for (int64_t k = 0; k < n; ++k) tw[k] = std::polar(1.0, sign * 2.0 * M_PI * (double)k / (double)n);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        // Gather the (padded / truncated, possibly Hermitian-completed) signal of length n.
        std::fill(sig.begin(), sig.end(), std::complex<double>(0, 0));
        auto in_at = [&](int64_t t) {
          const float* p = x + ((o * m + t) * inner + i) * cx;
          return std::complex<double>(p[0], cin ? p[1] : 0.0);
        };
        if (inverse_ && onesided_) {
          for (int64_t k = 0; k < n; ++k) {
            if (k < m) sig[k] = in_at(k);
            else if (n - k < m) sig[k] = std::conj(in_at(n - k));
          }
        } else {
          for (int64_t t = 0; t < std::min(m, n); ++t) sig[t] = in_at(t);
        }
        for (int64_t k = 0; k < out_len; ++k) {
          std::complex<double> acc(0, 0);
          for (int64_t t = 0; t < n; ++t) acc += sig[t] * tw[(k * t) % n];
          if (inverse_) acc /= (double)n;
          float* q = y + ((o * out_len + k) * inner + i) * cout;
          q[0] = (float)acc.real();
          if (cout == 2) q[1] = (float)acc.imag();
        }
      }
    cpu::red_store_f32(yf, Y);
  }

 private:
  Node n_;
  int opset_;
  bool inverse_, onesided_;
  int64_t axis_;
};

}  // namespace

void register_dft(Registry& r) {
  r.add("DFT", 17, make_kernel<DftK>());
  r.add("DFT", 20, make_kernel<DftK>());
}

}  // namespace kiln
