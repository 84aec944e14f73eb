// CumProd (opset 26): running product along an axis given as a scalar tensor, with exclusive
// (start from 1, leave out the current element) and reverse (run from the end) attributes.
// float16/bfloat16 are computed in float32.
#include "backends/cpu/red_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class CumProdK : public Kernel {
 public:
  CumProdK(const Node& n, int) : n_(n), exclusive_(n.attr_int("exclusive", 0) != 0), reverse_(n.attr_int("reverse", 0) != 0) {}
  void infer(InferContext& ctx) override {
    const TensorType& x = ctx.input_type(0);
    const TensorType& a = ctx.input_type(1);
    if (a.dtype != DType::Int32 && a.dtype != DType::Int64) fail(n_.describe() + ": axis must be int32 or int64");
    if (a.has_shape && !(a.rank() == 0 || (a.rank() == 1 && a.dims[0].known() && a.dims[0].value == 1)))
      fail(n_.describe() + ": axis must be a scalar, got " + a.str());
    if (const Tensor* v = ctx.input_value(1); v && x.has_shape) normalize_axis(to_int64s(*v)[0], std::max(1, x.rank()), n_);
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Tensor& x = ctx.input(0);
    auto av = to_int64s(ctx.input(1));
    if (av.size() != 1) fail(n_.describe() + ": axis must be a scalar");
    if (x.rank() == 0) fail(n_.describe() + ": input must have rank >= 1");
    const int ax = normalize_axis(av[0], x.rank(), n_);
    int64_t outer = 1, len = x.dim(ax), inner = 1;
    for (int d = 0; d < ax; ++d) outer *= x.dim(d);
    for (int d = ax + 1; d < x.rank(); ++d) inner *= x.dim(d);
    Tensor& y = ctx.output(0);
    auto scan = [&](auto* src, auto* dst) {
      using T = std::remove_const_t<std::remove_pointer_t<decltype(src)>>;
      for (int64_t o = 0; o < outer; ++o) {
        std::vector<T> acc((size_t)inner, T(1));
        for (int64_t k = 0; k < len; ++k) {
          const int64_t j = reverse_ ? len - 1 - k : k;
          const T* s = src + (o * len + j) * inner;
          T* d = dst + (o * len + j) * inner;
          for (int64_t i = 0; i < inner; ++i) {
            if (exclusive_) { d[i] = acc[i]; acc[i] = (T)(acc[i] * s[i]); }
            else { acc[i] = (T)(acc[i] * s[i]); d[i] = acc[i]; }
          }
        }
      }
    };
    if (x.dtype() == DType::Float16 || x.dtype() == DType::BFloat16) {
      Tensor xf = cpu::red_as_f32(x), yf(DType::Float32, y.shape());
      scan(xf.data<float>(), yf.data<float>());
      cpu::red_store_f32(yf, y);
      return;
    }
    visit_numeric(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      scan(x.data<T>(), y.data<T>());
    });
  }

 private:
  Node n_;
  bool exclusive_, reverse_;
};

}  // namespace

void register_cumprod(Registry& r) { r.add("CumProd", 26, make_kernel<CumProdK>()); }

}  // namespace kiln
