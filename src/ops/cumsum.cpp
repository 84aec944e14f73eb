// CumSum with exclusive / reverse, along an axis given as a scalar tensor.
#include "backends/cpu/data_util.h"
#include "ops/common.h"

namespace kiln {
namespace {

class CumSumK : public Kernel {
 public:
  CumSumK(const Node& n, int) : exclusive_(n.attr_int("exclusive", 0) != 0), reverse_(n.attr_int("reverse", 0) != 0) {}
  void infer(InferContext& ctx) override {
    const Node& n = ctx.node();
    const TensorType& x = ctx.input_type(0);
    const TensorType& a = ctx.input_type(1);
    if (a.dtype != DType::Int32 && a.dtype != DType::Int64) fail(n.describe() + ": axis must be int32 or int64");
    if (a.has_shape && !(a.rank() == 0 || (a.rank() == 1 && a.dims[0].known() && a.dims[0].value == 1)))
      fail(n.describe() + ": axis must be a scalar, got " + a.str());
    if (auto v = data::known_ints(ctx, 1); v && x.has_shape) normalize_axis((*v)[0], x.rank(), n);
    ctx.set_output(0, x);
  }
  void run(RunContext& ctx) override {
    const Node& n = ctx.node();
    const Tensor& x = ctx.input(0);
    auto av = to_int64s(ctx.input(1));
    if (av.size() != 1) fail(n.describe() + ": axis must be a scalar");
    const int ax = normalize_axis(av[0], x.rank(), n);
    int64_t outer = 1, len = x.shape()[ax], inner = 1;
    for (int d = 0; d < ax; ++d) outer *= x.shape()[d];
    for (int d = ax + 1; d < x.rank(); ++d) inner *= x.shape()[d];
    Tensor& y = ctx.output(0);
    visit_numeric(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* src = x.data<T>();
      T* dst = y.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() > (1 << 16) && outer > 1)
      for (int64_t o = 0; o < outer; ++o) {
        // Walk the axis once, keeping a running sum per inner position (contiguous rows).
        std::vector<T> acc((size_t)inner, T(0));
        for (int64_t k = 0; k < len; ++k) {
          const int64_t j = reverse_ ? len - 1 - k : k;
          const T* s = src + (o * len + j) * inner;
          T* d = dst + (o * len + j) * inner;
          if (exclusive_) {
            for (int64_t i = 0; i < inner; ++i) { d[i] = acc[i]; acc[i] = (T)(acc[i] + s[i]); }
          } else {
            for (int64_t i = 0; i < inner; ++i) { acc[i] = (T)(acc[i] + s[i]); d[i] = acc[i]; }
          }
        }
      }
    });
  }

 private:
  bool exclusive_, reverse_;
};

}  // namespace

void register_cumsum(Registry& r) { r.add("CumSum", 11, make_kernel<CumSumK>()); }

}  // namespace kiln
